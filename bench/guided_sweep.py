"""Choose the segmenter's guided upsampling (``segmenter.guided``) on the validation split of finished runs.

For every run it loads the trained segmenter (``train-segmenter/``, or ``--stage retrain``), runs it once on each
image of the split, and applies the guided filter (:mod:`wsss.refine.guided`) at every ``--radii`` x ``--eps``
setting to the same probabilities: mIoU_def over the defective images (the mask gated by the segmenter's own image
head, an image called OK counting 0, as in ``evaluate``) and pixel AP of the ungated defect probability, mean over
the runs, best validation setting first. Radius 0 is the segmenter as trained (bilinear upsampling only).

Ground-truth masks are read here to score the settings, never by the pipeline. Choose on ``val``; ``--split test``
is for reporting the chosen setting, not for choosing.

    python bench/guided_sweep.py /tmp/bench/ksdd/fold0 /tmp/bench/ksdd/fold1 /tmp/bench/ksdd/fold2
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders with a finished train-segmenter (or retrain)")
    p.add_argument("--stage", default="train-segmenter", choices=["train-segmenter", "retrain"])
    p.add_argument("--split", default="val", choices=["val", "test"], help="choose on val; test only to report")
    p.add_argument("--radii", default="0,4,6,8,12", help="radius values in network-input pixels (0 = off)")
    p.add_argument("--eps", default="0.0001,0.001", help="eps values")
    return p.parse_args(argv)


def sweep_run(run: Path, args: argparse.Namespace, grid: list[tuple[float, float]]) -> dict:
    from wsss.data.images import read_image, read_mask
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation.metrics import PixelAccumulator, iou
    from wsss.inference import load_predictor
    from wsss.models.segmenter import gate_labels

    index = run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    rows = [r for r in read_eval_index(index) if r.split == args.split and r.mask is not None]
    predictor = load_predictor(run / args.stage, "cpu", guided_radius=0)
    size = predictor.size
    ious = {g: [] for g in grid}
    pix = {g: PixelAccumulator() for g in grid}
    seconds = {g: 0.0 for g in grid}
    for r in rows:
        image = read_image(r.path)
        gt = read_mask(r.mask, threshold=info.mask_threshold) > 0
        pred = predictor([image])[0]
        net = size if size is not None else image.shape[:2]
        for radius, eps in grid:
            t0 = time.perf_counter()
            probs = predictor.guide(image, pred.probs, net, radius, eps)
            seconds[(radius, eps)] += time.perf_counter() - t0
            pix[(radius, eps)].add(np.clip(probs[1:].sum(axis=0), 0, 1), gt)
            if gt.any():
                ious[(radius, eps)].append(iou(gate_labels(probs, pred.cls_probs, predictor.threshold) > 0, gt))
    return {
        g: {"miou_def": float(np.mean(ious[g])), "pixel_ap": pix[g].average_precision(), "s": seconds[g] / len(rows)}
        for g in grid
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    grid = list(itertools.product([float(v) for v in args.radii.split(",")], [float(v) for v in args.eps.split(",")]))
    grid = [g for g in grid if g[0] > 0 or g[1] == grid[0][1]]  # radius 0 ignores eps: once
    per_run = {run.name: sweep_run(run, args, grid) for run in args.runs}
    names = list(per_run)
    print(f"\n{args.split} split, {args.stage}: mIoU_def / pixel AP, mean over {len(names)} run(s)\n")
    print("| radius | eps | mIoU_def | pixel AP | " + " | ".join(names) + " | ms / image |")
    print("|---|---|---|---|" + "---|" * len(names) + "---|")
    rows = []
    for g in grid:
        m = float(np.mean([per_run[n][g]["miou_def"] for n in names]))
        ap = float(np.mean([per_run[n][g]["pixel_ap"] for n in names]))
        ms = 1000 * float(np.mean([per_run[n][g]["s"] for n in names]))
        rows.append((m, g, ap, [per_run[n][g]["miou_def"] for n in names], ms))
    for m, (radius, eps), ap, each, ms in sorted(rows, key=lambda t: -t[0]):
        cells = " | ".join(f"{100 * v:.2f}" for v in each)
        print(f"| {radius:g} | {eps:g} | {100 * m:.2f} | {100 * ap:.2f} | {cells} | {ms:.0f} |")


if __name__ == "__main__":
    main()
