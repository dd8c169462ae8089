"""Evaluate a folder of predicted masks against the index's ground truth (the `evaluate` stage and command).

Predicted masks are ``<masks_dir>/<id>.png``, 8-bit single channel: 0 = background, 1..254 = defect class
(value k = ``info.classes[k - 1]``), 255 = ignore, counted as background or defect per ``evaluate.ignore_as``. A
folder of binary 0/255 masks (other tools' format) is read as such when its ``labelmap.txt``, ``evaluate.mask_format``
or its values say so, never silently as ignore (:mod:`wsss.mask_format`).

Sample decision: with a scores file, an image is defective iff its score >= ``evaluate.score_threshold`` and its
mask is emptied when it is called OK (METHOD.md section 8: P_i is gated by the sample decision). Without one, the
score is 1.0 when the predicted mask has a defect pixel, else 0.0. Image-level ground truth is the image label.

Ground truth for pixel metrics: the row's mask, binarised at ``info.mask_threshold``; an image labelled
defect-free without a mask has an empty ground truth; an image labelled defective without a mask is left out of
the pixel metrics (counted as ``n_no_gt``) but kept in the image-level ones.

Pixel AP (AP_loc) and pixel AUROC, with a folder of soft defect-probability maps (``probs_dir``, `--probs`): one
``<id>.png`` per image, 16-bit grayscale (p = value / 65535, what `train-segmenter` and `wsss predict` write) or
8-bit (p = value / 255), or ``<id>.npy`` / ``<id>.npz`` holding one float (H, W) array in [0, 1]. The maps are not
gated by the sample decision (AP_loc is computed on the soft map as is), and cover the same images and ground truth as
the segmentation metrics. Probabilities are quantised to 65535 levels, so the values are exact for 16- and 8-bit
PNGs (:class:`wsss.evaluation.metrics.PixelAccumulator`).

Every predicted mask and probability map is checked before anything is computed
(:func:`wsss.evaluation.inputs.check_masks`): present,
readable, one 8-bit channel (a map: 16- or 8-bit gray, or a float array in [0, 1]), and the size of its ground truth
or, without one, of its image. All problems are raised together, so one run lists every file to fix; nothing is
evaluated or written until there are none.

Only per-image pixel counts are kept, so memory stays flat over any number of images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import wsss.evaluation.metrics as metrics
from wsss.artifacts.scores import read_scores
from wsss.data.images import read_mask
from wsss.data.index import DatasetInfo, EvalRow
from wsss.errors import DataError, raise_all
from wsss.evaluation.config import EvaluateConfig
from wsss.evaluation.inputs import check_masks, prob_file, read_pred_mask, read_prob_map
from wsss.evaluation.report import ClassResult, EvalReport, ImageResult
from wsss.labels import IGNORE
from wsss.mask_format import MaskEncoding, mask_encoding
from wsss.progress import progress


class _ClassStats:
    """Per-class accumulator: segmentation counts plus how many predicted pixels carry the class's value."""

    def __init__(self, value: int, class_aware: bool = True):
        self.value, self.class_aware = value, class_aware
        self.seg = metrics.SegAccumulator()
        self.agree = 0
        self.predicted = 0

    def add(self, raw: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> None:
        self.seg.add(pred, gt)
        defect = pred & (raw != IGNORE)
        self.predicted += int(np.count_nonzero(defect))
        self.agree += int(np.count_nonzero(defect & (raw == self.value)))

    def result(self, name: str) -> ClassResult:
        return ClassResult(
            name=name,
            n_images=len(self.seg),
            miou=self.seg.miou_def(),
            seg_recall_0_5=self.seg.seg_recall(0.5),
            class_agreement=self.agree / self.predicted if self.predicted and self.class_aware else math.nan,
        )


def evaluate_stage(rows: list[EvalRow], info: DatasetInfo, stage_dir: Path, cfg: EvaluateConfig) -> EvalReport:
    """:func:`evaluate_masks` of a mask-writing stage's folder: its ``masks/``, gated and ranked by its own
    ``scores.csv`` and with pixel AP from its ``probs/``, each where the stage wrote one."""
    stage_dir = Path(stage_dir)
    scores = read_scores(stage_dir / "scores.csv") if (stage_dir / "scores.csv").is_file() else None
    probs = stage_dir / "probs" if (stage_dir / "probs").is_dir() else None
    return evaluate_masks(rows, info, stage_dir / "masks", scores, cfg, probs)


def evaluate_masks(
    rows: list[EvalRow],
    info: DatasetInfo,
    masks_dir: Path,
    scores: dict[str, float] | None,
    cfg: EvaluateConfig,
    probs_dir: Path | None = None,
) -> EvalReport:
    """METHOD.md section 8 metrics of ``masks_dir`` over ``rows`` (see the module docstring for the rules); with
    ``probs_dir``, also pixel AP and pixel AUROC of its probability maps."""
    masks_dir = Path(masks_dir)
    probs_dir = Path(probs_dir) if probs_dir is not None else None
    values, errors = check_masks(rows, masks_dir, scores, cfg.split, probs_dir)
    summary = f"{masks_dir}: nothing evaluated, no report written"
    try:
        encoding = mask_encoding(masks_dir, info.classes, values, cfg.mask_format)
    except DataError as e:
        raise_all([*errors, e], summary)  # always raises: the list is not empty
        raise
    raise_all(errors, summary)
    seg = metrics.SegAccumulator()
    pixel = metrics.PixelAccumulator() if probs_dir is not None else None
    per_class = {c: _ClassStats(k + 1, encoding.class_aware) for k, c in enumerate(info.classes)}
    files = [masks_dir / f"{r.id}.png" for r in rows]
    results: list[ImageResult] = []
    for row, pred_path in progress(zip(rows, files, strict=True), desc="evaluate", total=len(rows)):
        raw = encoding.to_labels(read_pred_mask(pred_path))
        pred = raw != 0 if cfg.ignore_as == "defect" else (raw != 0) & (raw != IGNORE)
        score = scores[row.id] if scores is not None else float(pred.any())
        decision = score >= cfg.score_threshold
        if not decision:
            pred = np.zeros_like(pred)
        if row.mask is None and row.defective:
            results.append(ImageResult(row.id, row.labels, score, decision, None, None, int(pred.sum())))
            continue
        gt = np.zeros_like(pred) if row.mask is None else read_mask(row.mask, threshold=info.mask_threshold)
        value = seg.add(pred, gt)
        if pixel is not None:  # the soft map as it is: not gated by the decision
            pixel.add_levels(read_prob_map(prob_file(probs_dir, row.id)), gt)
        if gt.any():
            for label in row.labels:
                if label in per_class:
                    per_class[label].add(raw, pred, gt)
        results.append(ImageResult(row.id, row.labels, score, decision, value, seg.gt_areas[-1], seg.pred_areas[-1]))
    return _report(results, seg, per_class, masks_dir, cfg, scores is not None, encoding, pixel, probs_dir)


def _report(
    results: list[ImageResult],
    seg: metrics.SegAccumulator,
    per_class: dict[str, _ClassStats],
    masks_dir: Path,
    cfg: EvaluateConfig,
    from_scores: bool,
    encoding: MaskEncoding,
    pixel: metrics.PixelAccumulator | None = None,
    probs_dir: Path | None = None,
) -> EvalReport:
    y = np.array([r.defective for r in results], dtype=bool)
    s = np.array([r.score for r in results], dtype=np.float64)
    stats = metrics.threshold_stats(y, s, cfg.score_threshold)
    return EvalReport(
        masks_dir=str(masks_dir),
        score_source="scores" if from_scores else "masks",
        ignore_as=cfg.ignore_as,
        threshold=cfg.score_threshold,
        n_images=len(results),
        n_defective=int(y.sum()),
        n_no_gt=sum(r.iou is None for r in results),
        n_seg_images=len(seg),
        n_gt_defective=seg.n_defective,
        ap=metrics.average_precision(y, s),
        auroc=metrics.auroc(y, s),
        accuracy=float(stats["accuracy"]),
        fpr=float(stats["fpr"]),
        fnr=float(stats["fnr"]),
        tp=int(stats["tp"]),
        fp=int(stats["fp"]),
        tn=int(stats["tn"]),
        fn=int(stats["fn"]),
        miou_def=seg.miou_def(),
        pooled_iou=seg.pooled_iou(),
        seg_miou=seg.seg_miou(),
        seg_recall_0_1=seg.seg_recall(0.1),
        seg_recall_0_5=seg.seg_recall(0.5),
        pixel_ap=pixel.average_precision() if pixel is not None else None,
        pixel_auroc=pixel.auroc() if pixel is not None else None,
        probs_dir=str(probs_dir) if probs_dir is not None else None,
        mask_format=encoding.kind,
        mask_note=encoding.note,
        per_class=[st.result(name) for name, st in per_class.items()],
        images=results,
    )
