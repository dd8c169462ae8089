"""`auto` settings: resolved from the training images' sizes, deterministically; explicit values win; shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from wsss.auto import fit_size, resolve_auto
from wsss.cli import cli
from wsss.config import load_config, section_hash
from wsss.data.stats import SizeStats
from wsss.errors import ConfigError
from wsss.runs import Run


def test_ksdd_like_parts_resolve_to_sizes_that_keep_their_aspect_ratio():
    ksdd = SizeStats.of([(1240, 500), (1250, 500), (1270, 500)])  # 500 x ~1250 px, H x W
    cfg = resolve_auto(load_config(None), ksdd)
    assert ksdd.median == (1250, 500)
    assert cfg.classifier.input_size == [640, 256]  # configs/ksdd.yaml's, found by hand
    # the largest stride multiples within the 86016 px budget whose aspect ratio (2.6) is within 5% of the parts'
    # (2.5); configs/ksdd.yaml's hand-set 448 x 192 (2.33) is 7% off
    assert cfg.retrain.input_size == cfg.segmenter.input_size == [416, 160]
    assert cfg.pseudo.crf.bilateral_sxy == 50.0  # the former fixed default, measured on KSDD
    assert cfg.cam.tile_size == [0, 0]


def test_small_images_are_never_upscaled_and_the_crf_reach_follows_them():
    cfg = resolve_auto(load_config(None), SizeStats.of([(128, 128)] * 3))
    assert cfg.classifier.input_size == cfg.segmenter.input_size == [128, 128]
    assert cfg.pseudo.crf.bilateral_sxy == 12.8  # the demo's former hand-set 12 px
    assert fit_size((20, 300), 163_840) == [32, 288]  # every side a whole multiple of the stride, at least 32


def test_rounding_to_the_stride_never_overshoots_the_budget_nor_distorts_the_parts():
    # 1259 x 500 scaled into 86016 px is 465 x 185: rounding each side to the nearest 32 gives 480 x 192 (92160 px)
    assert fit_size((1259, 500), 86_016) == [416, 160]
    assert fit_size((1259, 500), 163_840) == [640, 256]
    # square parts stay square: 416 x 384 would be larger, but 8% off
    assert fit_size((512, 512), 163_840) == [384, 384]
    assert fit_size((323, 270), 163_840) == [320, 256]  # MTD's median: never scaled up
    for h, w in [(1259, 500), (999, 333), (4000, 3000), (730, 1100), (517, 517), (512, 512), (600, 800)]:
        for budget in (40_000, 86_016, 163_840):
            fh, fw = fit_size((h, w), budget)
            assert fh * fw <= budget and fh % 32 == fw % 32 == 0
            if budget >= 86_016:  # sides of 5+ strides: the aspect ratio is kept within 5%
                assert abs(fh / fw / (h / w) - 1) <= 0.05, (h, w, budget, fh, fw)
            assert fh * fw >= 0.65 * min(budget, h * w)  # the budget is used, not given away for the aspect


def test_a_mixed_set_resolves_from_its_median_and_huge_parts_are_tiled():
    mixed = SizeStats.of([(200, 100), (400, 300), (300, 900), (260, 200)])
    assert (mixed.median, mixed.min, mixed.max) == ((280, 250), (200, 100), (400, 900))
    assert resolve_auto(load_config(None), mixed).classifier.input_size == [288, 256]
    huge = resolve_auto(load_config(None), SizeStats.of([(6000, 4000)]))
    h, w = huge.classifier.input_size
    assert h * w <= 163_840 and abs(h / w - 1.5) < 0.1
    th, tw = huge.cam.tile_size  # shrunk ~12x per side: windows seen at twice the classifier's magnification
    assert 0 < th < 6000 and 0 < tw < 4000 and th == pytest.approx(6000 / 2, rel=0.1)


def test_explicit_values_win_and_bad_values_are_named():
    cfg = load_config(None, ["classifier.input_size=[96, 64]", "pseudo.crf.bilateral_sxy=7"])
    out = resolve_auto(cfg, SizeStats.of([(1250, 500)]))
    assert out.classifier.input_size == [96, 64] and out.pseudo.crf.bilateral_sxy == 7.0
    assert out.segmenter.input_size == [416, 160]  # still auto
    with pytest.raises(ConfigError, match="classifier.input_size.*or auto"):
        load_config(None, ["classifier.input_size=big"])
    with pytest.raises(ConfigError, match="no training image sizes recorded"):
        resolve_auto(load_config(None), None)


def test_a_run_resolves_from_its_prepare_and_a_changed_dataset_changes_the_values(tmp_path: Path):
    sets = ["dataset.synthetic.n_ok=6", "dataset.synthetic.n_defect=6", "dataset.synthetic.size=64"]
    run = Run(tmp_path / "run", load_config(None, sets), echo=lambda *_: None)
    assert run.cfg.classifier.input_size == "auto"  # nothing to resolve from before prepare
    run.run_stage("prepare")
    assert run.cfg.classifier.input_size == [64, 64] and run.cfg.pseudo.crf.bilateral_sxy == 6.4
    before = section_hash(run.cfg, ("classifier",))
    r = CliRunner().invoke(
        cli, ["show-config", "--run-dir", str(tmp_path / "run"), *sum((["--set", s] for s in sets), [])]
    )
    assert r.exit_code == 0 and yaml.safe_load(r.output)["classifier"]["input_size"] == [64, 64]

    bigger = Run(tmp_path / "run", load_config(None, [*sets[:2], "dataset.synthetic.size=96"]), echo=lambda *_: None)
    bigger.run_stage("prepare")
    assert bigger.cfg.classifier.input_size == [96, 96]
    assert section_hash(bigger.cfg, ("classifier",)) != before  # so train-classifier is stale


def test_a_run_prepared_by_an_older_wsss_resolves_from_its_image_headers(tmp_path: Path):
    import json

    sets = ["dataset.synthetic.n_ok=6", "dataset.synthetic.n_defect=6", "dataset.synthetic.size=64"]
    run = Run(tmp_path / "run", load_config(None, sets), echo=lambda *_: None)
    run.run_stage("prepare")
    info = tmp_path / "run" / "prepare" / "dataset.json"
    data = json.loads(info.read_text())
    del data["train_sizes"]  # what dataset.json held before it recorded the sizes
    info.write_text(json.dumps(data))
    old = Run(tmp_path / "run", load_config(None, sets), echo=lambda *_: None)
    assert old.cfg.classifier.input_size == [64, 64] and old.cfg.pseudo.crf.bilateral_sxy == 6.4


def test_a_zoomed_segmenter_sees_the_part_magnified_and_trains_on_windows_of_its_budget():
    from wsss.auto import resolve_auto
    from wsss.config import load_config
    from wsss.data.stats import SizeStats

    def resolved(median, *sets):
        cfg = load_config(None, list(sets))
        return resolve_auto(cfg, SizeStats(median=median, min=median, max=median, n=10)).segmenter

    ksdd = resolved((1257, 500), "segmenter.zoom=2", "segmenter.crop=auto")
    assert ksdd.input_size == [832, 320] and ksdd.crop == [416, 160]  # KSDD's tuned recipe: 896 x 384 from 448 x 192
    demo = resolved((128, 128), "segmenter.zoom=2", "segmenter.crop=auto")
    assert demo.input_size == [256, 256] and demo.crop == [128, 128]  # beyond the image's own size, as the demo's
    plain = resolved((1257, 500), "segmenter.crop=auto")
    assert plain.input_size == [416, 160] and plain.crop == [0, 0]  # zoom 1: whole images, as before
    assert resolved((1257, 500), "segmenter.zoom=2").crop == [0, 0]  # an explicit crop (the default) wins
