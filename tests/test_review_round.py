"""`wsss review-round`: the segmenter fine-tuned on reviewed masks, evaluated before and after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST

from wsss.cli import cli
from wsss.config import load_config
from wsss.data.images import read_mask
from wsss.data.index import read_dataset_info, read_eval_index, read_train_index
from wsss.errors import ConfigError, StageError
from wsss.review_round import review_round
from wsss.train.sampling import epoch_steps


@pytest.fixture
def round_run(full_run, tmp_path: Path) -> Path:
    run_dir, _ = full_run
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns(".locks"))
    return dst


def import_truth(run: Path, tmp_path: Path, n: int = 3) -> list[str]:
    """A reviewer's masks: the ground truth of ``n`` defective training images, imported as png."""
    index = run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    folder = tmp_path / "corrected"
    folder.mkdir()
    ids = []
    for r in read_eval_index(index, split="train"):
        if r.labels and r.mask is not None and len(ids) < n:
            cv2.imwrite(str(folder / f"{r.id}.png"), read_mask(r.mask, threshold=info.mask_threshold).astype(np.uint8))
            ids.append(r.id)
    result = CliRunner().invoke(cli, ["import-review", "--format", "png", str(folder), "--run", str(run)])
    assert result.exit_code == 0, result.output
    return ids


def test_a_round_fine_tunes_from_the_reviewed_segmenter_and_reports_before_and_after(round_run: Path, tmp_path):
    import_truth(round_run, tmp_path)
    old = (round_run / "train-segmenter" / "segmenter.safetensors").read_bytes()
    lines: list[str] = []
    report = review_round(None, round_run, FAST, epochs=1, echo=lines.append)
    folder = round_run / "review-rounds" / "round-1"
    assert (folder / "before" / "segmenter.safetensors").read_bytes() == old
    saved = json.loads((folder / "report.json").read_text())
    unchanged = (round_run / "train-segmenter" / "segmenter.safetensors").read_bytes() == old
    assert unchanged == (report["kept_epoch"] == -1)  # the start is kept only when no epoch validated better
    assert unchanged == any("kept unchanged" in ln for ln in lines)
    assert saved == report and report["reviewed_masks"] == 3 and report["epochs"] == 1
    assert set(report["before"]) == set(report["after"]) == {"ap", "miou_def", "seg_recall_0_5", "pixel_ap"}
    assert all(v is None or 0 <= v <= 1 for v in [*report["before"].values(), *report["after"].values()])
    assert any(line.startswith("| before |") for line in "\n".join(lines).splitlines())
    manifest = json.loads((round_run / "train-segmenter" / "manifest.json").read_text())
    assert manifest["status"] == "done"
    seg = manifest["config"]["segmenter"]
    assert seg["init_from"] == str(folder / "before") and seg["reviewed"] == str(round_run / "reviewed")
    review_round(None, round_run, FAST, epochs=1, echo=lambda *_: None)  # the next round numbers itself
    assert (round_run / "review-rounds" / "round-2" / "report.json").is_file()


def test_a_round_trains_the_recipes_floor_of_optimizer_steps(round_run: Path, tmp_path):
    """Three epochs of a small set are few steps for an optimizer restarted from trained weights: a round keeps the
    recipe's `segmenter.min_steps`, as the training does (the demo's round: 72.32% without it, 82.25% with it)."""
    import_truth(round_run, tmp_path)
    n_train = len(read_train_index(round_run / "prepare" / "index.csv", "train"))
    steps = epoch_steps(n_train, load_config(None, FAST).segmenter.batch_size)
    report = review_round(None, round_run, [*FAST, f"segmenter.min_steps={2 * steps + 1}"], 1, echo=lambda *_: None)
    meta = json.loads((round_run / "train-segmenter" / "segmenter.json").read_text())
    rows = (round_run / "train-segmenter" / "metrics.csv").read_text().splitlines()[1:]
    assert report["epochs"] == 1 and meta["epochs"] == 3 and len(rows) == 3


def test_a_round_needs_reviewed_masks_and_a_finished_segmenter(round_run: Path, tmp_path):
    with pytest.raises(ConfigError, match="no reviewed masks"):
        review_round(None, round_run, FAST, epochs=1)
    (round_run / "reviewed" / "masks").mkdir(parents=True)
    (round_run / "reviewed" / "rejected.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match=r"2 rejected image\(s\) only"):  # nothing to judge the round by
        review_round(None, round_run, FAST, epochs=1)
    shutil.rmtree(round_run / "reviewed")
    shutil.rmtree(round_run / "train-segmenter")
    import_truth(round_run, tmp_path)
    with pytest.raises(StageError, match="no finished train-segmenter"):
        review_round(None, round_run, FAST, epochs=1)
    result = CliRunner().invoke(cli, ["review-round", "--run-dir", str(round_run), "--epochs", "0", "-c", "x.yaml"])
    assert result.exit_code == 2 and "--epochs" in result.output


def test_init_from_refuses_a_segmenter_of_other_classes(round_run: Path, tmp_path):
    from wsss.config import load_config
    from wsss.runs import Run

    other = tmp_path / "other"
    shutil.copytree(round_run / "train-segmenter", other)
    meta = json.loads((other / "segmenter.json").read_text())
    (other / "segmenter.json").write_text(json.dumps(meta | {"classes": ["scratch", "pit"]}))
    cfg = load_config(None, [*FAST, f"segmenter.init_from={other}"])
    with pytest.raises(ConfigError, match=r"segmenter\.init_from.*classes"):
        Run(round_run, cfg, echo=lambda *_: None).run_stage("train-segmenter", force=True)


def test_the_review_loop_tunes_reruns_with_the_reviewed_masks_and_fine_tunes(round_run: Path, tmp_path):
    """`wsss review-round --tune`: tune on the reviewed masks, a tuned recipe carrying them, the retrain round re-run
    with them, then the round fine-tunes the segmenter from its trained weights; both evaluations printed."""
    import yaml

    import_truth(round_run, tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"run": {"name": "tiny"}}))
    fast = [s for s in FAST if not s.startswith("pseudo.workers")] + ["pseudo.workers=1"]
    r = CliRunner().invoke(
        cli,
        ["review-round", "--tune", "-c", str(recipe), "--run-dir", str(round_run), "--epochs", "1"]
        + sum((["--set", s] for s in fast), []),
    )
    assert r.exit_code == 0, r.output
    tuned = yaml.safe_load((round_run / "review-rounds" / "tuned.yaml").read_text())
    reviewed = str(round_run / "reviewed")
    assert tuned["retrain"]["reviewed"] == reviewed and tuned["segmenter"]["reviewed"] == reviewed
    for stage, section in (("retrain", "retrain"), ("train-segmenter", "segmenter")):
        manifest = json.loads((round_run / stage / "manifest.json").read_text())
        assert manifest["config"][section]["reviewed"] == reviewed, stage
    assert "re-running" in r.output and (round_run / "review-rounds" / "round-1" / "report.json").is_file()
    table = r.output[r.output.index("review loop (test split)") :]
    assert all(f"| {row} |" in table for row in ("as trained", "after the loop"))
    seg = json.loads((round_run / "train-segmenter" / "manifest.json").read_text())["config"]["segmenter"]
    assert seg["init_from"] == str(round_run / "review-rounds" / "round-1" / "before")  # fine-tuned, not re-trained
    assert "re-running" in r.output and "train-segmenter" not in r.output.split("re-running", 1)[1].splitlines()[0]


def test_the_stage_says_a_round_with_an_empty_review_keeps_its_segmenter(round_run: Path, capsys):
    """The benchmark's control: `train-segmenter` fine-tuning from the run's segmenter with an empty review keeps the
    weights untrained, and the stage says so instead of claiming they validated best."""
    from wsss.review_round import fine_tune_settings
    from wsss.runs import Run

    before = round_run / "before"
    shutil.copytree(round_run / "train-segmenter", before)
    (round_run / "reviewed" / "masks").mkdir(parents=True)
    sets = [*FAST, f"segmenter.reviewed={round_run / 'reviewed'}", *fine_tune_settings(before, 1)]
    Run(round_run, load_config(None, sets), echo=lambda *_: None).run_stage("train-segmenter", force=True)
    out = capsys.readouterr().out
    assert "the weights it started from are kept, untrained" in out and "validate best" not in out
    new = (round_run / "train-segmenter" / "segmenter.safetensors").read_bytes()
    assert new == (before / "segmenter.safetensors").read_bytes()
