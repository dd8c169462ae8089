"""Paired bootstrap intervals: is one setting or model better than another on the same few images?

A review's handful of masks (`wsss tune`) and a round's validation images (`wsss review-round`) are too few for a
difference of means to speak for itself: a change is adopted only when the interval of its gain lies above zero.
Both use this one rule, so a setting and a fine-tuned model face the same bar.
"""

from __future__ import annotations

import numpy as np

from wsss.evaluation.metrics import SegAccumulator

RESAMPLES = 2000  # bootstrap resamples of the images
LEVEL = 0.90  # the interval's coverage: a change is adopted when the lower end of its gain is above zero
SEED = 0  # fixed, so the same figures always give the same decision


def paired_gain(
    diff: np.ndarray, strata: np.ndarray | None = None, level: float = LEVEL, resamples: int = RESAMPLES
) -> tuple[float, float, float]:
    """The mean of per-image differences ``diff`` (new - old, same images) and its ``level`` bootstrap interval,
    the images resampled with replacement; ``(0, 0, 0)`` for no images (no evidence of a gain).

    With ``strata`` (a label per image), the gain is the mean of the strata's mean gains and each stratum is
    resampled on its own: each kind of evidence counts once, however many images it has (a review's ten masks
    beside a hundred pseudo-masks)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return 0.0, 0.0, 0.0
    strata = np.zeros(diff.size, np.int64) if strata is None else np.asarray(strata)
    rng = np.random.default_rng(SEED)
    point, means = [], []
    for label in np.unique(strata):
        part = diff[strata == label]
        point.append(part.mean())
        means.append(part[rng.integers(0, part.size, size=(resamples, part.size))].mean(axis=1))
    tail = (1 - level) / 2
    low, high = np.quantile(np.mean(means, axis=0), [tail, 1 - tail])
    return float(np.mean(point)), float(low), float(high)


def segmentation_gain(
    new: SegAccumulator, old: SegAccumulator, strata: np.ndarray | None = None
) -> tuple[float, float, float]:
    """The per-image IoU gain of ``new`` over ``old``, two predictions of the same images against the same
    references, with its interval (:func:`paired_gain`, by ``strata`` if given). Images are compared where either
    prediction or the reference has a defect pixel, as Seg_mIoU counts them: a false alarm scores 0, a correct
    empty prediction 1."""
    if len(new) != len(old):
        raise ValueError(f"the two accumulators hold {len(new)} and {len(old)} images: compare the same images")
    involved = (np.asarray(new.unions) > 0) | (np.asarray(old.unions) > 0)
    return paired_gain((new.ious() - old.ious())[involved], None if strata is None else np.asarray(strata)[involved])
