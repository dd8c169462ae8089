"""The segmenter gate sweep (bench/gate_sweep.py) on toy masks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("gate_sweep", Path(__file__).parents[1] / "bench" / "gate_sweep.py")
gate_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gate_sweep)


def _box(r0: int, r1: int) -> np.ndarray:
    m = np.zeros((8, 8), bool)
    m[r0:r1, 2:6] = True
    return m


def test_a_lower_gate_keeps_weakly_scored_defects_and_lets_masks_onto_ok_images():
    gt_def, gt_ok = _box(2, 6), np.zeros((8, 8), bool)
    masks = [_box(2, 6), _box(3, 6), _box(0, 2)]  # exact, 3/4 of the defect, a false alarm on an OK image
    scores = [0.9, 0.35, 0.25]
    out = gate_sweep.gate_metrics(masks, scores, [gt_def, gt_def, gt_ok], [0.2, 0.3, 0.5])
    # gate 0.5: the second defect is switched off (IoU 0), the OK image stays clean
    assert out[0.5]["miou_def"] == pytest.approx(0.5)
    assert out[0.5]["seg_miou"] == pytest.approx(0.5)
    assert out[0.5]["false_alarms"] == 0
    # gate 0.3: the second defect's mask is kept (IoU 0.75)
    assert out[0.3]["miou_def"] == pytest.approx(0.875)
    assert out[0.3]["false_alarms"] == 0
    # gate 0.2: the OK image's mask passes too: a false alarm that Seg_mIoU counts as 0, mIoU_def does not see
    assert out[0.2]["miou_def"] == pytest.approx(0.875)
    assert out[0.2]["false_alarms"] == 1
    assert out[0.2]["seg_miou"] == pytest.approx((1 + 0.75 + 0) / 3)
    assert out[0.5]["seg_recall@0.5"] == pytest.approx(0.5)


def test_an_image_scored_exactly_at_the_gate_keeps_its_mask():
    out = gate_sweep.gate_metrics([_box(2, 6)], [0.5], [_box(2, 6)], [0.5])
    assert out[0.5]["miou_def"] == pytest.approx(1.0)


def test_bad_thresholds_are_refused_naming_the_option(tmp_path):
    with pytest.raises(SystemExit, match="--thresholds"):
        gate_sweep.main([str(tmp_path), "--thresholds", "0.5,1.5"])
