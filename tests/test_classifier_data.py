"""Augmentation and the classifier's torch dataset, on the tiny synthetic prepared run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wsss.config import AugmentConfig
from wsss.data.classifier_data import ImageDataset, binary_targets, label_matrix, multi_hot, target_classes
from wsss.data.index import TrainRow, read_dataset_info, read_eval_index, read_train_index
from wsss.data.transforms import Augment, resize, to_image, to_tensor
from wsss.errors import DataError

STRONG = AugmentConfig(blur_prob=0.5)


def _asym(h: int = 32, w: int = 32, c: int | None = None) -> np.ndarray:
    img = np.zeros((h, w), np.uint8)
    img[2:10, 3:7] = 200
    img[h // 2 :, w // 2 :] = 90
    return img if c is None else np.repeat(img[..., None], c, axis=2)


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (32, 32, 3), (32, 32, 1)])
def test_augment_keeps_shape_dtype_and_is_deterministic(shape):
    img = _asym(shape[0], shape[1], shape[2] if len(shape) == 3 else None)
    aug = Augment(STRONG)
    a = aug(img, np.random.default_rng(3))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, aug(img, np.random.default_rng(3)))
    assert any(not np.array_equal(a, aug(img, np.random.default_rng(s))) for s in range(4, 8))


def test_flips_change_image_and_rot90_only_square():
    img = _asym(24, 40)
    geo = AugmentConfig(rot90=False, affine_degrees=0, affine_scale=0, affine_translate=0)
    geo = replace(geo, brightness=0, contrast=0, gamma=0, blur_prob=0)
    outs = [Augment(geo)(img, np.random.default_rng(s)) for s in range(16)]
    variants = {o.tobytes() for o in outs}
    assert len(variants) == 4  # identity, h-flip, v-flip, both
    assert {img[:, ::-1].tobytes(), img[::-1].tobytes()} <= variants
    rot = Augment(replace(geo, flips=False, rot90=True))
    assert all(np.array_equal(rot(img, np.random.default_rng(s)), img) for s in range(8))  # non-square: skipped
    sq = _asym(32, 32)
    assert len({rot(sq, np.random.default_rng(s)).tobytes() for s in range(16)}) == 4


def test_resize_and_tensor_roundtrip():
    img = _asym(40, 60, 3)
    assert resize(img, (20, 30)).shape == (20, 30, 3)
    assert resize(_asym(10, 12), (40, 48)).shape == (40, 48)
    t = to_tensor(img)
    assert t.shape == (3, 40, 60) and t.dtype == torch.float32
    assert t.min() >= -2 and t.max() <= 2
    assert np.array_equal(to_image(t), img)
    assert np.array_equal(to_image(to_tensor(_asym())), _asym())


@pytest.fixture(scope="module")
def index(prepared_run: Path) -> Path:
    return prepared_run / "prepare" / "index.csv"


@pytest.mark.parametrize("in_chans", [1, 3])
def test_dataset_shapes_and_targets(index, in_chans):
    rows = read_train_index(index)
    classes = list(read_dataset_info(index).classes)
    ds = ImageDataset(rows, classes, (32, 48), in_chans=in_chans)
    item = ds[0]
    assert item["image"].shape == (in_chans, 32, 48) and item["image"].dtype == torch.float32
    assert item["index"] == 0 and item["target"].shape == (len(classes),)
    t = ds.targets()
    assert t.shape == (len(rows), len(classes))
    for r, row in zip(rows, t):
        assert {c for c, v in zip(classes, row) if v} == set(r.labels)
    binary = ImageDataset(rows, target_classes(classes, binary=True), (32, 32), in_chans=in_chans)
    assert np.array_equal(binary.targets()[:, 0], [float(r.defective) for r in rows])
    assert binary.targets()[:, 0].sum() == 12
    assert torch.equal(binary[5]["target"], torch.from_numpy(binary.targets()[5]))


def test_label_helpers():
    a = TrainRow("a", Path("a.png"), ("crack",), "train", "a", -1)
    b = TrainRow("b", Path("b.png"), (), "train", "b", -1)
    assert binary_targets([a, b]).tolist() == [[1.0], [0.0]]
    assert multi_hot([a, b], ["blob", "crack"]).tolist() == [[0, 1], [0, 0]]
    assert label_matrix([a, b], ["defect"]).tolist() == [[1.0], [0.0]]
    with pytest.raises(ValueError, match="crack"):
        multi_hot([a], ["blob"])


def test_augmentation_reproducible_per_seed_epoch_index(index):
    rows = read_train_index(index)[:4]
    ds = ImageDataset(rows, ["defect"], (32, 32), augment=Augment(STRONG), seed=7)
    first = ds[2]["image"]
    assert torch.equal(first, ds[2]["image"])
    assert torch.equal(first, ImageDataset(rows, ["defect"], (32, 32), augment=Augment(STRONG), seed=7)[2]["image"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[2]["image"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[2]["image"])


def test_dataloader_workers_follow_set_epoch(index):
    rows = read_train_index(index)[:6]
    ds = ImageDataset(rows, ["defect"], (32, 32), augment=Augment(STRONG), seed=1)
    expected = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        expected.append(torch.stack([ds[i]["image"] for i in range(6)]))
    loader = DataLoader(ds, batch_size=3, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        batches = list(loader)
        assert torch.equal(torch.cat([b["image"] for b in batches]), expected[epoch])
        assert torch.cat([b["index"] for b in batches]).tolist() == list(range(6))
        assert batches[0]["target"].shape == (3, 1)


def test_eval_rows_refused_and_read_errors_name_the_file(index, tmp_path):
    with pytest.raises(TypeError, match="TrainRow"):
        ImageDataset(read_eval_index(index), ["defect"], (32, 32))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    row = replace(read_train_index(index)[0], path=bad)
    with pytest.raises(DataError, match="broken.png"):
        ImageDataset([row], ["defect"], (32, 32))[0]


def test_preload_changes_nothing_but_speed(index):
    rows = read_train_index(index)[:6]
    plain = ImageDataset(rows, ["defect"], (24, 40), augment=Augment(STRONG), seed=3)
    cached = ImageDataset(rows, ["defect"], (24, 40), augment=Augment(STRONG), seed=3)
    assert cached.cache_bytes() == 6 * 24 * 40
    cached.preload(threads=2)
    for ds in (plain, cached):
        ds.set_epoch(2)
    for i in range(len(rows)):
        assert torch.equal(plain[i]["image"], cached[i]["image"])
    cached.rows[0] = replace(rows[0], path=Path("/nonexistent.png"))  # served from memory now
    assert torch.equal(cached[0]["image"], plain[0]["image"])
