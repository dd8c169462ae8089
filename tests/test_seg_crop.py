"""Training crops of the segmenter (`segmenter.crop`): a larger input_size trained at a crop's cost."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_segmenter import SIZE, make_data, rcfg

from wsss.errors import ConfigError
from wsss.train.segmenter import SegmenterTrainer
from wsss.train.segmenter_data import PseudoMaskDataset, SegmenterData

CROP = (16, 12)


def crop_set(tmp_path: Path, **kw) -> tuple[PseudoMaskDataset, list, Path]:
    rows, masks, _ = make_data(tmp_path, n_defect=4, n_ok=3)
    ds = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), seed=5, crop=CROP, **kw)
    return ds, rows, masks


def test_a_defective_crop_holds_a_defect_pixel_and_keeps_its_label(tmp_path: Path):
    ds, rows, _ = crop_set(tmp_path)
    positions = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i, r in enumerate(rows):
            item = ds[i]
            mask = item["mask"].numpy()
            assert tuple(item["image"].shape[1:]) == CROP and mask.shape == CROP
            if r.labels:
                assert ((mask > 0) & (mask != 255)).any() and float(item["target"][0]) == 1.0
            else:
                assert not mask.any() and float(item["target"][0]) == 0.0
            positions.add((i, item["image"].numpy().tobytes()))
    assert len(positions) > len(rows) * 3  # the windows move from epoch to epoch


def test_crops_are_windows_of_the_whole_sample_and_deterministic(tmp_path: Path):
    ds, rows, _ = crop_set(tmp_path)
    whole = PseudoMaskDataset(rows, ds.masks_dir, ["defect"], (SIZE, SIZE), seed=5)
    ds.set_epoch(2)
    a, b = ds[1], ds[1]
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    full_img, full_mask = whole[1]["image"].numpy()[0], whole[1]["mask"].numpy()
    win_img, win_mask = a["image"].numpy()[0], a["mask"].numpy()
    hits = [
        (y, x)
        for y in range(SIZE - CROP[0] + 1)
        for x in range(SIZE - CROP[1] + 1)
        if np.array_equal(full_img[y : y + CROP[0], x : x + CROP[1]], win_img)
        and np.array_equal(full_mask[y : y + CROP[0], x : x + CROP[1]], win_mask)
    ]
    assert hits


def test_a_class_the_window_leaves_out_is_dropped_from_the_target(tmp_path: Path):
    rows, masks, _ = make_data(tmp_path, n_defect=1, n_ok=0)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[1:3, 1:3] = 1  # class 1 in one corner, class 2 in the opposite one: no 16 x 12 window holds both
    mask[29:31, 29:31] = 2
    cv2.imwrite(str(masks / f"{rows[0].id}.png"), mask)
    rows[0] = dataclasses.replace(rows[0], labels=("a", "b"))
    ds = PseudoMaskDataset(rows, masks, ["a", "b"], (SIZE, SIZE), seed=1, crop=CROP)
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        item = ds[0]
        present = {int(v) for v in np.unique(item["mask"].numpy()) if v}
        assert present in ({1}, {2})
        assert item["target"].tolist() == [float(1 in present), float(2 in present)]
        seen |= present
    assert seen == {1, 2}


def test_a_crop_larger_than_the_input_is_refused_with_its_key(tmp_path: Path):
    rows, masks, _ = make_data(tmp_path, n_defect=2, n_ok=2)
    with pytest.raises(ConfigError, match=r"segmenter\.crop"):
        SegmenterTrainer(
            rcfg(crop=[SIZE + 8, 8]), SegmenterData(rows, masks, ["defect"], 1), tmp_path / "out", section="segmenter"
        )
    with pytest.raises(ValueError, match="larger than input_size"):
        PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), crop=(SIZE, SIZE + 1))


def test_a_segmenter_trained_on_crops_predicts_whole_images_at_input_size(tmp_path: Path):
    from wsss.inference import torch_predictor
    from wsss.models.segmenter import load_segmenter

    rows, masks, _ = make_data(tmp_path, n_defect=4, n_ok=2)
    out = tmp_path / "out"
    SegmenterTrainer(rcfg(epochs=1, crop=[16, 16]), SegmenterData(rows, masks, ["defect"], 1), out, device="cpu").fit()
    model, meta = load_segmenter(out)
    assert meta["input_size"] == [SIZE, SIZE]
    image = cv2.imread(str(rows[0].path), cv2.IMREAD_UNCHANGED)
    pred = torch_predictor(model, meta)([image])[0]
    assert pred.labels.shape == image.shape and pred.probs.shape == (2, *image.shape)


def test_padded_inputs_crop_windows_that_hold_the_image(tmp_path: Path):
    """`dataset.fit: pad`: square parts in an input four times as wide sit between wide bands of padding (ignore);
    every window still holds pixels of the part, defect-free ones included."""
    rows, masks, _ = make_data(tmp_path, n_defect=2, n_ok=3)
    ds = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, 4 * SIZE), seed=5, crop=CROP, fit="pad")
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(len(rows)):
            mask = ds[i]["mask"].numpy()
            assert mask.shape == CROP and (mask != 255).any(), (epoch, i)
