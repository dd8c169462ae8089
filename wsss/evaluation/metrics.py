"""METHOD.md section 8 metrics, in plain numpy (no sklearn).

Undefined values are ``float("nan")`` and reports print them as ``n/a``:

- :func:`average_precision` is nan without positives (recall is undefined); with positives only it is 1.0.
- :func:`auroc` is nan unless both classes are present.
- :func:`threshold_stats`: ``fpr`` is nan without negatives, ``fnr`` nan without positives.
- :class:`SegAccumulator`: each mean is nan when the set it averages over is empty (e.g. mIoU_def on a split
  without defective images); pooled IoU is nan when no image has a ground-truth or predicted defect pixel.

Pixel AP (AP_loc) and pixel AUROC of soft defect-probability maps are streamed through per-level histograms
(:class:`PixelAccumulator`): probabilities are quantised to ``round(p * 65535)``, the value a 16-bit PNG stores, and
pixels on the same level are ties, so the result equals :func:`average_precision` / :func:`auroc` on the concatenated
quantised pixels, in memory that does not grow with the number of pixels. :class:`PixelAurocAccumulator` bins any
score range into equal-width bins instead (pixel AUROC of unbounded maps, with a bound on the binning error).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

NAN = float("nan")
SEG_RECALL_THRESHOLDS = (0.1, 0.5)


def _check_pair(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but scores has {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain nan or inf")
    return y, s


def _ranked_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true/false positives at each distinct score, highest score first (ties form one step)."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # index of the last element of each tie group
    tps = np.cumsum(y)[last_of_group]
    fps = (last_of_group + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64)


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """AP as sklearn's ``average_precision_score``: sum over thresholds of (R_k - R_{k-1}) * P_k.

    Equal scores are one threshold (no interpolation), so the result does not depend on the order of ties.
    Returns nan when there is no positive, 1.0 when every sample is positive.
    """
    y, s = _check_pair(y_true, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return NAN
    tps, fps = _ranked_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s`` ascending, tied values sharing the mean of their ranks."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (trapezoid, tied scores grouped) = Mann-Whitney U / (n_pos * n_neg).

    A (positive, negative) pair counts 1 when the positive scores higher, 1/2 when tied. Returns nan unless
    both classes are present.
    """
    y, s = _check_pair(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_stats(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float | int]:
    """Confusion counts and rates of the decision ``score >= threshold`` (positive = defective).

    Returns ``accuracy, fpr, fnr, tp, fp, tn, fn``; rates are nan when their denominator is 0.
    """
    y, s = _check_pair(y_true, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    n = tp + fp + tn + fn
    return {
        "accuracy": (tp + tn) / n if n else NAN,
        "fpr": fp / (fp + tn) if fp + tn else NAN,
        "fnr": fn / (fn + tp) if fn + tp else NAN,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def iou_from_counts(inter: int, union: int) -> float:
    """IoU from pixel counts; an empty union (both masks empty) is 1.0 by convention."""
    return inter / union if union else 1.0


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P n G| / |P u G| of two boolean masks; 1.0 when both are empty (a correct "nothing here").

    Seg_mIoU and mIoU_def never average such images, so the convention only shows in per-image tables.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    p, g = pred.astype(bool), gt.astype(bool)
    return iou_from_counts(int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g)))


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else NAN


@dataclass
class SegAccumulator:
    """Streams (pred, gt) mask pairs and keeps four integers per image, never the masks.

    Metrics (METHOD.md section 8), with G_i the ground truth and P_i the gated prediction:

    - ``miou_def``: mean IoU_i over images with G_i non-empty (nan if none).
    - ``pooled_iou``: sum |P n G| / sum |P u G| over all images (nan if the sum of unions is 0).
    - ``seg_miou``: mean IoU_i over images where G_i or P_i is non-empty; false alarms count 0 (nan if none).
    - ``seg_recall@t``: fraction of images with G_i non-empty whose IoU_i >= t (nan if none).

    "Defective" here means a non-empty ground-truth mask, so mIoU_def and Seg_Recall average the same images.
    """

    inters: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)
    gt_areas: list[int] = field(default_factory=list)
    pred_areas: list[int] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """Add one image's boolean masks (same shape); returns its IoU_i."""
        if pred.shape != gt.shape:
            raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
        p, g = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
        return self.add_counts(
            int(np.count_nonzero(p & g)),
            int(np.count_nonzero(p | g)),
            int(np.count_nonzero(g)),
            int(np.count_nonzero(p)),
        )

    def add_counts(self, inter: int, union: int, gt_area: int, pred_area: int) -> float:
        """Add one image from its pixel counts; returns its IoU_i."""
        self.inters.append(inter)
        self.unions.append(union)
        self.gt_areas.append(gt_area)
        self.pred_areas.append(pred_area)
        return iou_from_counts(inter, union)

    def __len__(self) -> int:
        return len(self.inters)

    def _ious(self) -> np.ndarray:
        i, u = np.asarray(self.inters, dtype=np.float64), np.asarray(self.unions, dtype=np.float64)
        return np.divide(i, u, out=np.ones_like(i), where=u > 0)

    def _defective(self) -> np.ndarray:
        return np.asarray(self.gt_areas, dtype=np.int64) > 0

    @property
    def n_defective(self) -> int:
        return int(self._defective().sum())

    def miou_def(self) -> float:
        return _mean(self._ious()[self._defective()])

    def pooled_iou(self) -> float:
        union = sum(self.unions)
        return sum(self.inters) / union if union else NAN

    def seg_miou(self) -> float:
        involved = self._defective() | (np.asarray(self.pred_areas, dtype=np.int64) > 0)
        return _mean(self._ious()[involved])

    def seg_recall(self, t: float) -> float:
        ious = self._ious()[self._defective()]
        return float(np.mean(ious >= t)) if ious.size else NAN

    def summary(self, thresholds: tuple[float, ...] = SEG_RECALL_THRESHOLDS) -> dict[str, float]:
        """All metrics by name: ``miou_def, pooled_iou, seg_miou, seg_recall@<t>``."""
        out = {"miou_def": self.miou_def(), "pooled_iou": self.pooled_iou(), "seg_miou": self.seg_miou()}
        for t in thresholds:
            out[f"seg_recall@{t:g}"] = self.seg_recall(t)
        return out


PROB_LEVELS = 65535  # soft maps: p in [0, 1] is stored as round(p * PROB_LEVELS), the value of a 16-bit PNG
# the stored level of p = 0.5 (it rounds up): ``levels >= PROB_HALF`` keeps every p > 0.5, the defect side of a
# two-way argmax, and ``levels < PROB_HALF`` every p < 0.5
PROB_HALF = (PROB_LEVELS + 1) // 2


def quantize_probs(probs: ArrayLike, levels: int = PROB_LEVELS) -> np.ndarray:
    """Probabilities in [0, 1] (clipped) as integer levels ``round(p * levels)``: uint16 for up to 65535 levels."""
    p = np.asarray(probs, dtype=np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain nan or inf")
    q = np.rint(np.clip(p, 0.0, 1.0) * levels)
    return q.astype(np.uint16 if levels <= np.iinfo(np.uint16).max else np.int64)


class _BinnedCounts:
    """Positive and negative pixel counts per score bin (bin index ascending = score ascending); pixels in one bin
    are ties. Subclasses say how a score becomes a bin."""

    pos: np.ndarray
    neg: np.ndarray

    @staticmethod
    def _scores(scores: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """``scores`` as float64 after checking shapes; pixels outside ``valid`` set to 0 (they may be nan)."""
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != np.shape(gt) or (valid is not None and np.shape(valid) != np.shape(gt)):
            raise ValueError(f"map/gt/valid shapes differ: {s.shape}, {np.shape(gt)}")
        if valid is not None:
            s = np.where(valid, s, 0.0)
        if not np.all(np.isfinite(s)):
            raise ValueError("score map contains nan or inf")
        return s

    def _add_bins(self, idx: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> None:
        if idx.shape != np.shape(gt) or (valid is not None and np.shape(valid) != np.shape(gt)):
            raise ValueError(f"map/gt/valid shapes differ: {idx.shape}, {np.shape(gt)}")
        g = np.asarray(gt, dtype=bool)
        if valid is not None:
            idx, g = idx[valid], g[valid]
        idx, g = idx.ravel(), g.ravel()
        n = self.pos.size
        self.pos += np.bincount(idx[g], minlength=n)[:n]
        self.neg += np.bincount(idx[~g], minlength=n)[:n]

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())

    def auroc(self) -> float:
        """AUROC with pixels of one bin tied (as :func:`auroc`); nan unless both classes were seen."""
        n_pos, n_neg = self.n_pos, self.n_neg
        if n_pos == 0 or n_neg == 0:
            return NAN
        neg_below = np.cumsum(self.neg) - self.neg  # negatives in strictly lower bins
        wins = np.sum(self.pos.astype(np.float64) * (neg_below + 0.5 * self.neg))
        return float(wins / (float(n_pos) * float(n_neg)))

    def average_precision(self) -> float:
        """AP with each non-empty bin one threshold (as :func:`average_precision`); nan without positives."""
        n_pos = self.n_pos
        if n_pos == 0:
            return NAN
        pos, neg = self.pos[::-1], self.neg[::-1]  # highest score first
        seen = (pos + neg) > 0
        tps = np.cumsum(pos)[seen].astype(np.float64)
        fps = np.cumsum(neg)[seen].astype(np.float64)
        d_recall = pos[seen] / n_pos
        return float(np.sum(d_recall * (tps / (tps + fps))))

    def max_binning_error(self) -> float:
        """Upper bound on |AUROC of the unbinned scores - :meth:`auroc`| (nan when the AUROC is undefined)."""
        n_pos, n_neg = self.n_pos, self.n_neg
        if n_pos == 0 or n_neg == 0:
            return NAN
        return float(np.sum(self.pos.astype(np.float64) * self.neg) / (2.0 * n_pos * n_neg))


@dataclass
class PixelAccumulator(_BinnedCounts):
    """Pixel AP (AP_loc) and pixel AUROC of soft defect probabilities over any number of images.

    Each probability is quantised to the level ``round(p * levels)`` (:func:`quantize_probs`); memory is two
    ``levels + 1`` histograms (1 MiB at the default 65535 levels). Both metrics are exact for the quantised scores:
    equal to :func:`average_precision` / :func:`auroc` on all pixels concatenated, ties being equal levels. A map
    stored as a 16-bit PNG (value = level) or an 8-bit PNG (value v = level 257 v) loses nothing more.
    """

    levels: int = PROB_LEVELS
    pos: np.ndarray = field(init=False, repr=False)
    neg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError(f"need levels >= 1, got {self.levels}")
        self.pos = np.zeros(self.levels + 1, dtype=np.int64)
        self.neg = np.zeros(self.levels + 1, dtype=np.int64)

    def add(self, probs: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image: ``probs`` (float in [0, 1], clipped), ``gt`` (bool), optional ``valid`` pixels to count."""
        self._add_bins(quantize_probs(self._scores(probs, gt, valid), self.levels), gt, valid)

    def add_levels(self, levels: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image already quantised: integer levels 0..``levels`` (e.g. a 16-bit PNG's values)."""
        q = np.asarray(levels)
        if not np.issubdtype(q.dtype, np.integer):
            raise ValueError(f"levels must be integers, got {q.dtype}")
        if q.size and (q.min() < 0 or q.max() > self.levels):
            raise ValueError(f"levels outside 0..{self.levels}: {q.min()}..{q.max()}")
        self._add_bins(q.astype(np.int64, copy=False), gt, valid)


@dataclass
class PixelAurocAccumulator(_BinnedCounts):
    """Pixel-level AUROC of a continuous map, streamed through fixed-bin histograms (memory: 2 x ``bins``).

    Scores are clipped to ``[lo, hi]`` and binned into ``bins`` equal bins; pixels in the same bin count as tied.
    The binning error is bounded: the exact AUROC differs from :meth:`value` by at most
    :meth:`max_binning_error` = sum_b pos_b * neg_b / (2 * n_pos * n_neg), which is 0 when no bin holds both
    classes; reports can print it beside the value. For probabilities in [0, 1] prefer :class:`PixelAccumulator`.
    """

    bins: int = 1000
    lo: float = 0.0
    hi: float = 1.0
    pos: np.ndarray = field(init=False, repr=False)
    neg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.bins < 1 or not self.hi > self.lo:
            raise ValueError(f"need bins >= 1 and hi > lo, got bins={self.bins}, range=[{self.lo}, {self.hi}]")
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)

    def add(self, score_map: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image: ``score_map`` (float), ``gt`` (bool), optional ``valid`` (bool) pixels to count."""
        s = self._scores(score_map, gt, valid)
        idx = ((np.clip(s, self.lo, self.hi) - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64)
        self._add_bins(np.minimum(idx, self.bins - 1), gt, valid)

    def value(self) -> float:
        """Binned AUROC; nan unless both positive and negative pixels were seen."""
        return self.auroc()
