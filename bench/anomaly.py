"""Benchmark: anomaly priors (METHOD.md 7) on real data: anomaly maps alone, CAM alone, their fusion, and
the pseudo-mask pipeline with and without anomaly-guided pretraining.

Starts from bench/pseudo_masks.py's runs (``--reuse``: its ``<dataset>-pseudo-masks`` run supplies the DFC, the
extended CAMs and the CAM-alone pseudo-masks; its ``<dataset>-cam-iem-crf`` run the CAM-alone masks without the
retrain round). Per dataset, on the test split (METHOD.md 8, masks gated by the DFC's sample decision unless said):

1. ``anomaly map``: the `anomaly` stage's maps alone (PatchCore on the trained DFC's backbone): pixel AUROC, and
   mIoU_def of the raw map thresholded at the level (one of :data:`QUANTILES` of the validation defective images'
   map values) that maximises validation mIoU_def (ungated: the map's own quality);
2. ``CAM -> CRF`` (cam-iem-crf), ``anomaly -> CRF`` (``pseudo.unary=anomaly``), ``fusion -> CRF``
   (``pseudo.unary=fusion``): `pseudo-labels` from each unary, same DFC, same CRF;
3. ``pretrain -> DFC``: anomaly-guided pretraining, then the DFC trained from it; its test image AP (one view, as
   bench/classifier.py measures) against the DFC trained from scratch;
4. ``CAM + retrain`` (pseudo-masks), ``fusion + retrain``, ``pretrain + fusion + retrain``: the pseudo-mask pipeline
   (no distillation) without and with anomaly priors; the last trains a new DFC from the anomaly-guided pretrained
   backbone (its image AP is the DFC's: compare with the others' to see what pretraining did).

    python bench/anomaly.py --reuse /tmp/bench/pm --datasets ksdd --epochs 20      # same options as that run

Results go to ``<out>/results.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from pseudo_masks import BASE, METRICS, add_config_options, config, fmt, reuse_stages  # noqa: E402

from wsss.anomaly.io import (  # noqa: E402
    anomaly_path,
    normalise,  # noqa: E402
    read_map,
    read_range,
)
from wsss.config.pipelines import load_pipeline  # noqa: E402
from wsss.data.images import read_mask  # noqa: E402
from wsss.data.index import read_dataset_info, read_eval_index  # noqa: E402
from wsss.evaluation.metrics import SegAccumulator, auroc  # noqa: E402
from wsss.runs import Run  # noqa: E402

# thresholds tried on the validation split: these quantiles of its defective images' raw map values
QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
PIXEL_STRIDE = 2  # pixel AUROC on every 2nd row and column (a quarter of the pixels: same ranking, less memory)
STAGES = {  # variant -> (run.pipeline, stages run, extra overrides)
    "pretrain -> DFC": ("full-pretrain", ["pretrain", "train-classifier"], []),
    "anomaly -> CRF": ("full-anomaly", ["cam", "anomaly", "pseudo-labels"], ["pseudo.unary=anomaly"]),
    "fusion -> CRF": ("full-anomaly", ["cam", "anomaly", "pseudo-labels"], []),
    "fusion + retrain": ("full-anomaly", ["cam", "anomaly", "pseudo-labels", "retrain"], []),
    "pretrain + fusion + retrain": (
        "full-pretrain",
        ["pretrain", "train-classifier", "cam", "anomaly", "pseudo-labels", "retrain"],
        [],
    ),
}
REUSED = {"CAM -> CRF": "cam-iem-crf", "CAM + retrain": BASE}  # variant -> the pseudo-mask benchmark's run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_options(p)
    p.add_argument("--reuse", type=Path, required=True, help="a bench/pseudo_masks.py output folder")
    p.add_argument("--variants", default=",".join(["anomaly map", *REUSED, *STAGES]))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-anomaly")
    return p.parse_args(argv)


def map_quality(run_dir: Path) -> dict:
    """Pixel AUROC of the raw maps on the test split, and test mIoU_def at the validation-best threshold."""
    index = run_dir / "prepare" / "index.csv"
    info = read_dataset_info(index)
    lo, hi = read_range(run_dir / "anomaly")

    def pairs(split: str):
        for r in read_eval_index(index, split):
            if r.mask is not None:
                yield read_map(anomaly_path(run_dir / "anomaly", r.id)), read_mask(r.mask, info.mask_threshold)

    val = [(m, g) for m, g in pairs("val") if g.any()]
    pooled = np.concatenate([m[::PIXEL_STRIDE, ::PIXEL_STRIDE].ravel() for m, _ in val]) if val else np.zeros(1)
    best_t, best = None, -1.0
    for t in np.quantile(pooled, QUANTILES):
        acc = SegAccumulator()
        for m, g in val:
            acc.add(m >= t, g)
        if val and acc.miou_def() > best:
            best_t, best = float(t), acc.miou_def()
    truth, scores, acc = [], [], SegAccumulator()
    for m, g in pairs("test"):
        truth.append(g[::PIXEL_STRIDE, ::PIXEL_STRIDE].ravel())
        scores.append(m[::PIXEL_STRIDE, ::PIXEL_STRIDE].ravel())
        if best_t is not None:
            acc.add(m >= best_t, g)
    return {
        "pixel_auroc": auroc(np.concatenate(truth), np.concatenate(scores)),
        "threshold": best_t,
        "threshold_normalised": float(normalise(np.array([best_t]), lo, hi)[0]) if best_t is not None else None,
        "val_miou_def": best,
        "miou_def": acc.miou_def() if best_t is not None else None,
    }


def run_variant(args, dataset: str, variant: str, done_runs: list[Path]) -> tuple[Path, float]:
    """Run one variant's stages (reusing what earlier runs finished under the same config); its folder and seconds."""
    pipeline, stages, extra = STAGES[variant]
    masks = "retrain" if "retrain" in stages else "pseudo-labels"
    evaluate = ["evaluate"] if "pseudo-labels" in stages else []  # "pretrain -> DFC" writes no masks
    overrides = [*args.overrides, *extra, f"evaluate.masks={masks}"]
    cfg = config(argparse.Namespace(**{**vars(args), "overrides": overrides}), dataset, pipeline)
    run_dir = args.out / f"{dataset}-{variant.replace(' ', '').replace('->', '-').replace('+', '-')}"
    copied = reuse_stages(run_dir, cfg, ["prepare", "train-classifier", *stages], done_runs)
    print(f"[{dataset} {variant}] reusing finished stages: {', '.join(copied) or 'none'}", flush=True)
    t0 = time.perf_counter()
    run = Run(run_dir, cfg, echo=lambda m, tag=f"[{dataset} {variant}]": print(tag, m, flush=True))
    todo = {"prepare", "train-classifier", *stages, *evaluate}
    run.run_pipeline([s for s in load_pipeline(pipeline).stages if s in todo])
    return run_dir, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = [v for v in args.variants.split(",") if v]
    unknown = [v for v in wanted if v not in ("anomaly map", *REUSED, *STAGES)]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}")
    results = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        base = args.reuse / f"{dataset}-{BASE}"
        if not (base / "cam" / "manifest.json").is_file():
            sys.exit(f"--reuse {base}: no finished cam stage; run bench/pseudo_masks.py first")
        done_runs = [base, args.reuse / f"{dataset}-cam-iem-crf"]
        for variant in wanted:
            row = {"dataset": dataset, "variant": variant}
            if variant in REUSED:
                report = json.loads(
                    (args.reuse / f"{dataset}-{REUSED[variant]}" / "evaluate" / "report.json").read_text()
                )
                row |= {k: report[k] for k in METRICS}
            elif variant == "anomaly map":  # the fusion run's anomaly stage (run first if it is not there yet)
                run_dir, _ = run_variant(args, dataset, "fusion -> CRF", done_runs)
                done_runs.append(run_dir)
                row |= map_quality(run_dir)
                row["anomaly_seconds"] = json.loads((run_dir / "anomaly" / "manifest.json").read_text())["seconds"]
            elif variant == "pretrain -> DFC":  # test image AP of the DFC with and without the pretrained start
                from classifier import test_scores

                run_dir, row["seconds"] = run_variant(args, dataset, variant, done_runs)
                done_runs.append(run_dir)
                index = run_dir / "prepare" / "index.csv"
                row["dfc_ap"], row["dfc_auroc"], _, _ = test_scores(run_dir / "train-classifier", index, args.device)
                row["dfc_ap_without"], row["dfc_auroc_without"], _, _ = test_scores(
                    base / "train-classifier", index, args.device
                )
                pre = json.loads((run_dir / "pretrain" / "pretrain.json").read_text())
                row |= {"pretrain_first_loss": pre["first_loss"], "pretrain_last_loss": pre["last_loss"]}
            else:
                run_dir, row["seconds"] = run_variant(args, dataset, variant, done_runs)
                done_runs.append(run_dir)
                report = json.loads((run_dir / "evaluate" / "report.json").read_text())
                row |= {k: report[k] for k in METRICS}
            results.append(row)
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
            print(json.dumps(row), flush=True)
    print()
    print("| dataset | variant | mIoU_def | pooled IoU | Seg_mIoU | Seg_Recall@0.1 | @0.5 | image AP | pixel AUROC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cells = [fmt(r[k], k == "ap") if k in r else "-" for k in METRICS]
        px = f"{r['pixel_auroc']:.4f}" if "pixel_auroc" in r else "-"
        print(f"| {r['dataset']} | {r['variant']} | " + " | ".join(cells) + f" | {px} |")
    for r in results:
        if "dfc_ap" in r:
            print(
                f"[{r['dataset']}] DFC test image AP (single view): {r['dfc_ap']:.4f} from the pretrained backbone, "
                f"{r['dfc_ap_without']:.4f} from scratch; pretraining loss {r['pretrain_first_loss']:.4f} -> "
                f"{r['pretrain_last_loss']:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
