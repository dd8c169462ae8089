"""The ceiling ladder's oracles (bench/ceiling.py) on toy maps whose best answer is known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from wsss.config import PseudoConfig

spec = importlib.util.spec_from_file_location("ceiling", Path(__file__).parents[1] / "bench" / "ceiling.py")
ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ceiling)


def toy() -> tuple[np.ndarray, np.ndarray]:
    """A CAM with a plateau at 0.8 over the defect, a halo at 0.3 around it and 0.05 elsewhere; the defect mask."""
    gt = np.zeros((40, 60), bool)
    gt[15:25, 20:40] = True
    cam = np.full((40, 60), 0.05, np.float32)
    cam[10:30, 15:45] = 0.3
    cam[gt] = 0.8
    return cam[None], gt


def test_the_oracle_threshold_recovers_the_known_mask():
    cam, gt = toy()
    assert ceiling.oracle_threshold(cam, gt) == 1.0  # any fraction in (0.375, 1] of the peak cuts the plateau
    halo = (cam[0] == np.float32(0.3)) & ~gt  # a threshold that keeps the halo keeps the plateau inside it too
    assert ceiling.oracle_threshold(cam, halo) == pytest.approx(halo.sum() / (halo | gt).sum())
    assert ceiling.oracle_threshold(np.zeros_like(cam), gt) == 0.0  # a gated (all-zero) CAM finds nothing


def test_the_crf_oracle_is_at_least_each_setting_of_its_grid():
    cam, gt = toy()
    image = np.where(gt, 200, 60).astype(np.uint8)
    pseudo = PseudoConfig()
    best = ceiling.oracle_crf(image, cam, gt, pseudo, called=True)
    assert best == pytest.approx(1.0, abs=0.02)
    assert ceiling.oracle_crf(image, cam, gt, pseudo, called=False) == 0.0  # called OK: an empty mask


def test_through_keeps_what_a_smaller_input_resolves_and_loses_a_thin_line():
    block = np.zeros((64, 32), bool)
    block[16:48, 8:24] = True
    assert ceiling.iou(ceiling.through(block, [32, 16]), block) == 1.0
    line = np.zeros((64, 32), bool)
    line[8:56, 15] = True  # one pixel wide: a quarter of a pixel at a quarter of the size
    assert not ceiling.through(line, [16, 8]).any()
    assert ceiling.through(line, [64, 32]).sum() == line.sum()
