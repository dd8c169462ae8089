"""Pair two runs image by image: which defective images a variant improves, which it worsens, and by how much.

A variant's mean mIoU_def can hinge on one image (a mask recovered from empty moves a 16-image mean by 3 points);
this shows it. For each pair ``BASE:VARIANT`` of run folders (e.g. the three folds of a recipe and of a variant) it
scores ``--stage``'s masks on ``--split`` as ``wsss evaluate`` does (``wsss.evaluation.evaluate_stage``: gated by the
stage's own scores) and prints, over the defective images with a ground-truth mask of all pairs: the count up and
down by more than ``--margin`` IoU points, the mean difference, the same mean without the image that moved most,
the defective images left with an empty mask in each, and the images that moved most.

Ground-truth masks are read here to score, never by the pipeline; choose on ``val``.

    python bench/compare_runs.py OUT/fold0:OUT/fold0-st2 OUT/fold1:OUT/fold1-st2 OUT/fold2:OUT/fold2-st2 --split val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", nargs="+", help="BASE:VARIANT run folders sharing one prepare split (e.g. one fold)")
    p.add_argument("--stage", default="train-segmenter", help="the mask-writing stage to compare")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="choose on val")
    p.add_argument("--margin", type=float, default=1.0, help="IoU points an image must move to count up or down")
    p.add_argument("--show", type=int, default=5, help="images listed, the largest moves first")
    return p.parse_args(argv)


def paired(base: dict[str, float], variant: dict[str, float], margin: float) -> dict[str, float]:
    """Up / down counts (moves above ``margin`` points), the mean difference in points, and that mean without the
    image that moved most (nan with fewer than two images), over the ids both maps hold (IoU in [0, 1])."""
    ids = sorted(base.keys() & variant.keys())
    d = np.array([100 * (variant[i] - base[i]) for i in ids])
    if not len(d):
        return {"images": 0, "up": 0, "down": 0, "mean": float("nan"), "mean_without_largest": float("nan")}
    rest = np.delete(d, np.argmax(np.abs(d)))
    return {
        "images": len(d),
        "up": int((d > margin).sum()),
        "down": int((d < -margin).sum()),
        "mean": float(d.mean()),
        "mean_without_largest": float(rest.mean()) if len(rest) else float("nan"),
    }


def stage_ious(run: Path, stage: str, split: str) -> tuple[dict[str, float], dict[str, int]]:
    """Per defective image of ``split`` with a non-empty ground truth: its IoU, and its predicted area (pixels)."""
    from wsss.config import load_config
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import evaluate_stage

    index = run / "prepare" / "index.csv"
    if not (run / stage / "masks").is_dir():
        sys.exit(f"{run / stage / 'masks'}: not found; finish the {stage} stage of {run} first")
    cfg = load_config(run / stage / "config.yaml")
    report = evaluate_stage(read_eval_index(index, split=split), read_dataset_info(index), run / stage, cfg.evaluate)
    keep = [r for r in report.images if r.labels and r.gt_area]
    return {r.id: r.iou for r in keep}, {r.id: r.pred_area for r in keep}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    base, variant, empty = {}, {}, [0, 0]
    for pair in args.pairs:
        a, sep, b = pair.partition(":")
        if not sep or not a or not b:
            sys.exit(f"{pair}: give each pair as BASE:VARIANT (two run folders)")
        (ia, area_a), (ib, area_b) = (stage_ious(Path(p), args.stage, args.split) for p in (a, b))
        if ia.keys() != ib.keys():
            sys.exit(f"{pair}: the two runs hold different {args.split} images; pair runs of the same split (fold)")
        for i in ia:
            key = f"{Path(a).name}/{i}"
            base[key], variant[key] = ia[i], ib[i]
            empty[0] += area_a[i] == 0
            empty[1] += area_b[i] == 0
    s = paired(base, variant, args.margin)
    print(
        f"{args.stage}, {args.split} split, {s['images']} defective images: {s['up']} up, {s['down']} down "
        f"(> {args.margin:g} points); mean {s['mean']:+.2f} points, {s['mean_without_largest']:+.2f} without the "
        f"largest move; empty masks {empty[0]} -> {empty[1]}"
    )
    for key in sorted(base, key=lambda k: -abs(variant[k] - base[k]))[: args.show]:
        print(f"  {key}: {100 * base[key]:.1f}% -> {100 * variant[key]:.1f}% ({100 * (variant[key] - base[key]):+.1f})")


if __name__ == "__main__":
    main()
