"""`train-classifier` on tiny synthetic data: loss goes down, module switches, exact resume, CAMs on defects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wsss.config import load_config
from wsss.data.images import read_mask
from wsss.data.index import read_eval_index
from wsss.runs import Run
from wsss.stages.train_classifier import classifier_trainer
from wsss.train.classifier import ClassifierTrainer, build_dfc

TINY = [
    "classifier.backbone.name=test_resnet",
    "classifier.backbone.weights=null",
    "classifier.input_size=[64, 64]",
    "classifier.batch_size=8",
    "classifier.warmup_epochs=1",
    "classifier.lr=0.003",
    "classifier.clm.dim=16",
    "classifier.clm.hidden=32",
    "run.device=cpu",
]


def config(*overrides: str):
    return load_config(None, [*TINY, *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One tiny DFC trained for 12 epochs on 120 synthetic images (64 px, stride 8, reflect padding), shared below."""
    run_dir = tmp_path_factory.mktemp("trained")
    synth = {"n_ok": 60, "n_defect": 60, "size": 64, "seed": 1, "defects": "[scratch, blob, crack]"}
    cfg = load_config(
        None,
        [
            *TINY,
            "classifier.epochs=12",
            "classifier.patience=100",
            "classifier.backbone.output_stride=8",
            "classifier.backbone.padding=reflect",
            "classifier.batch_size=16",
            "prepare.split.train=0.7",
            "prepare.split.val=0.15",
            "prepare.split.test=0.15",
            *[f"dataset.synthetic.{k}={v}" for k, v in synth.items()],
        ],
    )
    run = Run(run_dir, cfg, echo=lambda *_: None)
    run.run_stage("prepare")
    classifier_trainer(cfg, run_dir / "prepare" / "index.csv", run_dir / "dfc", echo=lambda *_: None).fit()
    return run_dir, cfg


def test_loss_decreases_and_outputs_are_written(trained):
    run_dir, cfg = trained
    rows = (run_dir / "dfc" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith("epoch,lr,loss,loss_cls")
    loss_cls = [float(r.split(",")[3]) for r in rows[1:]]
    assert np.mean(loss_cls[-3:]) < 0.7 * np.mean(loss_cls[:3]), loss_cls
    head = rows[0].split(",")
    assert max(float(r.split(",")[head.index("val_ap")]) for r in rows[1:]) >= 0.9  # validation image AP
    meta = json.loads((run_dir / "dfc" / "dfc.json").read_text())
    assert meta["classes"] == ["defect"] and meta["in_chans"] == 1 and meta["stride"] == 8
    assert meta["backbone"]["weights"] is None
    model = build_dfc(cfg.classifier, 1, 1)
    model.load_state_dict(load_file(run_dir / "dfc" / "dfc.safetensors"))  # rebuilt from its config alone


@pytest.mark.parametrize(
    ("clm", "gcm", "consistency"), [(False, False, 0.0), (True, False, 0.0), (False, True, 0.5), (True, True, 0.0)]
)
def test_module_switches(prepared_run: Path, tmp_path: Path, clm: bool, gcm: bool, consistency: float):
    cfg = config(
        "classifier.epochs=1",
        f"classifier.clm.enabled={str(clm).lower()}",
        f"classifier.gcm.enabled={str(gcm).lower()}",
        f"classifier.gcm.consistency_weight={consistency}",
    )
    trainer = classifier_trainer(cfg, prepared_run / "prepare" / "index.csv", tmp_path, echo=lambda *_: None)
    assert (trainer.model.projection is not None) == clm
    trainer.fit()
    head, row = (line.split(",") for line in (tmp_path / "metrics.csv").read_text().splitlines()[:2])
    loss_clm, loss_gcm = float(row[head.index("loss_clm")]), float(row[head.index("loss_gcm")])
    assert (loss_clm != 0.0) == clm and (loss_gcm > 0.0) == (gcm and consistency > 0)
    assert float(row[head.index("loss_eq")]) == 0.0  # classifier.equivariance off


def test_flip_equivariance_is_zero_for_maps_that_do_not_move_and_counts_defective_images_only():
    from wsss.train.losses import flip_equivariance

    cams = torch.zeros(3, 1, 8, 8)
    cams[:, 0, 3:5, 3:5] = 4.0  # on the centre: the same flipped back
    moved = torch.zeros(3, 1, 8, 8)
    moved[:, 0, 0:2, 3:5] = 4.0  # the flipped view's map, flipped back, lands elsewhere
    moved[2] = cams[2]  # the third image's map stays
    defective = torch.tensor([True, True, False])
    assert float(flip_equivariance(cams, cams.clone(), defective)) == 0.0
    away = float(flip_equivariance(cams, moved, defective))
    assert away == pytest.approx(8 / 64)  # 8 cells differ by the peak, over 64 cells
    # scale-free: the same maps ten times stronger give the same loss
    assert float(flip_equivariance(10 * cams, 10 * moved, defective)) == pytest.approx(away)
    # only the defective images count; none defective gives 0 with a gradient path
    assert float(flip_equivariance(cams, moved, torch.tensor([False, False, True]))) == 0.0
    assert float(flip_equivariance(cams, moved, torch.tensor([True, False, True]))) == pytest.approx(away / 2)
    assert float(flip_equivariance(cams, moved, torch.zeros(3, dtype=torch.bool))) == 0.0
    x = cams.clone().requires_grad_()
    flip_equivariance(x, moved, defective).backward()
    assert x.grad[2].abs().sum() == 0 and x.grad[0].abs().sum() > 0


def test_equivariance_training_logs_its_loss_and_lowers_it(prepared_run: Path, tmp_path: Path):
    """classifier.equivariance > 0: each step also trains the flipped batch and logs the equivariance loss, which
    training lowers; off, the column stays 0."""
    index = prepared_run / "prepare" / "index.csv"
    for weight in (0.0, 1.0):
        out = tmp_path / f"eq{weight}"
        cfg = config("classifier.epochs=3", "classifier.patience=100", f"classifier.equivariance={weight}")
        classifier_trainer(cfg, index, out, echo=lambda *_: None).fit()
        head, *rows = (line.split(",") for line in (out / "metrics.csv").read_text().splitlines())
        eq = [float(r[head.index("loss_eq")]) for r in rows]
        if weight:
            assert eq[0] > 0 and eq[-1] < eq[0], eq
        else:
            assert eq == [0.0] * 3


def test_resume_continues_at_the_right_epoch_with_identical_state(
    prepared_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    index = prepared_run / "prepare" / "index.csv"
    cfg = config("classifier.epochs=3", "classifier.patience=100")
    classifier_trainer(cfg, index, tmp_path / "straight", echo=lambda *_: None).fit()

    killed = classifier_trainer(cfg, index, tmp_path / "resumed", echo=lambda *_: None)
    calls = {"n": 0}
    original = ClassifierTrainer.validate

    def dies_in_epoch_two(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed during the second epoch
        return original(self)

    monkeypatch.setattr(ClassifierTrainer, "validate", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    monkeypatch.setattr(ClassifierTrainer, "validate", original)
    log: list[str] = []
    classifier_trainer(cfg, index, tmp_path / "resumed", echo=log.append).fit()
    assert "resuming after epoch 1" in log
    a, b = load_file(tmp_path / "straight" / "dfc.safetensors"), load_file(tmp_path / "resumed" / "dfc.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert ca["epoch"] == cb["epoch"] == 2
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert (tmp_path / "straight" / "metrics.csv").read_text().count("\n") == 4
    assert len((tmp_path / "resumed" / "metrics.csv").read_text().splitlines()) == 4


def test_stage_through_the_runner(prepared_run: Path, tmp_path: Path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run, run_dir)
    cfg = load_config(
        None,
        [
            *TINY,
            "classifier.epochs=1",
            *[f"dataset.synthetic.{k}={v}" for k, v in {"n_ok": 12, "n_defect": 12, "size": 64}.items()],
        ],
    )
    Run(run_dir, cfg, echo=lambda *_: None).run_stage("train-classifier")
    m = json.loads((run_dir / "train-classifier" / "manifest.json").read_text())
    assert m["status"] == "done" and set(m["outputs"]) == {"model", "meta", "metrics"}
    assert not (run_dir / "train-classifier" / "checkpoints").exists()
    assert "classifier" in m["config"] and m["config"]["run.seed"] == 0


def test_cam_peak_falls_inside_the_defect_in_most_defective_images(trained):
    """The CAM's peak cell touches the known defect in most defective images, and far more often than chance.

    Chance for an image = the fraction of CAM cells that touch its mask (about 0.11 here). Measured: 34 of 60 with
    reflect padding; 17 of 40 with zero padding, whose misses cluster on the image border.
    """
    from wsss.data.classifier_data import ImageDataset
    from wsss.data.index import read_train_index

    run_dir, cfg = trained
    model = build_dfc(cfg.classifier, 1, 1)
    model.load_state_dict(load_file(run_dir / "dfc" / "dfc.safetensors"))
    model.eval()
    index = run_dir / "prepare" / "index.csv"
    rows = [r for r in read_train_index(index) if r.labels]
    masks = {r.id: r.mask for r in read_eval_index(index)}
    ds = ImageDataset(rows, ["defect"], (64, 64))
    hits, chance = 0, 0.0
    with torch.no_grad():
        for i, row in enumerate(rows):
            cam = model(ds[i]["image"][None]).cams[0, 0]
            st = 64 // cam.shape[0]
            gt = read_mask(masks[row.id], 1)
            touched = gt.reshape(cam.shape[0], st, cam.shape[1], st).any(axis=(1, 3))
            cy, cx = np.unravel_index(int(cam.argmax()), cam.shape)
            hits += bool(touched[cy, cx])
            chance += touched.mean()
    assert hits > len(rows) / 2, (hits, len(rows), chance)
    assert hits >= 3 * chance, (hits, len(rows), chance)


@pytest.mark.gpu
def test_bf16_autocast_and_channels_last_train_on_the_gpu(prepared_run: Path, tmp_path: Path):
    """The GPU fast paths: a DFC trained with bf16 autocast and channels_last, whose forward under autocast is bf16."""
    import shutil

    from conftest import TINY, TINY_CLASSIFIER

    from wsss.models.classifier import load_dfc

    shutil.copytree(prepared_run / "prepare", tmp_path / "prepare")
    overrides = [f"dataset.synthetic.{k}={v}" for k, v in TINY.items()] + TINY_CLASSIFIER
    overrides += ["run.device=cuda", "classifier.amp=true", "classifier.channels_last=true", "classifier.epochs=2"]
    out = Run(tmp_path, load_config(None, overrides), echo=lambda *_: None).run_stage("train-classifier")
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    model, meta = load_dfc(out, "cuda")
    x = torch.rand(2, int(meta["in_chans"]), 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        res = model(x)
    assert res.cams.dtype == torch.bfloat16 and torch.isfinite(res.cams.float()).all()


def test_kept_epoch_is_the_lowest_validation_loss(trained):
    """classifier.select=loss (the default): dfc.json's epoch is the metrics row with the lowest validation BCE."""
    import csv
    import json

    run_dir, _ = trained
    rows = list(csv.DictReader((run_dir / "dfc" / "metrics.csv").open()))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert json.loads((run_dir / "dfc" / "dfc.json").read_text())["epoch"] == int(best["epoch"])
    assert len({r["val_loss"] for r in rows}) > 1  # the choice was not trivial
