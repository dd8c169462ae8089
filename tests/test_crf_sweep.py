"""The pseudo-labelling sweep's anomaly-in-the-CAM unary (bench/crf_sweep.py) on toy maps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location("crf_sweep", Path(__file__).parents[1] / "bench" / "crf_sweep.py")
crf_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(crf_sweep)


def test_region_unary_keeps_the_anomaly_map_inside_the_cams_support_rescaled_to_its_peak_there():
    cam = np.zeros((1, 40, 40), np.float32)
    cam[0, 10:20, 10:20] = 1.0
    anomaly = np.full((40, 40), 0.2, np.float32)
    anomaly[14:16, 14:16] = 0.5  # the defect, inside the support
    anomaly[35:38, 35:38] = 0.9  # stronger, but where the classifier does not look
    out = crf_sweep.region_unary(cam, anomaly, start=0.5)
    assert out.shape == cam.shape
    assert out[0, 14, 14] == 1.0  # the support's peak is 1: a per-image threshold
    assert out[0, 36, 36] == 0.0 and out[0, 0, 0] == 0.0  # nothing outside the dilated support
    assert np.isclose(out[0, 10, 10], 0.4)  # 0.2 / 0.5 inside it
    assert out[0, 9, 15] > 0  # dilated by 5% of the shorter side (2 px)


def test_region_unary_leaves_an_empty_cam_empty():
    out = crf_sweep.region_unary(np.zeros((1, 8, 8), np.float32), np.ones((8, 8), np.float32), start=0.3)
    assert not out.any()
