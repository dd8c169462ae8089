"""The multi-task segmenter and its training on pseudo-masks: shapes, loss, learning, exact resume, save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wsss.config import BackboneConfig, RetrainConfig
from wsss.data.index import TrainRow
from wsss.errors import DataError
from wsss.inference import torch_predictor
from wsss.models.segmenter import load_segmenter
from wsss.train.losses import segmentation_loss
from wsss.train.segmenter import SegmenterTrainer, build_segmenter
from wsss.train.segmenter_data import PseudoMaskDataset, SegmenterData

SIZE = 32


def rcfg(**kw) -> RetrainConfig:
    base = RetrainConfig(
        backbone=BackboneConfig(weights=None, name="test_resnet", output_stride=32),
        input_size=[SIZE, SIZE],
        decoder_channels=16,
        epochs=3,
        batch_size=4,
        lr=3e-3,
        warmup_epochs=1,
    )
    return dataclasses.replace(base, **kw)


def make_data(root: Path, n_defect: int = 6, n_ok: int = 2, seed: int = 0) -> tuple[list[TrainRow], Path, dict]:
    """Noise textures with one bright rectangle each (defective) and its pseudo-mask: 1 inside, a 255 ring."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows, truth = [], {}
    for i in range(n_defect + n_ok):
        img = np.clip(rng.normal(90, 12, (SIZE, SIZE)), 0, 255).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        gt = np.zeros((SIZE, SIZE), bool)
        if i < n_defect:
            h, w = rng.integers(7, 13, size=2)
            y, x = rng.integers(1, SIZE - h - 1), rng.integers(1, SIZE - w - 1)
            img[y : y + h, x : x + w] = 200
            gt[y : y + h, x : x + w] = True
            mask[y - 1 : y + h + 1, x - 1 : x + w + 1] = 255
            mask[y : y + h, x : x + w] = 1
        sid = f"s{i:02d}"
        cv2.imwrite(str(root / "img" / f"{sid}.png"), img)
        cv2.imwrite(str(root / "masks" / f"{sid}.png"), mask)
        labels = ("defect",) if i < n_defect else ()
        rows.append(TrainRow(sid, root / "img" / f"{sid}.png", labels, "train", sid, 0))
        truth[sid] = gt
    return rows, root / "masks", truth


@pytest.mark.parametrize(("k", "size"), [(1, (32, 32)), (2, (32, 32)), (1, (48, 80)), (2, (35, 51))])
def test_output_shapes(k: int, size: tuple[int, int]):
    torch.manual_seed(0)
    model = build_segmenter(rcfg(), k, 1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert out.mask_logits.shape == (2, k + 1, *size) and out.cls_logits.shape == (2, k)
    meta = {"classes": [f"c{i}" for i in range(k)], "in_chans": 1, "input_size": list(size)}
    pred = torch_predictor(model, meta)([np.zeros((50, 70, 3), np.uint8)])[0]
    probs, cls = pred.probs, pred.cls_probs
    assert (
        pred.labels.shape == (50, 70)
        and probs.shape == (k + 1, 50, 70)
        and probs.dtype == np.float32
        and cls.shape == (k,)
    )
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5) and ((cls > 0) & (cls < 1)).all()


def test_image_head_pooling_average_or_lse_of_the_per_location_logits():
    from wsss.models.classifier import lse_pool

    torch.manual_seed(0)
    avg = build_segmenter(rcfg(), 2, 1).eval()
    lse = build_segmenter(rcfg(cls_lse_r=5.0), 2, 1).eval()
    lse.load_state_dict(avg.state_dict())  # the pooling has no weights: the same checkpoint serves both
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        deepest = avg.backbone.forward_stages(x)[-1]
        maps = torch.einsum("bchw,kc->bkhw", deepest, avg.cls_head.weight) + avg.cls_head.bias[:, None, None]
        assert torch.allclose(avg(x).cls_logits, maps.mean((2, 3)), atol=1e-5)  # GAP + linear, as before
        assert torch.allclose(lse(x).cls_logits, lse_pool(maps, 5.0), atol=1e-5)
        mean, peak = maps.mean((2, 3)), maps.amax((2, 3))
        assert (lse(x).cls_logits >= mean - 1e-5).all() and (lse(x).cls_logits <= peak + 1e-5).all()
        assert torch.equal(avg(x).mask_logits, lse(x).mask_logits)  # the mask path is untouched
    with pytest.raises(ValueError, match="cls_lse_r"):
        build_segmenter(rcfg(cls_lse_r=-1.0), 1, 1)


def test_lse_head_is_saved_in_the_meta_and_old_metas_load_as_average(tmp_path: Path):
    import json

    rows, masks, _ = make_data(tmp_path / "data", n_defect=2, n_ok=2)
    out = tmp_path / "out"
    SegmenterTrainer(rcfg(epochs=1, cls_lse_r=5.0), SegmenterData(rows, masks, ["defect"], 1), out, device="cpu").fit()
    model, meta = load_segmenter(out)
    assert meta["cls_lse_r"] == 5.0 and model.cls_lse_r == 5.0
    meta.pop("cls_lse_r")  # a segmenter.json written before the pooling was configurable
    (out / "segmenter.json").write_text(json.dumps(meta))
    assert load_segmenter(out)[0].cls_lse_r == 0.0


def test_mask_sourced_image_logits_pool_the_masks_log_odds_and_round_trip(tmp_path: Path):
    from wsss.models.classifier import lse_pool

    torch.manual_seed(0)
    model = build_segmenter(rcfg(cls_lse_r=5.0, cls_source="mask"), 2, 1).eval()
    assert model.cls_head is None  # no parameters of its own
    with torch.no_grad():
        out = model(torch.randn(2, 1, SIZE, SIZE))
    log_odds = out.mask_logits[:, 1:] - out.mask_logits[:, :1]
    assert torch.allclose(out.cls_logits, lse_pool(log_odds, 5.0), atol=1e-5)
    rows, masks, _ = make_data(tmp_path / "data", n_defect=2, n_ok=2)
    scfg = rcfg(epochs=1, cls_lse_r=5.0, cls_source="mask")
    SegmenterTrainer(scfg, SegmenterData(rows, masks, ["defect"], 1), tmp_path / "out", device="cpu").fit()
    loaded, meta = load_segmenter(tmp_path / "out")
    assert meta["cls_source"] == "mask" and loaded.cls_head is None
    with pytest.raises(ValueError, match="cls_source"):
        build_segmenter(rcfg(cls_source="pixels"), 1, 1)


def test_negative_cls_lse_r_is_a_config_error():
    from wsss.config import load_config
    from wsss.errors import ConfigError

    with pytest.raises(ConfigError, match=r"segmenter\.cls_lse_r"):
        load_config(None, ["segmenter.cls_lse_r=-1"])


def test_loss_ignores_255_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    mask = torch.randint(0, 3, (2, 8, 8))
    mask[:, :3] = 255
    base = segmentation_loss(logits, mask, dice_weight=1.0)
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 3, 3, 8) * 10
    assert torch.equal(segmentation_loss(changed, mask, dice_weight=1.0), base)
    changed[:, 0, 3] += 1.0  # a labelled pixel row does count
    assert not torch.equal(segmentation_loss(changed, mask, dice_weight=1.0), base)
    all_ignored = segmentation_loss(logits, torch.full((2, 8, 8), 255), dice_weight=1.0)
    assert torch.isfinite(all_ignored) and all_ignored.item() == 0.0


def test_image_dice_weighs_each_defect_the_same():
    """Per-image Dice: a small defect missed costs as much as a large one; the batch Dice barely sees it."""
    mask = torch.zeros(2, 16, 16, dtype=torch.long)
    mask[0, :8] = 1  # a large defect (128 px), predicted exactly
    mask[1, 0, :2] = 1  # a small one (2 px), missed
    logits = torch.zeros(2, 2, 16, 16)
    logits[:, 0] = 20.0
    logits[0, 1, :8], logits[0, 0, :8] = 20.0, 0.0

    def dice_term(over: str) -> float:
        return (segmentation_loss(logits, mask, 1.0, over) - segmentation_loss(logits, mask, 0.0)).item()

    assert dice_term("batch") == pytest.approx(1 - (2 * 128 + 1) / (128 + 130 + 1), abs=1e-4)  # ~0.008
    assert dice_term("image") == pytest.approx((0.0 + (1 - 1 / 3)) / 2, abs=1e-4)  # the miss weighs a half
    # OK images only: no defect pixel to average over, so the batch Dice punishes predicted defect pixels
    ok = torch.zeros(2, 16, 16, dtype=torch.long)
    assert segmentation_loss(logits, ok, 1.0, "image").item() == segmentation_loss(logits, ok, 1.0, "batch").item()
    with pytest.raises(ValueError, match="dice_over"):
        segmentation_loss(logits, mask, 1.0, "pixel")
    from wsss.config import load_config
    from wsss.errors import ConfigError

    with pytest.raises(ConfigError, match=r"segmenter\.dice_over"):
        load_config(None, ["segmenter.dice_over=pixel"])


def test_dataset_augments_image_and_mask_together(tmp_path: Path):
    from wsss.config import AugmentConfig
    from wsss.data.transforms import Augment

    rows, masks, _ = make_data(tmp_path, n_defect=2, n_ok=0)
    aug = Augment(AugmentConfig(brightness=0.0, contrast=0.0, gamma=0.0, blur_prob=0.0))
    ds = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), 1, aug, seed=3)
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        bright = item["image"][0] > 1.0  # the rectangle (200) after normalisation; noise stays below
        assert item["mask"].dtype == torch.int64 and torch.equal(bright, item["mask"] == 1)
        assert item["target"].tolist() == [1.0]
    ds.set_epoch(1)
    assert torch.equal(ds[0]["mask"], ds[0]["mask"])  # reproducible from (seed, epoch, index)


def test_pseudo_mask_that_misses_a_labelled_defect_is_ignored_not_background(tmp_path: Path):
    rows, masks, _ = make_data(tmp_path, n_defect=2, n_ok=1)
    cv2.imwrite(str(masks / "s01.png"), np.zeros((SIZE, SIZE), np.uint8))  # defective image, empty pseudo-mask
    ignore = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), missed_defects="ignore")
    missed = ignore[1]
    assert (missed["mask"] == 255).all() and missed["target"].tolist() == [1.0]  # still a defective image
    assert (ignore[0]["mask"] == 1).any()  # a mask that has its defect trains as is
    assert (ignore[2]["mask"] == 0).all()  # an OK image's empty mask is real background
    as_is = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE))  # the default: "background"
    assert (as_is[1]["mask"] == 0).all()
    human = tmp_path / "reviewed"  # a person's empty mask on a defective image is trusted as background
    human.mkdir()
    cv2.imwrite(str(human / "s01.png"), np.zeros((SIZE, SIZE), np.uint8))
    reviewed = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), reviewed_dir=human, missed_defects="ignore")
    assert (reviewed[1]["mask"] == 0).all()
    with pytest.raises(ValueError, match="missed_defects"):
        PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), missed_defects="drop")


def test_the_margin_a_mask_stage_drew_is_ignored_in_pseudo_masks_not_in_reviewed_ones(tmp_path: Path):
    from wsss.refine.pseudo import grow

    rows, masks, _ = make_data(tmp_path, n_defect=2, n_ok=1)
    core = np.zeros((SIZE, SIZE), np.uint8)
    core[8:20, 15] = 1  # a 1 px crack, grown by 2 px as a mask stage with pseudo.margin 2 writes it
    cv2.imwrite(str(masks / "s00.png"), grow(core, 1, 2))
    plain = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE))[0]["mask"].numpy()
    ring = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), margin=2)[0]["mask"].numpy()
    assert ((plain == 1) == (grow(core, 1, 2) == 1)).all()  # margin 0: the mask as written
    assert ((ring == 1) == (core == 1)).all()  # the crack itself still trains as defect
    assert ((ring == 255) == (grow(core, 1, 2) == 1) & (core == 0)).all()  # the grown ring is free
    human = tmp_path / "reviewed"  # a person's mask is exact: no ring is taken from it
    human.mkdir()
    cv2.imwrite(str(human / "s00.png"), grow(core, 1, 2))
    reviewed = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), reviewed_dir=human, margin=2)[0]["mask"]
    assert ((reviewed.numpy() == 1) == (grow(core, 1, 2) == 1)).all()


def test_multi_class_mask_missing_one_labelled_class_is_ignored(tmp_path: Path):
    rows, masks, _ = make_data(tmp_path, n_defect=1, n_ok=0)
    both = [dataclasses.replace(rows[0], labels=("scratch", "stain"))]
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[2:6, 2:6] = 1  # scratch found, stain missed
    cv2.imwrite(str(masks / "s00.png"), mask)
    classes, size = ["scratch", "stain"], (SIZE, SIZE)
    assert (PseudoMaskDataset(both, masks, classes, size, missed_defects="ignore")[0]["mask"] == 255).all()
    mask[10:14, 10:14] = 2
    cv2.imwrite(str(masks / "s00.png"), mask)
    assert (PseudoMaskDataset(both, masks, classes, size, missed_defects="ignore")[0]["mask"] == 2).sum() == 16


def test_missing_mis_sized_or_out_of_range_pseudo_mask_is_a_data_error(tmp_path: Path):
    rows, masks, _ = make_data(tmp_path, n_defect=2, n_ok=1)
    (masks / "s01.png").unlink()
    with pytest.raises(DataError, match=r"s01\.png.*pseudo-labels"):
        PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE))
    cv2.imwrite(str(masks / "s01.png"), np.zeros((SIZE, SIZE + 1), np.uint8))
    with pytest.raises(DataError, match=r"s01\.png.*pseudo-labels"):
        PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE))[1]
    cv2.imwrite(str(masks / "s01.png"), np.full((SIZE, SIZE), 7, np.uint8))  # class 7 of a 1-class problem
    with pytest.raises(DataError, match=r"s01\.png.*\[7\]"):
        PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE))[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[TrainRow], dict]:
    root = tmp_path_factory.mktemp("seg")
    rows, masks, truth = make_data(root, n_defect=8, n_ok=4)
    SegmenterTrainer(
        rcfg(epochs=20), SegmenterData(rows, masks, ["defect"], 1), root / "out", device="cpu", echo=lambda *_: None
    ).fit()
    return root / "out", rows, truth


def test_training_lowers_the_loss_and_localises_the_rectangle(trained):
    out, rows, truth = trained
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,loss,loss_seg,loss_cls,loss_kd,") and len(lines) == 21
    loss = [float(r.split(",")[2]) for r in lines[1:]]
    assert np.mean(loss[-3:]) < 0.7 * np.mean(loss[:3]), loss
    model, meta = load_segmenter(out)
    assert meta["classes"] == ["defect"] and meta["in_chans"] == 1 and meta["backbone"]["weights"] is None
    ious, chance = [], []
    predictor = torch_predictor(model, meta)
    for row in rows:
        gt = truth[row.id]
        if not gt.any():
            continue
        pred = predictor([cv2.imread(str(row.path), cv2.IMREAD_UNCHANGED)])[0].probs.argmax(0) == 1
        ious.append((pred & gt).sum() / max(1, (pred | gt).sum()))
        chance.append(gt.mean())  # IoU of predicting every pixel defective
    assert np.mean(ious) > 2 * np.mean(chance), (ious, chance)


def test_save_load_roundtrip_gives_identical_outputs(trained):
    out, rows, _ = trained
    a, meta = load_segmenter(out)
    b, _ = load_segmenter(out)
    images = [cv2.imread(str(r.path), cv2.IMREAD_UNCHANGED) for r in rows[:3]]
    pa, pb = torch_predictor(a, meta)(images), torch_predictor(b, meta)(images)
    for x, y in zip(pa, pb, strict=True):
        assert np.array_equal(x.probs, y.probs) and np.array_equal(x.cls_probs, y.cls_probs)
    single = torch_predictor(a, meta)([images[1]])[0]
    assert np.allclose(single.probs, pa[1].probs, atol=1e-5)  # batching does not change a prediction
    x = torch.randn(1, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(a(x).mask_logits, b(x).mask_logits)


def test_resume_continues_at_the_right_epoch_with_identical_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rows, masks, _ = make_data(tmp_path / "data", n_defect=4, n_ok=2)
    cfg = rcfg(epochs=3)

    def trainer(name: str, echo=lambda *_: None) -> SegmenterTrainer:
        return SegmenterTrainer(
            cfg, SegmenterData(rows, masks, ["defect"], 1), tmp_path / name, seed=1, device="cpu", echo=echo
        )

    trainer("straight").fit()
    original = SegmenterTrainer.train_epoch
    calls = {"n": 0}

    def dies_in_epoch_two(self, epoch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed during the second epoch
        return original(self, epoch)

    monkeypatch.setattr(SegmenterTrainer, "train_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        trainer("resumed").fit()
    monkeypatch.setattr(SegmenterTrainer, "train_epoch", original)
    assert not (tmp_path / "resumed" / "segmenter.safetensors").exists()
    log: list[str] = []
    trainer("resumed", log.append).fit()
    assert "resuming after epoch 1" in log
    a = load_file(tmp_path / "straight" / "segmenter.safetensors")
    b = load_file(tmp_path / "resumed" / "segmenter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert ca["epoch"] == cb["epoch"] == 2
    assert len((tmp_path / "resumed" / "metrics.csv").read_text().splitlines()) == 4


def test_reviewed_images_are_drawn_reviewed_repeat_times_as_often(tmp_path: Path):
    """A person's masks weigh more through the sampler: the epoch keeps its length, the reviewed image recurs."""
    rows, masks, _ = make_data(tmp_path, n_defect=6, n_ok=6)
    human = tmp_path / "reviewed"
    human.mkdir()
    cv2.imwrite(str(human / "s01.png"), cv2.imread(str(masks / "s01.png"), cv2.IMREAD_UNCHANGED))
    counts = {}
    for repeat in (1, 5):
        trainer = SegmenterTrainer(rcfg(epochs=1, balance="sampler"), SegmenterData(rows, masks, ["defect"], 1, reviewed_dir=human, reviewed_repeat=repeat), tmp_path / f"out{repeat}", device="cpu", echo=lambda *_: None)  # fmt: skip
        drawn = []
        for epoch in range(30):
            trainer.sampler.set_epoch(epoch)
            idx = trainer.sampler.epoch_indices()
            assert len(idx) == len(rows)
            drawn.append(idx)
        counts[repeat] = np.bincount(np.concatenate(drawn), minlength=len(rows))
    others = [0, 2, 3, 4, 5]  # the other defective images
    assert abs(counts[1][1] / counts[1][others].mean() - 1) < 0.3
    assert 3.5 < counts[5][1] / counts[5][others].mean() < 6.5
