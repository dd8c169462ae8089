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
    with pytest.raises(SystemExit, match="--pixel"):
        gate_sweep.main([str(tmp_path), "--pixel", "0"])


def test_the_pixel_cut_at_one_half_is_the_argmax_and_a_lower_cut_widens_the_mask():
    from wsss.evaluation.metrics import quantize_probs

    p = np.array([[0.2, 0.3, 0.49, 0.5, 0.51, 0.9]])
    levels = [quantize_probs(p)]
    assert gate_sweep.pixel_masks(levels, 0.5)[0].tolist() == [[False, False, False, True, True, True]]
    assert gate_sweep.pixel_masks(levels, 0.3)[0].tolist() == [[False, True, True, True, True, True]]
    assert gate_sweep.pixel_masks(levels, 1.0)[0].tolist() == [[False] * 6]


def _fake_run(tmp_path: Path, with_masks: bool) -> Path:
    """A finished run of three test images (OK, defective with a mask, defective without one), stage files only."""
    import cv2

    from wsss.data.index import DatasetInfo, EvalRow, write_dataset_info, write_index
    from wsss.inference import write_prob_png

    run = tmp_path / "run"
    stage = run / "train-segmenter"
    (stage / "probs").mkdir(parents=True)
    (run / "prepare").mkdir()
    (stage / "segmenter.json").write_text('{"classes": ["defect"]}')
    gt = (_box(2, 6) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gt.png"), gt)
    rows = []
    for sid, labels, mask in (("ok", (), None), ("def", ("defect",), "gt.png"), ("nomask", ("defect",), None)):
        mask = mask if with_masks else None
        rows.append(EvalRow(sid, tmp_path / f"{sid}.png", labels, "val", sid, 0, tmp_path / mask if mask else None))
        write_prob_png(stage / "probs" / f"{sid}.png", _box(2, 6).astype(np.float32))  # a mask on every image
    (stage / "scores.csv").write_text("id,score\nok,0.1\ndef,0.9\nnomask,0.9\n")
    write_index(run / "prepare" / "index.csv", rows)
    write_dataset_info(run / "prepare" / "dataset.json", DatasetInfo("folder", ("defect",), 128, channels=3))
    return run


def test_a_defective_image_without_a_mask_is_left_out_not_counted_as_a_false_alarm(tmp_path):
    levels, scores, gts = gate_sweep.load_run(_fake_run(tmp_path, with_masks=True), "val")
    assert scores == [0.1, 0.9]  # the OK image and the defective one with a mask
    assert not gts[0].any() and (gts[1] == _box(2, 6)).all()
    out = gate_sweep.gate_metrics(gate_sweep.pixel_masks(levels, 0.5), scores, gts, [0.05, 0.5])
    assert out[0.05]["false_alarms"] == 1 and out[0.5]["false_alarms"] == 0
    assert out[0.5]["miou_def"] == pytest.approx(1.0)


def test_a_split_without_ground_truth_masks_is_refused_naming_the_index(tmp_path):
    with pytest.raises(SystemExit, match=r"index\.csv: no defective image of the val split has a ground-truth mask"):
        gate_sweep.load_run(_fake_run(tmp_path, with_masks=False), "val")
