"""Choose the pseudo-labelling settings (CRF kernels, background prior, CAM lift) on the validation split.

The one place where the method cannot avoid ground-truth masks: how far the CRF may move a CAM's boundary is a
pixel-level question that image labels cannot answer. So the settings are chosen here, on the *validation* images of
finished runs (never test), and written into the recipe; training and pseudo-labelling never read a mask.

For every combination of the grid it labels each defective validation image the classifier called defective (the
rule of ``wsss/refine/pseudo.py``, from the run's ``cam`` stage), and prints mIoU_def over the defective validation
images of all the given runs (an image called OK counts 0, as in ``evaluate``), best first.

    python bench/crf_sweep.py /tmp/bench/ksdd/fold0 /tmp/bench/ksdd/fold1 /tmp/bench/ksdd/fold2

``fallback`` is ``pseudo.fallback`` (the CAM's core for an image the refinement leaves empty), ``margin``
``pseudo.margin`` (every defect region grown by that many pixels: how much wider the annotators drew). ``lift`` 1 applies
``cam.lift`` (``wsss.cam.extract.normalise_cam``) to the stored CAMs: a CAM stored as raw / scale is exact below the
scale, which is the only place ``lift`` changes it. ``--unary`` also sweeps what the CRF refines (``pseudo.unary``:
``anomaly`` and ``fusion`` read each run's `anomaly` stage), and ``region``: the anomaly map inside the CAM's
dilated support, rescaled to its peak there (the OK images' statistics sharpening the CAM with a per-image threshold).

``--fuse`` sweeps the retrain round's ``retrain.fuse_weight`` instead of the first round's unary: each run's
finished `retrain` stage predicts every image once with the segmenter it trained, and the CRF labels
``w * segmenter probability + (1 - w) * CAM`` as that stage does (``w = 0``: the first round's CAM alone):

    python bench/crf_sweep.py RUN/fold1 RUN/fold2 --fuse 0,0.5,0.75,1 --lift 0 --bg 0.3 --compat 40 --sxy 50 \
        --methods crf --fallback 0.3

``--fuse-stage train-segmenter`` fuses the distilled segmenter's probabilities instead (``--fuse 1``: the CRF on the
segmenter's own map, against ``--methods threshold`` with ``--bg 0.5``, its plain argmax), e.g. on the training
split, to see whether refining a segmenter's masks could teach a further round more than its raw masks.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders with finished prepare and cam stages")
    p.add_argument("--split", default="val", choices=["val", "train"], help="never test")
    p.add_argument("--sxy", default="50,20", help="bilateral_sxy values, pixels")
    p.add_argument("--compat", default="10,3", help="bilateral_compat values")
    p.add_argument("--bg", default="0.4,0.6", help="bg_prior values")
    p.add_argument("--lift", default="0,1", help="0 = the dataset scale only, 1 = lift weak CAMs")
    p.add_argument("--fallback", default="0", help="pseudo.fallback values (0 = off)")
    p.add_argument(
        "--margin",
        default="0",
        help="pseudo.margin values: pixels every defect region grows by (the annotators' convention; 0 = off)",
    )
    p.add_argument(
        "--confidence",
        default="0.6",
        help="pseudo.confidence values: a pixel whose winning probability is below it is ignore (255), which "
        "evaluation counts as background (0.5 = none on one defect class)",
    )
    p.add_argument("--methods", default="crf,threshold")
    p.add_argument(
        "--unary",
        default="cam",
        help="pseudo.unary values: cam, anomaly, fusion (need each run's anomaly stage), region (the anomaly map "
        "inside the CAM's dilated support, rescaled to its peak there: a per-image threshold)",
    )
    p.add_argument("--weight", default="0.5", help="pseudo.anomaly_weight values (fusion)")
    p.add_argument("--region", default="0.2", help="region: the CAM fraction of its peak the support starts at")
    p.add_argument("--fuse", default="", help="retrain.fuse_weight values: the fused map of each run's retrain round")
    p.add_argument(
        "--fuse-stage",
        default="retrain",
        choices=["retrain", "train-segmenter"],
        help="whose segmenter --fuse reads: the retrain round's, or the distilled segmenter's (a CRF on its masks)",
    )
    p.add_argument(
        "--flips",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--fuse's segmenter also sees each image flipped, logits averaged (retrain.flips; default: as trained)",
    )
    return p.parse_args(argv)


def lifted(cam: np.ndarray, scale: float, floor: float) -> np.ndarray:
    """The stored CAM (raw / scale, clipped at 1, of an image called defective) as ``cam.lift`` normalises it."""
    from wsss.cam.extract import normalise_cam

    return normalise_cam(cam * scale, np.ones(cam.shape[0], bool), scale, floor)


def items(run: Path, split: str, with_anomaly: bool = False, segmenter_stage: str = "", flips: bool | None = None):
    """Per defective image of ``split`` with a mask: id, image, stored CAM, ground truth, whether it was called
    defective, the dataset scale, the lift floor, and (``with_anomaly``) its normalised anomaly map, else None, or
    (``segmenter_stage``) the defect probabilities (K, H, W) of the segmenter that stage of the run trained."""
    from wsss.anomaly.io import anomaly_path, read_anomaly, read_range
    from wsss.cam.gate import read_calls
    from wsss.cam.io import read_cam
    from wsss.data.images import read_image, read_mask
    from wsss.data.index import read_dataset_info, read_eval_index

    index = run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    meta = json.loads((run / "cam" / "cam.json").read_text())
    with open(run / "cam" / "scores.csv", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    all_rows = read_eval_index(index)
    calls = read_calls(run / "cam")
    from wsss.stages.cam import LIFT_OK_PERCENTILE

    ok_peaks = [float(rows[r.id]["peak"]) for r in all_rows if r.split == "train" and not r.labels]
    floor = float(np.percentile(ok_peaks, LIFT_OK_PERCENTILE)) if ok_peaks else 0.0
    if with_anomaly and not (run / "anomaly" / "anomaly.json").is_file():
        raise SystemExit(f"{run}: no finished anomaly stage; run `wsss run-stage anomaly` there or sweep --unary cam")
    anomaly_range = read_range(run / "anomaly") if with_anomaly else None
    predictor = None
    if segmenter_stage:
        from wsss.inference import torch_predictor
        from wsss.models.segmenter import MODEL_FILE, load_segmenter

        if not (run / segmenter_stage / MODEL_FILE).is_file():
            raise SystemExit(
                f"{run}: no finished {segmenter_stage} stage; run `wsss run-stage {segmenter_stage}` there or drop --fuse"
            )
        predictor = torch_predictor(*load_segmenter(run / segmenter_stage), flips=flips)
    for r in all_rows:
        if r.split != split or not r.labels or r.mask is None:
            continue
        called = calls[r.id]
        image = read_image(r.path)
        cam = read_cam(run / "cam" / "cams" / f"{r.id}.npz", image.shape[:2])
        gt = read_mask(r.mask, threshold=info.mask_threshold)
        anomaly = (
            read_anomaly(anomaly_path(run / "anomaly", r.id), *anomaly_range, image.shape[:2]) if with_anomaly else None
        )
        if predictor is not None:
            anomaly = predictor([image])[0].probs[1:]
        yield r.id, image, cam, gt, called, meta["scale"], floor, anomaly


def region_unary(cam: np.ndarray, anomaly: np.ndarray, start: float) -> np.ndarray:
    """The anomaly map inside the CAM's support (where the CAM reaches ``start`` of its peak, dilated by 5% of the
    image's shorter side), rescaled so that its peak there is 1: the CAM says where, the anomaly map draws the
    shape, and the rescaling is a per-image threshold. (K, H, W) like the CAM."""
    import cv2

    from wsss.cam.iem import dilation_kernel

    out = np.zeros_like(cam, dtype=np.float32)
    disc = dilation_kernel(cam.shape[1:], 0.05)
    for k in range(cam.shape[0]):
        peak = float(cam[k].max())
        if peak <= 0:
            continue
        support = cam[k] >= start * peak
        if disc is not None:
            support = cv2.dilate(support.astype(np.uint8), disc) > 0
        top = float(anomaly[support].max())
        if top > 0:
            out[k] = np.where(support, anomaly / top, 0.0)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from wsss.config import PseudoConfig
    from wsss.labels import IGNORE
    from wsss.refine.pseudo import label_image
    from wsss.refine.unary import unary_map
    from wsss.stages.retrain import fuse

    unaries = args.unary.split(",")
    weights = [float(v) for v in args.fuse.split(",")] if args.fuse else []
    if weights and unaries != ["cam"]:
        raise SystemExit("--fuse sweeps the retrain round's fused map: leave --unary at cam")
    data = [
        it
        for run in args.runs
        for it in items(
            run,
            args.split,
            with_anomaly=not weights and unaries != ["cam"],
            segmenter_stage=args.fuse_stage if weights else "",
            flips=args.flips,
        )
    ]
    print(f"{len(data)} defective {args.split} images from {len(args.runs)} run(s)")
    floats = lambda s: [float(v) for v in s.split(",")]  # noqa: E731
    grid = itertools.product(
        args.methods.split(","),
        floats(args.sxy),
        floats(args.compat),
        floats(args.bg),
        args.lift.split(","),
        floats(args.fallback),
        floats(args.confidence),
        [int(v) for v in args.margin.split(",")],
        unaries,
        floats(args.weight),
        floats(args.region),
        weights or [None],
    )
    results = []
    seen = set()
    default_confidence = PseudoConfig().confidence
    for method, sxy, compat, bg, lift, fallback, confidence, margin, unary, weight, region, fuse_weight in grid:
        key = (method, bg, lift, fallback) if method == "threshold" else (method, sxy, compat, bg, lift, fallback)
        if confidence != default_confidence:
            key += ("confidence", confidence)
        if margin:
            key += ("margin", margin)
        if unary != "cam":
            key += (unary, weight if unary == "fusion" else None, region if unary == "region" else None)
        if fuse_weight is not None:
            key += ("fuse", fuse_weight)
        if key in seen:
            continue
        seen.add(key)
        fused = {"unary": unary, "anomaly_weight": weight} if unary in ("anomaly", "fusion") else {}
        base = PseudoConfig(
            method=method, bg_prior=bg, fallback=fallback, confidence=confidence, margin=margin, **fused
        )
        cfg = dataclasses.replace(base, crf=dataclasses.replace(base.crf, bilateral_sxy=sxy, bilateral_compat=compat))
        ious = []
        # extra: the run's anomaly map (--unary other than cam) or its --fuse-stage segmenter's probabilities (--fuse)
        for _, image, cam, gt, called, scale, floor, extra in data:
            c = lifted(cam, scale, floor) if lift == "1" and called else cam
            if fuse_weight is not None:
                c = fuse(extra, c, fuse_weight)
            elif unary == "region":
                c = region_unary(c, extra, region)
            elif unary != "cam":
                c = unary_map(c, extra, cfg)
            mask = label_image(image, c, cfg, called).mask
            pred = (mask > 0) & (mask != IGNORE)
            union = np.count_nonzero(pred | gt)
            ious.append(np.count_nonzero(pred & gt) / union if union else 1.0)
        results.append((float(np.mean(ious)), key))
        print(f"{100 * results[-1][0]:6.2f}%  {key}", flush=True)
    print("\nbest first:")
    for miou, key in sorted(results, reverse=True):
        print(f"{100 * miou:6.2f}%  {key}")


if __name__ == "__main__":
    main()
