"""`wsss tune`: reviewed masks choose the pseudo-labelling settings, a change only where its interval is above zero."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from wsss.config import load_config
from wsss.data.images import read_mask
from wsss.data.index import read_dataset_info, read_eval_index
from wsss.errors import ConfigError
from wsss.export.review_import import import_review
from wsss.tune import (
    Candidate,
    Scored,
    adopted,
    candidates,
    compare,
    reviewed_items,
    score_all,
    write_recipe,
)


@pytest.fixture()
def reviewed_run(full_run, tmp_path: Path) -> tuple[Path, object]:
    """A copy of the tiny full run whose defective training images a simulated reviewer corrected."""
    run_dir, cfg = full_run
    dst = tmp_path / "run"
    for stage in ("prepare", "cam", "pseudo-labels", "retrain"):
        shutil.copytree(run_dir / stage, dst / stage)
    index = dst / "prepare" / "index.csv"
    info = read_dataset_info(index)
    folder = tmp_path / "review"
    folder.mkdir()
    for r in [r for r in read_eval_index(index, split="train") if r.labels][:4]:
        cv2.imwrite(str(folder / f"{r.id}.png"), read_mask(r.mask, threshold=info.mask_threshold).astype(np.uint8))
    import_review("png", folder, dst)
    return dst, cfg


def test_tune_measures_candidates_on_the_reviewed_masks_only(reviewed_run):
    run, cfg = reviewed_run
    items, empty, rejected = reviewed_items(run, cfg, with_retrain=True)
    assert len(items) == 4 and empty == 0 and rejected == 0
    assert all(it.truth.any() and it.probs is not None and it.probs.shape[1:] == it.image.shape[:2] for it in items)
    pseudo, retrain = candidates(cfg, with_retrain=True)
    own = dict(pseudo[0].settings)
    assert own["pseudo.bg_prior"] == cfg.pseudo.bg_prior and len(pseudo) >= 30 and len(set(pseudo)) == len(pseudo)
    assert dict(retrain[0].settings)["retrain.fuse_weight"] == cfg.retrain.fuse_weight
    ranked = compare(score_all(cfg, items, pseudo[:3], 1, lambda *_: None))
    assert ranked[0].candidate == pseudo[0] and ranked[0].gain == 0.0
    assert all(0 <= s.miou <= 1 and s.low <= s.gain <= s.high for s in ranked)
    again = compare(score_all(cfg, items, retrain[:2], 2, lambda *_: None))  # a process pool gives the same IoUs
    alone = compare(score_all(cfg, items, retrain[:2], 1, lambda *_: None))
    assert [list(s.ious) for s in again] == [list(s.ious) for s in alone]


def test_tune_refuses_a_run_without_reviewed_masks(full_run, tmp_path: Path):
    run_dir, cfg = full_run
    with pytest.raises(ConfigError, match="no reviewed masks"):
        reviewed_items(run_dir, cfg, with_retrain=False)


def _scored(rule: str, value: float, ious) -> Scored:
    return Scored(Candidate(rule, (("pseudo.bg_prior", value), ("pseudo.margin", 0))), np.asarray(ious, float))


def test_a_change_is_adopted_only_when_its_interval_is_above_zero():
    base = [0.2, 0.4, 0.5, 0.3, 0.6, 0.1, 0.7, 0.4]
    steady = compare([_scored("pseudo", 0.3, base), _scored("pseudo", 0.4, [v + 0.05 for v in base])])
    assert adopted(steady) is steady[1] and steady[1].low > 0
    noisy = [v + (0.3 if i % 2 else -0.28) for i, v in enumerate(base)]
    coin = compare([_scored("pseudo", 0.3, base), _scored("pseudo", 0.5, noisy)])
    assert coin[1].gain > 0 and coin[1].low < 0 and adopted(coin) is None


def test_a_command_line_path_in_the_tuned_recipe_is_the_one_the_command_line_meant(tmp_path: Path, monkeypatch):
    """A relative path given with --set is relative to where the command runs, not to the recipe's folder: a review
    loop run as `wsss demo` from a fresh folder (run folder runs/demo) names its reviewed masks so."""
    source = tmp_path / "runs" / "demo" / "recipe.yaml"
    source.parent.mkdir(parents=True)
    source.write_text("run: {name: demo}\ndataset: {kind: synthetic}\n")
    monkeypatch.chdir(tmp_path)
    out = write_recipe(source, tmp_path / "tuned.yaml", [], 4, ["retrain.reviewed=runs/demo/reviewed"])
    written = yaml.safe_load(out.read_text())["retrain"]["reviewed"]
    assert written == str((tmp_path / "runs" / "demo" / "reviewed").resolve())


def test_the_tuned_recipe_changes_only_the_adopted_settings_with_their_figures(tmp_path: Path):
    source = tmp_path / "line" / "recipe.yaml"
    source.parent.mkdir()
    (tmp_path / "data").mkdir()
    source.write_text(
        "run: {name: line}\ndataset: {kind: folder, root: ../data}\npseudo: {bg_prior: 0.3}\n"
        "classifier: {backbone: {weights: imagenet}}\n"  # a registered weights name, not a path
    )
    base = [0.2, 0.4, 0.5, 0.3]
    ranked = compare([_scored("pseudo", 0.3, base), _scored("pseudo", 0.4, [v + 0.1 for v in base])])
    out = write_recipe(
        source, tmp_path / "elsewhere" / "tuned.yaml", [(ranked[0], ranked[1])], 4, ["prepare.split.seed=3"]
    )
    text = out.read_text()
    line = next(x for x in text.splitlines() if "bg_prior:" in x)  # the source's own flow-style line, edited
    assert line.startswith("pseudo: {bg_prior: 0.4}  # wsss tune: 0.3 -> 0.4, 35.0% -> 45.0% mIoU_def on 4 reviewed")
    assert "margin" not in text  # unchanged settings are not written
    data = yaml.safe_load(text)
    assert data["dataset"]["root"] == str((tmp_path / "data").resolve()) and data["prepare"]["split"]["seed"] == 3
    cfg = load_config(out)
    assert cfg.pseudo.bg_prior == 0.4 and cfg.prepare.split.seed == 3 and cfg.run.name == "line"
    assert data["classifier"]["backbone"]["weights"] == "imagenet" == cfg.classifier.backbone.weights


def test_the_tuned_recipe_keeps_the_source_recipes_comments_and_order(tmp_path: Path):
    """A recipe `wsss init` wrote carries a figure beside each setting: tuning changes the lines it adopts and adds
    the keys it sets, and every other line stays as it was."""
    source = Path(__file__).resolve().parents[1] / "configs" / "ksdd.yaml"
    text = source.read_text()
    local = tmp_path / "recipe.yaml"
    local.write_text(text)  # in another folder: its relative dataset root is written resolved
    base = [0.2, 0.4, 0.5, 0.3]
    own_prior = load_config(source).pseudo.bg_prior
    ranked = compare([_scored("pseudo", own_prior, base), _scored("pseudo", 0.45, [v + 0.1 for v in base])])
    reviewed = tmp_path / "runs" / "reviewed"
    out = write_recipe(local, tmp_path / "tuned.yaml", [(ranked[0], ranked[1])], 4, [f"segmenter.reviewed={reviewed}"])
    new = out.read_text().splitlines()
    old = text.splitlines()
    # every line of the source is still there but the adopted one and the resolved root; the comments above all
    changed = [line.split(":")[0].strip() for line in old if line not in new]
    assert changed == ["root", "bg_prior"], changed
    assert sum(line.lstrip().startswith("#") for line in new) > sum(line.lstrip().startswith("#") for line in old)
    assert [line for line in new if line not in old and not line.startswith("# ")] == [
        f"  root: {load_config(local).dataset.root}",
        next(line for line in new if "bg_prior: 0.45" in line),
        next(line for line in new if line.strip().startswith("reviewed:")),
    ]
    cfg = load_config(out)
    assert cfg.pseudo.bg_prior == 0.45 and cfg.segmenter.reviewed == str(reviewed)
    original = load_config(source)
    assert cfg.segmenter.input_size == original.segmenter.input_size and cfg.cam == original.cam
    again = write_recipe(out, tmp_path / "again.yaml", [], 4).read_text().splitlines()  # tuned twice: one header
    assert again[1:] == new[1:] and again[0].startswith("# tuned.yaml with the settings `wsss tune` chose")


def test_recipe_text_edits_read_back_as_the_changed_recipe():
    from wsss.config.edit import edit_recipe_text

    text = (
        "# a recipe\nrun: {name: line}  # the run folder\npseudo:\n  bg_prior: 0.3  # measured\n"
        "  crf: {bilateral_sxy: auto, bilateral_compat: 40}  # -> 50\n\ncam:\n  scales:\n  - 1.0\n  lift: true\n"
    )
    changes = {
        "pseudo.bg_prior": 0.4,  # a block key: its line, the note in place of its comment
        "pseudo.crf.bilateral_compat": 30,  # inside a flow mapping: that line, its comment kept
        "cam.scales": [1.0, 0.5],  # a block list: one flow line
        "cam.tile_size": [0, 0],  # a key the section lacks
        "retrain.fuse_weight": 0.7,  # a section the recipe lacks
        "run.name": "a #b: c",  # a value that needs quoting
        "dataset.root": "/data/line3...",  # a scalar ending as YAML's document end marker does
    }
    out = edit_recipe_text(text, changes, {"pseudo.bg_prior": "tuned", "pseudo.crf.bilateral_compat": "tuned too"})
    assert out is not None
    data = yaml.safe_load(out)
    assert data["pseudo"] == {"bg_prior": 0.4, "crf": {"bilateral_sxy": "auto", "bilateral_compat": 30}}
    assert data["cam"] == {"scales": [1.0, 0.5], "lift": True, "tile_size": [0, 0]}
    assert data["retrain"] == {"fuse_weight": 0.7} and data["run"] == {"name": "a #b: c"}
    assert data["dataset"] == {"root": "/data/line3..."}
    lines = out.splitlines()
    assert lines[0] == "# a recipe" and "  bg_prior: 0.4  # tuned" in lines
    assert "  crf: {bilateral_sxy: auto, bilateral_compat: 30}  # -> 50; tuned too" in lines
    # YAML the line editor does not follow is not edited: the caller writes the recipe from its data
    assert edit_recipe_text("pseudo: {bg_prior: 0.3,\n  margin: 0.1}\n", {"pseudo.bg_prior": 0.4}) is None
