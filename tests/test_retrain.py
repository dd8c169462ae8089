"""The pseudo-mask pipeline end to end on tiny synthetic data: cam -> pseudo-labels -> retrain (the `full_run`
fixture of conftest.py runs the whole method once)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from wsss.artifacts.masks import read_pseudo_mask
from wsss.config import load_config
from wsss.data.images import read_image
from wsss.data.index import read_train_index
from wsss.errors import ConfigError
from wsss.stages import get_stage


def test_full_pipeline_writes_valid_masks_and_evaluates(full_run):
    run_dir, cfg = full_run
    rows = read_train_index(run_dir / "prepare" / "index.csv")
    with open(run_dir / "cam" / "scores.csv") as f:
        scores = {r["id"]: float(r["score"]) for r in csv.DictReader(f)}
    for stage in ("pseudo-labels", "retrain"):
        out = run_dir / stage
        assert json.loads((out / "manifest.json").read_text())["status"] == "done"
        with open(out / "confidence.csv") as f:
            conf = list(csv.DictReader(f))
        assert [r["id"] for r in conf] == [r.id for r in rows]
        assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in conf)
        for r in rows:
            mask = read_pseudo_mask(out / "masks" / f"{r.id}.png", read_image(r.path).shape[:2], 1)
            assert set(np.unique(mask)) <= {0, 1, 255}
            if scores[r.id] < cfg.cam.score_threshold:
                assert not mask.any(), r.id  # called OK: empty mask
    retrain = run_dir / "retrain"
    assert (retrain / "segmenter.safetensors").is_file() and not list(retrain.glob("round*"))
    assert (retrain / "scores.csv").read_text() == (run_dir / "cam" / "scores.csv").read_text()
    manifest = json.loads((run_dir / "evaluate" / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"prepare", "train-segmenter"}  # the full pipeline evaluates the segmenter
    assert (run_dir / "evaluate" / "report.md").is_file()


def test_pipeline_settings_beat_the_recipe_and_lose_to_the_command_line():
    cfg = load_config(None, ["run.pipeline=cam-threshold"])
    assert cfg.cam.iem.enabled is False and cfg.pseudo.method == "threshold" and cfg.pseudo.confidence == 0.0
    cfg = load_config(None, ["run.pipeline=cam-threshold", "pseudo.method=crf"])
    assert cfg.pseudo.method == "crf" and cfg.cam.iem.enabled is False
    assert load_config(None, ["run.pipeline=cam-crf"]).pseudo.method == "crf"
    assert load_config(None, []).cam.iem.enabled is True


def test_retrain_with_injected_defects_runs_two_rounds(full_run, tmp_path, capsys):
    """`retrain.inject.enabled=true`: round 2 picks its paste sources by round 1's confidence, and the stage finishes
    (in a copy of the run, so the shared one is untouched)."""
    import shutil

    from conftest import FAST

    from wsss.runs import Run

    run_dir, _ = full_run
    for stage in ("prepare", "cam", "pseudo-labels"):
        shutil.copytree(run_dir / stage, tmp_path / stage)
    cfg = load_config(None, [*FAST, "retrain.inject.enabled=true", "retrain.epochs=1"])
    out = Run(tmp_path, cfg, echo=lambda *_: None).run_stage("retrain")
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    with open(out / "confidence.csv") as f:
        assert len(list(csv.DictReader(f))) == 24
    assert not list(out.glob("round*"))
    assert capsys.readouterr().out.count("pasted region(s) and procedural defects") == 2  # both rounds found sources


def test_retrain_bg_prior_and_margin_replace_the_pseudo_settings_for_the_fused_map_only(
    full_run, tmp_path, monkeypatch
):
    """`retrain.bg_prior` and `retrain.margin` reach the labelling of the fused map; null keeps `pseudo.bg_prior` and
    `pseudo.margin` (in copies of the run). The round's segmenter ignores the margin its input masks were drawn with:
    the pseudo-labels stage's (0 here), not the round's own."""
    import shutil

    from conftest import FAST

    import wsss.stages.retrain
    import wsss.train.segmenter
    from wsss.runs import Run

    class Labelled(Exception):
        pass

    seen: list[set[tuple[float, int]]] = []

    def capture(tasks, workers, echo):
        seen.append({(t.cfg.bg_prior, t.cfg.margin) for t in tasks})
        raise Labelled

    monkeypatch.setattr(wsss.stages.retrain, "label_all", capture)
    trained_with: list[int] = []
    init = wsss.train.segmenter.SegmenterTrainer.__init__

    def record(self, *args, **kwargs):
        trained_with.append(kwargs.get("margin", 0))
        init(self, *args, **kwargs)

    monkeypatch.setattr(wsss.train.segmenter.SegmenterTrainer, "__init__", record)
    run_dir, _ = full_run
    for k, overrides in enumerate((["retrain.bg_prior=0.65", "retrain.margin=3"], [])):
        copy = tmp_path / str(k)
        for stage in ("prepare", "cam", "pseudo-labels"):
            shutil.copytree(run_dir / stage, copy / stage)
        cfg = load_config(None, [*FAST, "retrain.epochs=1", *overrides])
        with pytest.raises(Labelled):
            Run(copy, cfg, echo=lambda *_: None).run_stage("retrain")
    assert seen == [{(0.65, 3)}, {(cfg.pseudo.bg_prior, cfg.pseudo.margin)}]
    assert cfg.pseudo.bg_prior != 0.65 and cfg.pseudo.margin != 3
    assert trained_with == [0, 0]
    with pytest.raises(ConfigError, match=r"retrain\.bg_prior"):
        load_config(None, ["retrain.bg_prior=1"])
    with pytest.raises(ConfigError, match=r"retrain\.margin"):
        load_config(None, ["retrain.margin=-2"])


def test_mask_margin_names_the_margin_each_mask_stage_drew():
    from wsss.stages import mask_margin

    cfg = load_config(None, ["pseudo.margin=2"])
    assert [mask_margin(cfg, s) for s in ("pseudo-labels", "retrain", "train-segmenter")] == [2, 2, 0]
    cfg = load_config(None, ["retrain.margin=3"])
    assert [mask_margin(cfg, s) for s in ("pseudo-labels", "retrain")] == [0, 3]


def test_reviewed_masks_flow_into_the_retrain_round(full_run, tmp_path):
    """`retrain.reviewed`: a person's masks train the round and are its masks of those images (never relabelled),
    so a re-run of the pipeline carries them to the segmenter; changing the folder makes the round stale."""
    import shutil

    import cv2
    import numpy as np
    from conftest import FAST

    from wsss.data.index import read_train_index
    from wsss.export.review_import import import_review
    from wsss.runs import Run

    run_dir, _ = full_run
    for stage in ("prepare", "cam", "pseudo-labels"):
        shutil.copytree(run_dir / stage, tmp_path / stage)
    train = [r for r in read_train_index(tmp_path / "prepare" / "index.csv", "train") if r.labels][:2]
    folder = tmp_path / "corrected"
    folder.mkdir()
    for r in train:  # a reviewer's masks, deliberately unlike any pseudo-mask: a square in the corner
        mask = np.zeros(cv2.imread(str(r.path), cv2.IMREAD_GRAYSCALE).shape, np.uint8)
        mask[:9, :9] = 1
        cv2.imwrite(str(folder / f"{r.id}.png"), mask)
    import_review("png", folder, tmp_path)
    cfg = load_config(None, [*FAST, "retrain.epochs=1", f"retrain.reviewed={tmp_path / 'reviewed'}"])
    run = Run(tmp_path, cfg, echo=lambda *_: None)
    out = run.run_stage("retrain")
    for r in train:
        got = cv2.imread(str(out / "masks" / f"{r.id}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(
            got, cv2.imread(str(tmp_path / "reviewed" / "masks" / f"{r.id}.png"), cv2.IMREAD_UNCHANGED)
        )
    with open(out / "confidence.csv") as f:
        assert {row["id"]: float(row["confidence"]) for row in csv.DictReader(f)}[train[0].id] == 1.0
    assert run.status(get_stage("retrain")) == "done"
    import_review("png", folder, tmp_path)  # the reviewed folder changed: the round is stale
    assert run.status(get_stage("retrain")) == "stale"
