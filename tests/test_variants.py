"""Generated data of the kinds a team brings (colour, wide strips, large images, square textures, faint regions):
what each data set holds, the recipe `wsss init` writes for it, and that recipe's pipeline run on a colour strip."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from wsss.cli import cli
from wsss.config import load_config
from wsss.data.variants import VARIANTS, generate, generate_sample, get_variant, small
from wsss.errors import ConfigError
from wsss.runs import Run


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_data_set_holds_what_it_says(tmp_path: Path, name: str):
    v = small(VARIANTS[name], n=3)
    assert v.height / v.width == pytest.approx(VARIANTS[name].height / VARIANTS[name].width, rel=0.05)
    rows = list(csv.DictReader(generate(tmp_path, v).open()))
    assert len(rows) == 6 and {r["label"] for r in rows[:3]} == {"ok"}
    for r in rows:
        img = cv2.imread(str(tmp_path / r["path"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / r["mask"]), cv2.IMREAD_UNCHANGED)
        assert img.shape == ((v.height, v.width, 3) if v.colour else (v.height, v.width))
        assert mask.shape == (v.height, v.width) and set(np.unique(mask)) <= {0, 255}
        assert mask.any() == (r["label"] != "ok") and (r["label"] == "ok" or r["label"] in v.defects)
        if r["label"] != "ok":  # the defect lies within one window of the variant's size
            ys, xs = np.nonzero(mask)
            assert np.ptp(ys) < v.window and np.ptp(xs) < v.window
    if v.colour:  # tinted: the channels differ
        img = cv2.imread(str(tmp_path / rows[0]["path"]))
        assert np.abs(img[..., 0].astype(int) - img[..., 2]).mean() > 3


def test_generation_is_deterministic_and_unknown_names_are_refused():
    v = small(VARIANTS["faint"])
    a, b = generate_sample([0, 1, 2], v, "stain"), generate_sample([0, 1, 2], v, "stain")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], generate_sample([0, 1, 3], v, "stain")[0])
    with pytest.raises(ConfigError, match="use one of colour"):
        get_variant("mtd")


def _init(tmp_path: Path, v) -> tuple[Path, str]:
    data = generate(tmp_path / "data", v)
    out = tmp_path / "recipe.yaml"
    r = CliRunner().invoke(cli, ["init", "--kind", "csv", "--root", str(data), "--out", str(out), "--no-estimate"])
    assert r.exit_code == 0, r.output
    return out, r.output


@pytest.mark.parametrize("name", ["colour", "strips", "squares"])
def test_init_fits_the_input_to_each_data_sets_shape(tmp_path: Path, name: str):
    v = small(VARIANTS[name], n=6)
    out, shown = _init(tmp_path, v)
    assert f"channels: {3 if v.colour else 1}" in shown
    run = Run(tmp_path / "run", load_config(out), echo=lambda *_: None)
    run.run_stage("prepare")
    for section in ("classifier", "retrain", "segmenter"):
        h, w = getattr(run.cfg, section).input_size
        assert h / w == pytest.approx(v.height / v.width, rel=0.1), section  # padded or fitted, never stretched


def test_init_tiles_the_cams_of_large_images(tmp_path: Path):
    v = dataclasses.replace(VARIANTS["large"], n_ok=2, n_defect=2)  # 2700 x 1800: shrunk 5.6x for the classifier
    out, _ = _init(tmp_path, v)
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("#   cam.tile_size:"))
    tiles = [int(t) for t in line.split("[")[1].split("]")[0].split(",")]
    assert 0 < tiles[0] < 1800 and 0 < tiles[1] < 2700  # windows of the part, each seen closer than the whole


COLOUR_OPTIONS = {
    "recipe": [],
    # the classifier's options off in the recipes: its frozen stem's features cached; a seed ensemble of two
    "cached-ensemble": ["classifier.backbone.freeze=1", "classifier.cache_features=true", "classifier.ensemble=2"],
}


@pytest.mark.parametrize("options", COLOUR_OPTIONS)
def test_inits_recipe_runs_on_colour_strips(tmp_path: Path, options: str):
    """The whole pipeline of the recipe init writes, on RGB 1:3 strips, with tiny models so it runs in seconds."""
    v = small(dataclasses.replace(VARIANTS["strips"], colour=True, defects=("blob",)), n=12)
    out, _ = _init(tmp_path, v)
    tiny = [
        f"{s}.backbone.{k}={val}"
        for s in ("classifier", "retrain", "segmenter")
        for k, val in (("name", "test_resnet"), ("weights", "null"), ("stages", 0), ("freeze", 0))
    ]
    tiny += [f"{s}.max_pixels=12288" for s in ("classifier", "retrain", "segmenter")]
    tiny += [
        "classifier.epochs=8",
        "classifier.lr=0.003",
        "classifier.warmup_epochs=0",
        "retrain.epochs=1",
        "segmenter.epochs=2",
        "segmenter.min_steps=0",
        "cam.iem.rounds=1",
    ]
    tiny += ["pseudo.crf.iterations=2", "cam.score_threshold=0.01", "export.formats=[png]"]
    tiny += COLOUR_OPTIONS[options]
    r = CliRunner().invoke(
        cli, ["run", "--config", str(out), "--run-dir", str(tmp_path / "run"), *sum((["--set", s] for s in tiny), [])]
    )
    assert r.exit_code == 0, r.output
    run_dir = tmp_path / "run"
    # init's seed ensemble of 3 (2 with the options), the most flip-consistent member kept for the CAMs
    members = 3 if options == "recipe" else 2
    assert (run_dir / "train-classifier" / "members" / str(members - 1) / "dfc.safetensors").is_file()
    picked = json.loads((run_dir / "train-classifier" / "ensemble.json").read_text())
    assert picked["pick"] == "flip-consistent" and len(picked["consistency"]) == members
    assert "cache_features off" not in r.output  # the colour images' features were cached, not read per epoch
    assert (run_dir / "overview.png").is_file()
    masks = sorted((run_dir / "train-segmenter" / "masks").glob("*.png"))
    assert masks and all(cv2.imread(str(m), cv2.IMREAD_UNCHANGED).shape == (v.height, v.width) for m in masks)
    cfg = Run(run_dir, load_config(out, tiny), echo=lambda *_: None).cfg
    h, w = cfg.segmenter.input_size
    assert w / h == pytest.approx(3, rel=0.2) and cfg.segmenter.crop != [0, 0]  # zoomed, trained on windows


def test_padded_inputs_run_the_pipeline_on_parts_of_mixed_aspect_ratios(tmp_path: Path):
    """`dataset.fit: pad` on strips of which half are turned upright (1:3 and 3:1 parts in one set): every network
    records that its inputs were padded, and every mask and CAM comes back at its own image's size."""
    v = small(dataclasses.replace(VARIANTS["strips"], defects=("blob",)), n=12)
    data = generate(tmp_path / "data", v)
    rows = list(csv.DictReader(data.open()))
    for r in rows[::2]:  # every other part upright
        for key in ("path", "mask"):
            if r[key]:
                p = data.parent / r[key]
                cv2.imwrite(str(p), np.ascontiguousarray(np.rot90(cv2.imread(str(p), cv2.IMREAD_UNCHANGED))))
    out = tmp_path / "recipe.yaml"
    r = CliRunner().invoke(cli, ["init", "--kind", "csv", "--root", str(data), "--out", str(out), "--no-estimate"])
    assert r.exit_code == 0, r.output
    tiny = [
        f"{s}.backbone.{k}={val}"
        for s in ("classifier", "retrain", "segmenter")
        for k, val in (("name", "test_resnet"), ("weights", "null"), ("stages", 0), ("freeze", 0))
    ]
    tiny += [f"{s}.max_pixels=12288" for s in ("classifier", "retrain", "segmenter")]
    tiny += ["classifier.epochs=4", "classifier.warmup_epochs=0", "retrain.epochs=1", "segmenter.epochs=1"]
    tiny += ["segmenter.min_steps=0"]
    tiny += ["cam.iem.rounds=1", "pseudo.crf.iterations=2", "cam.score_threshold=0.01", "export.formats=[png]"]
    tiny += ["dataset.fit=pad"]
    run_dir = tmp_path / "run"
    r = CliRunner().invoke(
        cli, ["run", "--config", str(out), "--run-dir", str(run_dir), *sum((["--set", s] for s in tiny), [])]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((run_dir / "train-classifier" / "dfc.json").read_text())["fit"] == "pad"
    for stage in ("retrain", "train-segmenter"):
        assert json.loads((run_dir / stage / "segmenter.json").read_text())["fit"] == "pad", stage
    shapes = {
        Path(r["path"]).stem: cv2.imread(str(data.parent / r["path"]), cv2.IMREAD_UNCHANGED).shape[:2] for r in rows
    }
    assert len(set(shapes.values())) == 2
    for stage in ("pseudo-labels", "retrain", "train-segmenter"):
        masks = sorted((run_dir / stage / "masks").glob("*.png"))
        assert len(masks) == len(rows), stage
        for m in masks:
            sid = next(k for k in shapes if m.stem.endswith(k))
            assert cv2.imread(str(m), cv2.IMREAD_UNCHANGED).shape == shapes[sid], (stage, m.name)
