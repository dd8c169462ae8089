"""Choose the segmenter's gate (``segmenter.score_threshold``) and pixel cut on the validation split of finished runs.

The segmenter's mask is switched off where its own image head scores an image below the threshold (METHOD.md 6).
A lower gate keeps the masks of weakly scored defective images (mIoU_def can only rise) and lets masks onto OK images
(false alarms, which Seg_mIoU counts as 0); a higher one does the reverse. For every run this reads what the stage
wrote, ``train-segmenter/probs/`` (the ungated defect probability) and ``scores.csv`` (the image head), so no model
runs: each ``--thresholds`` value gives mIoU_def, Seg_mIoU, Seg_Recall@0.5 and the count of OK images given a mask,
over the split's OK images and its defective images with a ground-truth mask, pooled over the runs and per run.
``--pixel`` also cuts the probability map elsewhere than 0.5 (the segmenter's argmax): a pixel is defect where its
probability reaches the cut, so a lower cut widens every mask.

Ground-truth masks are read here to score the thresholds, never by the pipeline. Choose on ``val`` (on Seg_mIoU,
which weighs both sides, with mIoU_def beside it); ``--split test`` is for reporting. One defect class only (the
recipes' binary runs): a run with several is refused.

    python bench/gate_sweep.py /tmp/bench/ksdd/fold0 /tmp/bench/ksdd/fold1 /tmp/bench/ksdd/fold2
    python bench/gate_sweep.py /tmp/bench/ksdd/fold0 --thresholds 0.5 --pixel 0.2,0.3,0.4,0.5,0.6

``--scores-from cam`` gates the segmenter's map by another stage's image scores (the classifier's, in
``cam/scores.csv``; ``mean``: the average of the two) instead of its own head's: does the gate of a segmenter depend
on its seed more than the classifier's does?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders with a finished train-segmenter")
    p.add_argument("--split", default="val", choices=["val", "test"], help="choose on val; test only to report")
    p.add_argument("--thresholds", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7", help="gates in [0, 1] to score")
    p.add_argument("--pixel", default="0.5", help="pixel cuts in (0, 1]: defect where P(defect) >= cut (0.5: argmax)")
    p.add_argument(
        "--scores-from",
        default="train-segmenter",
        choices=["train-segmenter", "cam", "mean"],
        help="whose image scores gate the map: the segmenter's head, the classifier's (cam), or their mean",
    )
    return p.parse_args(argv)


def gate_metrics(
    masks: list[np.ndarray], scores: list[float], gts: list[np.ndarray], thresholds: list[float]
) -> dict[float, dict[str, float]]:
    """Per threshold: the ungated boolean ``masks`` kept where the image's score >= threshold, scored against ``gts``
    (empty for OK images) with :class:`wsss.evaluation.metrics.SegAccumulator`, plus ``false_alarms`` (images with
    an empty ground truth given a non-empty mask)."""
    from wsss.evaluation.metrics import SegAccumulator

    out = {}
    for t in thresholds:
        acc, false_alarms = SegAccumulator(), 0
        for mask, score, gt in zip(masks, scores, gts, strict=True):
            pred = mask if score >= t else np.zeros_like(mask)
            acc.add(pred, gt)
            false_alarms += int(pred.any() and not gt.any())
        out[t] = acc.summary((0.5,)) | {"false_alarms": false_alarms}
    return out


def pixel_masks(levels: list[np.ndarray], cut: float) -> list[np.ndarray]:
    """Boolean masks of stored probability maps (``round(p * 65535)`` levels): defect where ``p`` reaches ``cut``;
    0.5 gives the segmenter's own argmax (:data:`wsss.evaluation.metrics.PROB_HALF`)."""
    from wsss.evaluation.metrics import quantize_probs

    level = int(quantize_probs(np.float64(cut)))
    return [lv >= level for lv in levels]


def load_run(
    run: Path, split: str, scores_from: str = "train-segmenter"
) -> tuple[list[np.ndarray], list[float], list[np.ndarray]]:
    """The split's ungated probability maps (stored levels), image scores (``scores_from``) and ground truths (empty
    for OK images) of one finished run."""
    from wsss.artifacts.scores import read_scores
    from wsss.data.images import read_mask
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import read_prob_map

    stage = run / "train-segmenter"
    meta = stage / "segmenter.json"
    if not meta.is_file():
        sys.exit(f"{meta}: not found; run the train-segmenter stage of {run} first")
    classes = json.loads(meta.read_text())["classes"]
    if len(classes) != 1:
        sys.exit(f"{meta}: {len(classes)} defect classes ({', '.join(classes)}); this sweep scores one defect class")
    scores = read_scores(stage / "scores.csv")
    if scores_from != "train-segmenter":
        dfc = read_scores(run / "cam" / "scores.csv")
        scores = dfc if scores_from == "cam" else {k: (v + dfc[k]) / 2 for k, v in scores.items()}
    index = run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    maps, image_scores, gts = [], [], []
    for r in read_eval_index(index, split=split):
        if r.defective and r.mask is None:  # no ground truth to score its mask against (not an OK image)
            continue
        levels = read_prob_map(stage / "probs" / f"{r.id}.png")
        gt = (
            read_mask(r.mask, threshold=info.mask_threshold) > 0 if r.mask is not None else np.zeros(levels.shape, bool)
        )
        maps.append(levels)
        image_scores.append(scores[r.id])
        gts.append(gt)
    if not any(gt.any() for gt in gts):
        sys.exit(f"{index}: no defective image of the {split} split has a ground-truth mask; the sweep scores masks")
    return maps, image_scores, gts


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    thresholds = [float(v) for v in args.thresholds.split(",")]
    if not all(0 <= t <= 1 for t in thresholds):
        sys.exit(f"--thresholds {args.thresholds}: every gate must be in [0, 1]")
    cuts = [float(v) for v in args.pixel.split(",")]
    if not all(0 < c <= 1 for c in cuts):
        sys.exit(f"--pixel {args.pixel}: every pixel cut must be in (0, 1]")
    loaded = {run.name: load_run(run, args.split, args.scores_from) for run in args.runs}
    names = list(loaded)
    whose = {"train-segmenter": "its own image score", "cam": "the classifier's score", "mean": "the mean score"}
    print(
        f"\n{args.split} split, train-segmenter gated at {whose[args.scores_from]}: pooled over {len(names)} run(s)\n"
    )
    print(
        "| pixel cut | gate | Seg_mIoU | mIoU_def | Seg_Recall@0.5 | OK images given a mask | "
        + " | ".join(names)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(names))
    scores, gts = ([x for v in loaded.values() for x in v[i]] for i in (1, 2))
    for c in cuts:
        masks = {n: pixel_masks(v[0], c) for n, v in loaded.items()}  # each map cut once, for its run and the pool
        per_run = {n: gate_metrics(masks[n], v[1], v[2], thresholds) for n, v in loaded.items()}
        pooled = gate_metrics([m for n in names for m in masks[n]], scores, gts, thresholds)
        for t in thresholds:
            m = pooled[t]
            each = " | ".join(
                f"{100 * per_run[n][t]['seg_miou']:.2f} / {100 * per_run[n][t]['miou_def']:.2f}" for n in names
            )
            print(
                f"| {c:g} | {t:g} | {100 * m['seg_miou']:.2f} | {100 * m['miou_def']:.2f} | "
                f"{100 * m['seg_recall@0.5']:.2f} | {m['false_alarms']} | {each} |"
            )


if __name__ == "__main__":
    main()
