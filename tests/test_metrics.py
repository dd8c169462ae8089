"""METHOD.md section 8 metrics against hand-computed values and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsss.evaluation.metrics import (
    PROB_HALF,
    PROB_LEVELS,
    PixelAccumulator,
    PixelAurocAccumulator,
    SegAccumulator,
    auroc,
    average_precision,
    iou,
    quantize_probs,
    threshold_stats,
)

# ---------------------------------------------------------------------------------------------- image level


def test_ap_auroc_simple_ranking():
    # ranking by score: + - + -
    # thresholds: 0.9 -> P=1/1, R=1/2; 0.8 -> P=1/2, R=1/2; 0.7 -> P=2/3, R=1; 0.1 -> R unchanged
    # AP = 0.5 * 1 + 0.5 * 2/3 = 5/6
    # AUROC: pos 0.9 beats both negatives (2), pos 0.7 beats 0.1 only (1) -> 3/4
    y, s = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    assert average_precision(y, s) == pytest.approx(5 / 6)
    assert auroc(y, s) == pytest.approx(0.75)


def test_ap_auroc_ties_are_one_threshold():
    # scores 0.8 (pos, neg tied), 0.5 (pos), 0.2 (neg)
    # threshold 0.8: tp=1 fp=1 -> P=1/2, R=1/2; 0.5: tp=2 fp=1 -> P=2/3, R=1
    # AP = 0.5 * 1/2 + 0.5 * 2/3 = 7/12
    # AUROC pairs: (0.8 vs 0.8) 1/2, (0.8 vs 0.2) 1, (0.5 vs 0.8) 0, (0.5 vs 0.2) 1 -> 2.5/4
    y, s = [1, 0, 1, 0], [0.8, 0.8, 0.5, 0.2]
    assert average_precision(y, s) == pytest.approx(7 / 12)
    assert auroc(y, s) == pytest.approx(0.625)
    # the order of tied samples must not matter
    assert average_precision([0, 1, 1, 0], [0.8, 0.8, 0.5, 0.2]) == pytest.approx(7 / 12)
    # all scores tied: one threshold, precision = prevalence, AUROC = 1/2
    assert average_precision(y, [0.3] * 4) == pytest.approx(0.5)
    assert auroc(y, [0.3] * 4) == pytest.approx(0.5)


def test_ap_auroc_perfect_and_worst():
    assert average_precision([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    # worst: negatives first. 0.2: tp=1 fp=2 P=1/3 R=1/2; 0.1: tp=2 fp=2 P=1/2 R=1
    # AP = 0.5 * 1/3 + 0.5 * 1/2 = 5/12
    y, s = [0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]
    assert average_precision(y, s) == pytest.approx(5 / 12)
    assert auroc(y, s) == pytest.approx(0.0)


def test_single_class_is_nan_or_defined():
    assert math.isnan(auroc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(auroc([0, 0], [0.1, 0.5]))
    assert math.isnan(average_precision([0, 0], [0.1, 0.5]))  # no positives: recall undefined
    assert average_precision([1, 1], [0.1, 0.5]) == pytest.approx(1.0)  # only positives: precision 1


def test_bad_scores_raise():
    with pytest.raises(ValueError):
        auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError):
        average_precision([0, 1, 1], [0.1, 0.2])


def _pairwise_auroc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def _brute_ap(y: np.ndarray, s: np.ndarray) -> float:
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(s)[::-1]:  # every distinct score as a threshold, highest first
        called = s >= t
        tp = np.sum(called & y)
        precision, recall = tp / called.sum(), tp / y.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


@pytest.mark.parametrize("seed", range(5))
def test_ap_auroc_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.3
    s = np.round(rng.random(200) + 0.5 * y, 1)  # rounded: many ties
    assert auroc(y, s) == pytest.approx(_pairwise_auroc(y, s))
    assert average_precision(y, s) == pytest.approx(_brute_ap(y, s))
    # without ties, AP is also the mean over positives of the precision at their rank
    s = rng.random(200) + 0.3 * y
    order = np.argsort(-s)
    hits = y[order]
    prec_at_hits = (np.cumsum(hits) / np.arange(1, hits.size + 1))[hits]
    assert average_precision(y, s) == pytest.approx(prec_at_hits.mean())


def test_threshold_stats():
    # called defective (>= 0.5): [1, 0, 1, 0, 0] vs y [1, 1, 0, 0, 0] -> tp 1, fn 1, fp 1, tn 2
    st = threshold_stats([1, 1, 0, 0, 0], [0.9, 0.4, 0.6, 0.1, 0.5 - 1e-9], 0.5)
    assert (st["tp"], st["fp"], st["tn"], st["fn"]) == (1, 1, 2, 1)
    assert st["accuracy"] == pytest.approx(3 / 5)
    assert st["fpr"] == pytest.approx(1 / 3)
    assert st["fnr"] == pytest.approx(1 / 2)
    assert threshold_stats([1], [0.5], 0.5)["tp"] == 1  # the threshold itself counts as defective
    assert math.isnan(threshold_stats([1, 1], [0.2, 0.9], 0.5)["fpr"])  # no negatives


# ---------------------------------------------------------------------------------------------- IoU family


def _mask(*pixels: tuple[int, int]) -> np.ndarray:
    m = np.zeros((4, 4), dtype=bool)
    for r, c in pixels:
        m[r, c] = True
    return m


# 4x4 images:
# A: gt rows 0-1 x cols 0-1 (4 px), pred rows 0-1 x cols 0-2 (6 px): inter 4, union 6, IoU 2/3
# B: gt row 0 (4 px), pred (0, 0): inter 1, union 4, IoU 1/4
# C: gt empty, pred 2 px (false alarm): inter 0, union 2, IoU 0
# D: gt empty, pred empty: union 0, IoU 1 by convention, excluded from every mean
# E: gt 2 px, pred empty (miss): inter 0, union 2, IoU 0
A = (_mask((0, 0), (0, 1), (1, 0), (1, 1)), _mask((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)))
B = (_mask((0, 0), (0, 1), (0, 2), (0, 3)), _mask((0, 0)))
C = (_mask(), _mask((3, 3), (3, 2)))
D = (_mask(), _mask())
E = (_mask((2, 2), (2, 3)), _mask())


def _acc(*pairs: tuple[np.ndarray, np.ndarray]) -> SegAccumulator:
    acc = SegAccumulator()
    for gt, pred in pairs:
        acc.add(pred, gt)
    return acc


def test_iou_convention():
    assert iou(A[1], A[0]) == pytest.approx(2 / 3)
    assert iou(D[1], D[0]) == 1.0
    assert iou(C[1], C[0]) == 0.0


def test_iou_family_hand_computed():
    acc = _acc(A, B, C, D, E)
    # mIoU_def over A, B, E (non-empty gt): (2/3 + 1/4 + 0) / 3 = 11/36
    assert acc.miou_def() == pytest.approx(11 / 36)
    # pooled: (4 + 1 + 0 + 0 + 0) / (6 + 4 + 2 + 0 + 2) = 5/14
    assert acc.pooled_iou() == pytest.approx(5 / 14)
    # Seg_mIoU over A, B, C, E (D excluded, C's false alarm counts 0): (2/3 + 1/4) / 4 = 11/48
    assert acc.seg_miou() == pytest.approx(11 / 48)
    # Seg_Recall over A, B, E: @0.1 A and B -> 2/3; @0.5 only A -> 1/3
    assert acc.seg_recall(0.1) == pytest.approx(2 / 3)
    assert acc.seg_recall(0.5) == pytest.approx(1 / 3)
    summary = acc.summary()
    assert set(summary) == {"miou_def", "pooled_iou", "seg_miou", "seg_recall@0.1", "seg_recall@0.5"}
    assert acc.n_defective == 3 and len(acc) == 5


def test_iou_family_corner_cases():
    no_defects = _acc(C, D)  # mIoU_def and Seg_Recall undefined; C is a false alarm
    assert math.isnan(no_defects.miou_def()) and math.isnan(no_defects.seg_recall(0.5))
    assert no_defects.seg_miou() == 0.0 and no_defects.pooled_iou() == 0.0
    nothing = _acc(D)  # nothing anywhere: every metric undefined
    assert all(math.isnan(v) for v in nothing.summary().values())
    empty_preds = _acc((A[0], _mask()), (B[0], _mask()), D)
    assert empty_preds.miou_def() == 0.0 and empty_preds.seg_miou() == 0.0 and empty_preds.pooled_iou() == 0.0
    with pytest.raises(ValueError):
        SegAccumulator().add(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


# ---------------------------------------------------------------------------------------------- pixel AUROC


def test_pixel_auroc_exact_on_bin_centres():
    rng = np.random.default_rng(0)
    acc, all_s, all_g = PixelAurocAccumulator(bins=100), [], []
    for _ in range(3):
        g = rng.random((8, 8)) < 0.2
        s = (np.floor(np.clip(rng.random((8, 8)) * 0.7 + 0.3 * g, 0, 0.999) * 100) + 0.5) / 100
        acc.add(s, g)
        all_s.append(s.ravel())
        all_g.append(g.ravel())
    # one value per bin: binning loses nothing, ties inside a bin are true ties
    assert acc.value() == pytest.approx(auroc(np.concatenate(all_g), np.concatenate(all_s)))


def test_pixel_auroc_binning_error_bound_and_valid_mask():
    rng = np.random.default_rng(1)
    g = rng.random((32, 32)) < 0.1
    s = rng.random((32, 32)) * 0.6 + 0.4 * g
    acc = PixelAurocAccumulator(bins=20)
    acc.add(s, g)
    assert abs(acc.value() - auroc(g, s)) <= acc.max_binning_error() + 1e-12
    valid = rng.random((32, 32)) < 0.5
    acc_valid = PixelAurocAccumulator(bins=1000)
    acc_valid.add(s, g, valid)
    assert acc_valid.pos.sum() + acc_valid.neg.sum() == valid.sum()
    assert math.isnan(PixelAurocAccumulator().value())


# ------------------------------------------------------------------------------------- pixel AP and AUROC of probs


def _random_maps(seed: int, n: int = 4, coarse: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images of random sizes; ``coarse`` puts every probability on one of 6 values (many ties across classes)."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n):
        shape = tuple(rng.integers(3, 12, size=2))
        g = rng.random(shape) < 0.25
        p = np.clip(rng.random(shape) * 0.8 + 0.3 * g, 0, 1)
        if coarse:
            p = np.round(p * 5) / 5
        maps.append((p, g))
    return maps


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("coarse", [False, True])
def test_pixel_ap_and_auroc_equal_the_image_level_functions_on_all_pixels(seed: int, coarse: bool):
    maps = _random_maps(seed, coarse=coarse)
    acc = PixelAccumulator()
    for p, g in maps:
        acc.add(p, g)
    # the reference: the image-level functions on every pixel concatenated, at the quantised (16-bit PNG) value
    s = np.concatenate([quantize_probs(p).ravel() for p, _ in maps]) / PROB_LEVELS
    y = np.concatenate([g.ravel() for _, g in maps])
    assert acc.average_precision() == pytest.approx(average_precision(y, s), abs=1e-12)
    assert acc.auroc() == pytest.approx(auroc(y, s), abs=1e-12)
    assert acc.n_pos == y.sum() and acc.n_neg == (~y).sum()


def test_pixel_accumulator_levels_8_bit_and_valid_pixels():
    rng = np.random.default_rng(7)
    g = rng.random((16, 16)) < 0.3
    v8 = rng.integers(0, 256, size=(16, 16)).astype(np.uint8)  # an 8-bit map: p = v / 255 = level 257 v
    from_float, from_levels = PixelAccumulator(), PixelAccumulator()
    from_float.add(v8 / 255.0, g)
    from_levels.add_levels(v8.astype(np.uint16) * 257, g)
    assert np.array_equal(from_float.pos, from_levels.pos) and np.array_equal(from_float.neg, from_levels.neg)
    assert from_levels.average_precision() == pytest.approx(average_precision(g, v8), abs=1e-12)
    valid = rng.random((16, 16)) < 0.5
    p = np.where(valid, v8 / 255.0, np.nan)  # pixels outside valid may hold anything
    acc = PixelAccumulator()
    acc.add(p, g, valid)
    assert acc.auroc() == pytest.approx(auroc(g[valid], v8[valid]), abs=1e-12)
    with pytest.raises(ValueError, match="levels outside"):
        PixelAccumulator().add_levels(np.full((2, 2), 65536), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="shapes differ"):
        PixelAccumulator().add(np.zeros((2, 2)), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="nan"):
        PixelAccumulator().add(np.full((2, 2), np.nan), np.zeros((2, 2), bool))


def test_pixel_metrics_edge_cases():
    empty = PixelAccumulator()
    assert math.isnan(empty.average_precision()) and math.isnan(empty.auroc())
    no_defect = PixelAccumulator()
    no_defect.add(np.full((4, 4), 0.3), np.zeros((4, 4), bool))
    assert math.isnan(no_defect.average_precision()) and math.isnan(no_defect.auroc())  # as the image-level ones
    all_defect = PixelAccumulator()
    all_defect.add(np.linspace(0, 1, 16).reshape(4, 4), np.ones((4, 4), bool))
    assert all_defect.average_precision() == 1.0 and math.isnan(all_defect.auroc())
    tied = PixelAccumulator()  # every pixel on one level: AP = prevalence, AUROC = 0.5
    tied.add(np.full((4, 4), 0.5), np.eye(4, dtype=bool))
    assert tied.average_precision() == pytest.approx(0.25) and tied.auroc() == 0.5
    perfect = PixelAccumulator()
    g = np.eye(4, dtype=bool)
    perfect.add(g.astype(float), g)
    assert perfect.average_precision() == 1.0 and perfect.auroc() == 1.0
    binned = PixelAurocAccumulator(bins=10)  # the equal-width accumulator gives AP from its bins too
    binned.add(np.array([[0.05, 0.15], [0.95, 0.99]]), np.array([[False, False], [True, False]]))
    assert binned.average_precision() == 0.5 and binned.value() == binned.auroc() == pytest.approx(5 / 6)
    assert quantize_probs(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 0, 32768, 65535, 65535]


def test_prob_half_splits_stored_levels_at_one_half():
    eps = np.float32(0.5).item() - np.nextafter(np.float32(0.5), np.float32(0)).item()
    above = np.array([0.5 + eps, 0.5 + 1e-6, 0.51, 0.9, 1.0])
    below = np.array([0.5 - eps, 0.5 - 1e-6, 0.49, 0.1, 0.0])
    assert (quantize_probs(above) >= PROB_HALF).all() and (quantize_probs(below) < PROB_HALF).all()
