"""Benchmark: scaling (issue 7): the fast CRF against pydensecrf2, the CRF process pool, and the GPU fast paths.

Starts from bench/pseudo_masks.py's finished runs (``--reuse``, their ``<dataset>-pseudo-masks`` run: the DFC, the
extended CAMs and the image scores). On the same test images of each dataset:

1. the PyTorch CRF (``pseudo.crf.backend=torch``) against pydensecrf2: images/s of each, timed interleaved image by
   image in one process (so background load falls on both), the IoU between their masks, and each one's mIoU_def
   against the ground truth (METHOD.md 8, masks gated by the sample score as the pipeline does);
2. pseudo-labelling with 1 process against every core (the forkserver pool), same images, same run.

With ``--device cuda`` the torch CRF runs on the GPU. Training throughput with bf16 + channels_last against fp32 on a
GPU is bench/classifier.py's interleaved measurement run with ``--device cuda`` (it switches both on).

    python bench/scale.py --reuse runs/bench-pseudo-masks [--images 24] [--device cuda]
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

from wsss.cam.io import cam_path, read_cam, read_cam_meta  # noqa: E402
from wsss.data.images import read_image, read_mask  # noqa: E402
from wsss.data.index import read_dataset_info, read_eval_index  # noqa: E402
from wsss.evaluation import read_scores  # noqa: E402
from wsss.metrics import SegAccumulator  # noqa: E402
from wsss.refine.pseudo import label_image  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reuse", type=Path, required=True, help="a bench/pseudo_masks.py output folder")
    p.add_argument("--images", type=int, default=24, help="test images per dataset (defective ones first)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-scale")
    add_config_options(p)  # the pseudo-mask benchmark's (--device cuda runs the torch CRF on the GPU)
    return p.parse_args(argv)


def crf_comparison(run_dir: Path, cfg, n: int, device: str) -> dict:
    """Both CRF backends on the same ``n`` test images (defective first): speed, agreement, quality."""
    meta = read_cam_meta(run_dir / "cam")
    scores = read_scores(run_dir / "cam" / "scores.csv")
    info = read_dataset_info(run_dir / "prepare" / "index.csv")
    rows = sorted(read_eval_index(run_dir / "prepare" / "index.csv", "test"), key=lambda r: not r.labels)[:n]
    torch_crf = dataclasses.replace(
        cfg.pseudo.crf, backend="torch", device="cuda" if device.startswith("cuda") else "cpu"
    )
    variants = {"pydensecrf2": cfg.pseudo, "torch": dataclasses.replace(cfg.pseudo, crf=torch_crf)}
    seconds, acc = dict.fromkeys(variants, 0.0), {k: SegAccumulator() for k in variants}
    agreement = []
    for r in rows:
        image = read_image(r.path)
        cam = read_cam(cam_path(run_dir / "cam", r.id), image.shape[:2], len(meta["classes"]))
        called = scores[r.id] >= float(meta["score_threshold"])
        gt = read_mask(r.mask, info.mask_threshold) if r.mask else np.zeros(image.shape[:2], bool)
        masks = {}
        for name, pcfg in variants.items():
            t0 = time.perf_counter()
            masks[name] = label_image(image, cam, pcfg, called).mask
            seconds[name] += time.perf_counter() - t0
            acc[name].add((masks[name] > 0) & (masks[name] != 255), gt)
        a, b = ((m > 0) & (m != 255) for m in masks.values())
        if (a | b).any():
            agreement.append(float((a & b).sum() / (a | b).sum()))
    out = {f"{k}_images_per_s": len(rows) / v for k, v in seconds.items()}
    out |= {"speedup": seconds["pydensecrf2"] / seconds["torch"], "images": len(rows)}
    out |= {"mask_iou_between": float(np.mean(agreement)) if agreement else None}
    out |= {f"{k}_miou_def": acc[k].miou_def() for k in variants}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for dataset in [d for d in args.datasets.split(",") if d]:
        run_dir = args.reuse / f"{dataset}-{BASE}"
        if not (run_dir / "cam" / "manifest.json").is_file():
            sys.exit(f"--reuse {run_dir}: no finished cam stage; run bench/pseudo_masks.py first")
        cfg = config(args, dataset, BASE)
        r = {"crf": crf_comparison(run_dir, cfg, args.images, args.device)}
        r["pool"] = pool_speedup(run_dir, cfg, args.images)
        results[dataset] = r
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        print(f"[{dataset}] {json.dumps(r)}", flush=True)
    print()
    print(
        "| dataset | images | pydensecrf2 img/s | torch CRF img/s | speed-up | mask IoU between | mIoU_def pydensecrf2 "
        "| mIoU_def torch | pool 1 -> N processes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for d, r in results.items():
        c, p = r["crf"], r["pool"]
        print(
            f"| {d} | {c['images']} | {c['pydensecrf2_images_per_s']:.2f} | {c['torch_images_per_s']:.2f} "
            f"| {c['speedup']:.2f}x | {c['mask_iou_between']:.4f} | {100 * c['pydensecrf2_miou_def']:.2f}% "
            f"| {100 * c['torch_miou_def']:.2f}% | {p['speedup']:.2f}x ({p['cores']} cores) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
