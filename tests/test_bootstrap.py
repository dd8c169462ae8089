"""Paired bootstrap intervals: the one rule by which `wsss tune` adopts a setting and a review round its weights."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.evaluation.bootstrap import paired_gain, segmentation_gain
from wsss.evaluation.metrics import SegAccumulator


def test_a_gain_on_every_image_has_an_interval_above_zero_and_a_mixed_one_does_not():
    gain, low, high = paired_gain(np.array([0.10, 0.20, 0.05, 0.15, 0.10]))
    assert gain == pytest.approx(0.12) and 0 < low <= gain <= high <= 0.20
    gain, low, high = paired_gain(np.array([0.30, -0.25, 0.20, -0.20, 0.05]))
    assert gain == pytest.approx(0.02) and low < 0 < high
    assert paired_gain(np.array([])) == (0.0, 0.0, 0.0)  # no images, no evidence
    assert paired_gain(np.array([0.3, -0.1, 0.2])) == paired_gain(np.array([0.3, -0.1, 0.2]))  # seeded: repeatable


def test_strata_count_once_each_however_many_images_they_have():
    """Ten reviewed masks gaining much beside a hundred pseudo-masks losing a little: pooled, the pseudo-masks
    outvote the reviewer; by strata each kind of reference counts once."""
    rng = np.random.default_rng(1)
    diff = np.concatenate([rng.uniform(0.2, 0.4, 10), rng.uniform(-0.1, 0.02, 100)])
    strata = np.repeat([1, 0], [10, 100])
    pooled, low, _ = paired_gain(diff)
    assert low < 0 and pooled < 0.02
    gain, low, high = paired_gain(diff, strata)
    assert gain == pytest.approx((diff[:10].mean() + diff[10:].mean()) / 2) and 0 < low < gain < high
    assert paired_gain(diff, np.zeros(110)) == paired_gain(diff)  # one stratum is the plain interval


def counts(pairs: list[tuple[int, int]]) -> SegAccumulator:
    acc = SegAccumulator()
    for inter, union in pairs:
        acc.add_counts(inter, union, union, inter)
    return acc


def test_segmentation_gain_pairs_the_images_and_skips_those_empty_in_both():
    old = counts([(5, 10), (2, 10), (0, 0), (0, 0), (4, 8)])
    new = counts([(8, 10), (6, 10), (0, 0), (0, 0), (6, 8)])
    gain, low, _ = segmentation_gain(new, old)
    assert gain == pytest.approx((0.3 + 0.4 + 0.25) / 3) and low > 0  # the two empty images are not averaged
    # a false alarm on an image the old prediction left correctly empty counts 0 against 1
    gain, _, high = segmentation_gain(counts([(5, 10), (0, 6)]), counts([(5, 10), (0, 0)]))
    assert gain == pytest.approx(-0.5) and high <= 0
    with pytest.raises(ValueError, match="same images"):
        segmentation_gain(counts([(1, 2)]), counts([(1, 2), (1, 2)]))
