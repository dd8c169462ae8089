"""Benchmark: scaling: the fast CRF against pydensecrf2, the CRF process pool, and the GPU fast paths.

Starts from bench/pseudo_masks.py's finished runs (``--reuse``, their ``<dataset>-pseudo-masks`` run: the DFC, the
extended CAMs and the image scores). On the same test images of each dataset:

1. the PyTorch CRF (``pseudo.crf.backend=torch``) at each ``--scales`` resolution (``pseudo.crf.scale``: the
   downsample-infer-upsample scheme) against pydensecrf2 at full resolution: images/s of each, timed interleaved
   image by image in one process (so background load falls on all), the IoU between each one's masks and
   pydensecrf2's, and each one's mIoU_def against the ground truth (METHOD.md 8, masks gated by the sample score as
   the pipeline does);
2. pseudo-labelling with 1 process against every core (the forkserver pool), same images, same run.

With ``--device cuda`` the torch CRF runs on the GPU. Training throughput with bf16 + channels_last against fp32 on a
GPU is bench/classifier.py's interleaved measurement run with ``--device cuda`` (it switches both on).

    python bench/scale.py --reuse runs/bench-pseudo-masks [--images 24] [--scales 1,0.5,0.25] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from pseudo_masks import BASE, add_config_options, config, pool_speedup  # noqa: E402

from wsss.cam.gate import read_calls  # noqa: E402
from wsss.cam.io import cam_path, read_cam, read_cam_meta  # noqa: E402
from wsss.data.images import read_image, read_mask  # noqa: E402
from wsss.data.index import read_dataset_info, read_eval_index  # noqa: E402
from wsss.evaluation.metrics import SegAccumulator  # noqa: E402
from wsss.refine.pseudo import label_image  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reuse", type=Path, required=True, help="a bench/pseudo_masks.py output folder")
    p.add_argument("--images", type=int, default=24, help="test images per dataset (defective ones first)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-scale")
    p.add_argument("--scales", default="1,0.5,0.25", help="pseudo.crf.scale values of the torch backend to compare")
    add_config_options(p)  # the pseudo-mask benchmark's (--device cuda runs the torch CRF on the GPU)
    return p.parse_args(argv)


def crf_variants(cfg, device: str, scales: list[float]) -> dict:
    """The pseudo-label config of every CRF compared: pydensecrf2 (the reference, full resolution) and the torch
    backend at each ``scales`` fraction of the image size (``pseudo.crf.scale``)."""
    out = {"pydensecrf2": cfg.pseudo}
    for s in scales:
        crf = dataclasses.replace(
            cfg.pseudo.crf, backend="torch", device="cuda" if device.startswith("cuda") else "cpu", scale=s
        )
        out[f"torch@{s:g}"] = dataclasses.replace(cfg.pseudo, crf=crf)
    return out


def crf_comparison(run_dir: Path, cfg, n: int, device: str, scales: list[float]) -> dict:
    """Every CRF variant on the same ``n`` test images (defective first): speed, agreement with pydensecrf2, quality."""
    meta = read_cam_meta(run_dir / "cam")
    calls = read_calls(run_dir / "cam")
    info = read_dataset_info(run_dir / "prepare" / "index.csv")
    rows = sorted(read_eval_index(run_dir / "prepare" / "index.csv", "test"), key=lambda r: not r.labels)[:n]
    variants = crf_variants(cfg, device, scales)
    seconds, acc = dict.fromkeys(variants, 0.0), {k: SegAccumulator() for k in variants}
    agreement: dict[str, list[float]] = {k: [] for k in variants}
    for r in rows:
        image = read_image(r.path)
        cam = read_cam(cam_path(run_dir / "cam", r.id), image.shape[:2], len(meta["classes"]))
        called = calls[r.id]
        gt = read_mask(r.mask, info.mask_threshold) if r.mask else np.zeros(image.shape[:2], bool)
        masks = {}
        for name, pcfg in variants.items():  # interleaved image by image: background load falls on every variant
            t0 = time.perf_counter()
            mask = label_image(image, cam, pcfg, called).mask
            seconds[name] += time.perf_counter() - t0
            masks[name] = (mask > 0) & (mask != 255)
            acc[name].add(masks[name], gt)
        ref = masks["pydensecrf2"]
        for name, m in masks.items():
            if (ref | m).any():
                agreement[name].append(float((ref & m).sum() / (ref | m).sum()))
    return {
        name: {
            "images_per_s": len(rows) / seconds[name],
            "speedup": seconds["pydensecrf2"] / seconds[name],
            "mask_iou_with_pydensecrf2": float(np.mean(agreement[name])) if agreement[name] else None,
            "miou_def": acc[name].miou_def(),
            "images": len(rows),
        }
        for name in variants
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for dataset in [d for d in args.datasets.split(",") if d]:
        run_dir = args.reuse / f"{dataset}-{BASE}"
        if not (run_dir / "cam" / "manifest.json").is_file():
            sys.exit(f"--reuse {run_dir}: no finished cam stage; run bench/pseudo_masks.py first")
        cfg = config(args, dataset, BASE)
        scales = [float(x) for x in args.scales.split(",") if x]
        r = {"crf": crf_comparison(run_dir, cfg, args.images, args.device, scales)}
        r["pool"] = pool_speedup(run_dir, cfg, args.images)
        results[dataset] = r
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        print(f"[{dataset}] {json.dumps(r)}", flush=True)
    print()
    print("| dataset | CRF | images/s | speed-up vs pydensecrf2 | mask IoU with pydensecrf2 | mIoU_def |")
    print("|---|---|---|---|---|---|")
    for d, r in results.items():
        for name, c in r["crf"].items():
            print(
                f"| {d} | {name} | {c['images_per_s']:.2f} | {c['speedup']:.2f}x "
                f"| {c['mask_iou_with_pydensecrf2']:.3f} | {100 * c['miou_def']:.2f}% |"
            )
    print()
    for d, r in results.items():
        p = r["pool"]
        print(f"[{d}] pseudo-labels with 1 -> {p['cores']} processes: {p['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
