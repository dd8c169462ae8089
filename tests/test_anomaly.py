"""Anomaly priors (METHOD.md 7): PatchCore maps, their fusion with the CAM, anomaly-guided pretraining."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FAST, TINY

from wsss.anomaly.io import anomaly_path, normalise, read_map, read_meta
from wsss.anomaly.patchcore import MemoryBank, calibrate, greedy_coreset, pooled_percentile
from wsss.config import AnomalyConfig, PseudoConfig, load_config
from wsss.data.images import read_image, read_mask
from wsss.data.index import read_dataset_info, read_eval_index
from wsss.errors import ConfigError, StageError
from wsss.evaluation.metrics import auroc
from wsss.refine.pseudo import label_image
from wsss.refine.unary import unary_map
from wsss.runs import Run
from wsss.train.pretrain import energy_cosine_loss

# a random-init tiny teacher (label-free) on the tiny set: stride-4 and stride-8 stages of 64 px images
ANOMALY = [
    "anomaly.features=backbone",
    "anomaly.backbone.name=test_resnet",
    "anomaly.backbone.weights=null",
    "anomaly.layers=[1, 2]",
    "anomaly.coreset=200",
    "anomaly.max_patches=4000",
    "anomaly.input_size=[64, 64]",
]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def anomaly_run(prepared_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("anomaly")
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    cfg = load_config(None, [*FAST, *ANOMALY])
    Run(run_dir, cfg, echo=quiet).run_stage("anomaly")
    return run_dir


def test_anomaly_maps_are_higher_inside_synthetic_defects(anomaly_run: Path):
    index = anomaly_run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    truth, maps, inside_higher = [], [], []
    for r in read_eval_index(index):
        raw = read_map(anomaly_path(anomaly_run / "anomaly", r.id))
        image = read_image(r.path)
        assert raw.shape == image.shape[:2]  # at the original size
        if r.mask is None:
            continue
        gt = read_mask(r.mask, info.mask_threshold)
        truth.append(gt.ravel())
        maps.append(raw.ravel())
        if gt.any():
            inside_higher.append(raw[gt].mean() > raw[~gt].mean())
    pixel_auroc = auroc(np.concatenate(truth), np.concatenate(maps))
    assert pixel_auroc >= 0.7, pixel_auroc  # measured 0.80; chance is 0.5
    assert np.mean(inside_higher) >= 0.75 and len(inside_higher) >= 8
    with np.load(anomaly_path(anomaly_run / "anomaly", r.id)) as z:
        assert z["map"].dtype == np.float16
    meta = read_meta(anomaly_run / "anomaly")
    assert meta["lo"] < meta["hi"] and meta["bank_patches"] == 200 and meta["features"] == "backbone"
    scores = (anomaly_run / "anomaly" / "scores.csv").read_text().splitlines()
    assert scores[0] == "id,score,normalised" and len(scores) == 1 + TINY["n_ok"] + TINY["n_defect"]
    assert not list((anomaly_run / "anomaly").glob("rows*.jsonl"))  # the resume log is gone once done


def test_anomaly_needs_ok_training_images(tmp_path: Path):
    data = ["dataset.synthetic.n_ok=1", "dataset.synthetic.n_defect=8", "dataset.synthetic.size=64"]
    run = Run(tmp_path, load_config(None, [*data, *ANOMALY]), echo=quiet)
    run.run_stage("prepare")
    with pytest.raises(StageError, match="anomaly priors need defect-free images") as e:
        run.run_stage("anomaly")
    assert "index.csv" in str(e.value)
    assert not (tmp_path / "anomaly" / "manifest.json").exists()  # nothing published


def test_greedy_coreset_covers_every_cluster_and_the_bank_leaves_its_own_image_out():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centres])
    chosen = greedy_coreset(points, 4, dims=2, seed=0)
    assert sorted(int(i) // 50 for i in chosen) == [0, 1, 2, 3]  # one per cluster, however it starts
    assert len(greedy_coreset(points, 0, 2)) == 200 and len(greedy_coreset(points, 500, 2)) == 200
    bank = MemoryBank(points, torch.arange(200) // 50)  # each cluster one "image"
    assert torch.allclose(bank.distances(points[:5]), torch.zeros(5))  # in the bank: distance 0
    assert bank.distances(points[:5], owner=0).min() > 5  # without its own image: the nearest other cluster
    with pytest.raises(ValueError, match="two OK images"):
        MemoryBank(points[:3], torch.zeros(3, dtype=torch.long)).distances(points[:1], owner=0)


def test_normalisation_is_dataset_level():
    cfg = AnomalyConfig(ok_percentile=100.0, norm_percentile=50.0)
    lo, hi, warning = calibrate([[0.0, 1.0, 2.0]], [4.0, 6.0], [2.0], cfg)
    assert (lo, hi, warning) == (2.0, 5.0, "")
    assert pooled_percentile([[0, 1], [2, 3]], 100) == 3
    np.testing.assert_allclose(normalise(np.array([1.0, 2.0, 3.5, 9.0]), lo, hi), [0.0, 0.0, 0.5, 1.0])
    _, hi, warning = calibrate([[0.0, 5.0]], [1.0], [5.0], cfg)  # defects no higher than OK pixels: said
    assert hi > 5.0 and "do not separate" in warning


def blob_case():
    """A CAM shifted off a disc-shaped defect, and an anomaly map on the defect itself."""
    gt = np.zeros((64, 64), np.uint8)
    cv2.circle(gt, (32, 32), 10, 1, -1)
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(140, 6, (64, 64)) - 60 * gt, 0, 255).astype(np.uint8)
    cam = cv2.GaussianBlur(np.roll(gt.astype(np.float32), 12, axis=1), (0, 0), 5)
    anomaly = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 2)
    return image, gt.astype(bool), (cam / cam.max())[None], anomaly / anomaly.max()


def test_fusion_changes_the_mask_as_configured():
    image, gt, cam, anomaly = blob_case()
    base = PseudoConfig(method="threshold", confidence=0.0, ignore_band=0)
    masks = {}
    for unary, fusion in [
        ("cam", "geometric"),
        ("anomaly", "geometric"),
        ("fusion", "geometric"),
        ("fusion", "product"),
    ]:
        cfg = dataclasses.replace(base, unary=unary, fusion=fusion)
        masks[unary, fusion] = label_image(image, unary_map(cam, anomaly, cfg), cfg, True).mask > 0
    iou = {k: (m & gt).sum() / (m | gt).sum() for k, m in masks.items()}
    assert iou["anomaly", "geometric"] > 0.9 > iou["cam", "geometric"]  # each map finds its own region
    assert iou["fusion", "geometric"] > iou["cam", "geometric"]  # fusion pulls the CAM onto the anomaly
    assert not np.array_equal(masks["fusion", "geometric"], masks["fusion", "product"])
    np.testing.assert_allclose(
        unary_map(cam, anomaly, dataclasses.replace(base, unary="fusion", anomaly_weight=0.0)), cam
    )
    fused = dataclasses.replace(base, unary="fusion")
    assert not label_image(image, unary_map(cam, anomaly, fused), fused, False).mask.any()  # called OK: empty
    two = np.stack([cam[0], np.zeros_like(cam[0])])  # a class the classifier gated off gets no anomaly
    spread = unary_map(two, anomaly, dataclasses.replace(base, unary="anomaly"))
    assert spread[1].max() == 0 and np.allclose(spread[0], anomaly)


def test_pseudo_labels_fuse_the_anomaly_maps(full_run, tmp_path: Path):
    run_dir, cfg = full_run
    for stage in ("prepare", "train-classifier", "cam", "pseudo-labels"):
        shutil.copytree(run_dir / stage, tmp_path / stage)
    fused_cfg = load_config(None, [*FAST, "anomaly.coreset=200", "anomaly.input_size=[64, 64]", "pseudo.unary=fusion"])
    run = Run(tmp_path, fused_cfg, echo=quiet)
    run.run_stage("anomaly")  # on the trained DFC's backbone (anomaly.features=dfc, the default)
    out = run.run_stage("pseudo-labels")  # stale: its config changed, so it re-runs with the fusion
    manifest = json.loads((out / "manifest.json").read_text())
    assert "anomaly" in manifest["inputs"]
    scores = dict(line.split(",")[:2] for line in (out / "scores.csv").read_text().splitlines()[1:])
    threshold = cfg.cam.score_threshold
    changed = 0
    for png in sorted((run_dir / "pseudo-labels" / "masks").glob("*.png")):
        before = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        after = cv2.imread(str(out / "masks" / png.name), cv2.IMREAD_UNCHANGED)
        changed += not np.array_equal(before, after)
        if float(scores[png.stem]) < threshold:
            assert not after.any()  # called OK: still empty
    assert changed >= 1


def test_pretrain_runs_and_its_weights_load_into_the_dfc(prepared_run: Path, tmp_path: Path):
    from wsss.models.state import load_state_dict_file
    from wsss.stages.train_classifier import with_pretrained_backbone
    from wsss.train.classifier import build_dfc

    shutil.copytree(prepared_run / "prepare", tmp_path / "prepare")
    teacher = [o.replace("anomaly.", "pretrain.anomaly.") for o in ANOMALY if "features" not in o]
    cfg = load_config(None, [*FAST, *teacher, "pretrain.epochs=4", "classifier.epochs=1", "run.pipeline=full-pretrain"])
    run = Run(tmp_path, cfg, echo=quiet)
    out = run.run_stage("pretrain")
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["last_loss"] < meta["first_loss"]  # the energy maps move toward the anomaly maps
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 4
    weights = out / "backbone.safetensors"
    dfc = build_dfc(with_pretrained_backbone(cfg, weights).classifier, 1, 1)
    sd = load_state_dict_file(weights)
    for k, v in dfc.backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k
    trained = run.run_stage("train-classifier")  # the pipeline has `pretrain`: it starts from those weights
    assert "pretrain" in json.loads((trained / "manifest.json").read_text())["inputs"]


def test_pretrain_refuses_a_teacher_that_saw_labels():
    with pytest.raises(ConfigError, match="pretrain.anomaly.features"):
        load_config(None, ["pretrain.anomaly.features=dfc"])


def test_energy_cosine_loss():
    target = torch.rand(2, 8, 8)
    aligned = target.sqrt()[:, None].expand(2, 3, 8, 8) * 5  # energy (sum of squares) = 15 x target
    assert energy_cosine_loss([aligned], target) < 1e-5
    flat = torch.ones(2, 3, 8, 8)
    assert energy_cosine_loss([flat], target) > energy_cosine_loss([aligned], target)


def test_a_killed_anomaly_stage_resumes_with_the_same_maps(
    anomaly_run: Path, prepared_run: Path, tmp_path: Path, monkeypatch, capsys
):
    import wsss.stages.anomaly as stage

    shutil.copytree(prepared_run / "prepare", tmp_path / "prepare")
    cfg = load_config(None, [*FAST, *ANOMALY])
    original, written = stage.write_map, []

    def dies_after_five(path, raw):
        if len(written) == 5:
            raise RuntimeError("killed")
        written.append(path)
        return original(path, raw)

    monkeypatch.setattr(stage, "write_map", dies_after_five)
    with pytest.raises(RuntimeError, match="killed"):
        Run(tmp_path, cfg, echo=quiet).run_stage("anomaly")
    monkeypatch.setattr(stage, "write_map", original)
    capsys.readouterr()
    out = Run(tmp_path, cfg, echo=quiet).run_stage("anomaly")
    assert f"anomaly: resuming, 5 of {TINY['n_ok'] + TINY['n_defect']} images already done" in capsys.readouterr().out
    for path in sorted(out.glob("*.npz")):
        np.testing.assert_array_equal(read_map(path), read_map(anomaly_run / "anomaly" / path.name))
    assert (out / "anomaly.json").read_text() == (anomaly_run / "anomaly" / "anomaly.json").read_text()
