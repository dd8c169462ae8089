"""Benchmark: the Defect Focus Classifier and its modules on real data.

For each dataset (MTD, KSDD from ``../shared/data``) and each variant (plain CAM classifier, +CLM, +GCM, +both)
this runs the real `prepare` and `train-classifier` stages, then scores the test split with the best checkpoint
and reports image AP / AUROC. Training throughput of each variant relative to the plain classifier is measured
separately, interleaved in one process (:func:`throughput`): absolute times on shared machines are noise, and
even runs one after the other see different load, so only ratios taken side by side are reported.

    python bench/classifier.py                       # CPU: reduced resolution, KSDD fold 0
    python bench/classifier.py --device cuda --full  # GPU: full resolution, all KSDD folds

Results go to ``<out>/results.json`` and a markdown table on stdout (for docs/lab-notes/benchmarks-log.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from wsss.config import load_config
from wsss.data.index import read_train_index
from wsss.evaluation.metrics import auroc, average_precision
from wsss.runs import Run

# torch-importing modules are imported inside the functions that need them: bench/pseudo_masks.py imports this module,
# and its CRF pool's forkserver workers re-run the main script's top-level imports (CPython ignores preloading
# __main__), which with torch costs seconds per worker and made the pool look slower than one process.

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "plain": ("classifier.clm.enabled=false", "classifier.gcm.enabled=false"),
    "clm": ("classifier.clm.enabled=true", "classifier.gcm.enabled=false"),
    "gcm": ("classifier.clm.enabled=false", "classifier.gcm.enabled=true"),
    "both": ("classifier.clm.enabled=true", "classifier.gcm.enabled=true"),
}
# [H, W] each dataset is trained at: CPU-feasible by default, close to native with --full.
SIZES = {"mtd": ([128, 128], [256, 256]), "ksdd": ([320, 128], [640, 256])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder holding mtd/ and ksdd/")
    p.add_argument("--datasets", default="mtd,ksdd")
    p.add_argument("--variants", default="plain,clm,gcm,both")
    p.add_argument("--ksdd-folds", default=None, help="comma list of KSDD folds (default: 0 on CPU, 0,1,2 with --full)")
    p.add_argument("--epochs", type=int, default=None, help="default 12 (40 with --full)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="full resolution (for a GPU)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-classifier")
    p.add_argument("--size", action="append", default=[], help="DATASET=HxW input size, e.g. mtd=96x96 (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override KEY=VALUE")
    p.add_argument("--throughput-rounds", type=int, default=5, help="interleaved timing rounds (0 = skip)")
    p.add_argument("--throughput-steps", type=int, default=4, help="training steps per variant and round")
    return p.parse_args(argv)


def test_scores(stage_dir: Path, index: Path, device: str) -> tuple[float, float, int, int]:
    """Image AP and AUROC of the trained DFC on the test split; also the test image and defect counts."""
    from wsss.data.classifier_data import ImageDataset
    from wsss.models.classifier import load_dfc
    from wsss.train.classifier import score_dataset

    model, meta = load_dfc(stage_dir, device)
    rows = read_train_index(index, "test")
    ds = ImageDataset(rows, classes=meta["classes"], input_size=meta["input_size"], in_chans=meta["in_chans"])
    ds.preload()
    s, lab, _ = score_dataset(model, ds, device)
    return average_precision(lab, s), auroc(lab, s), len(lab), int(lab.sum())


def epoch_seconds(metrics_csv: Path) -> tuple[float, float, int]:
    """Median seconds per epoch and median images/s over the epochs run (the first, warm-up epoch excluded)."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    body = rows[1:] or rows
    return (
        float(np.median([float(r["seconds"]) for r in body])),
        float(np.median([float(r["images_per_s"]) for r in body])),
        len(rows),
    )


def input_size(args: argparse.Namespace, dataset: str) -> list[int]:
    for item in args.size:
        name, _, hw = item.partition("=")
        if name == dataset:
            return [int(v) for v in hw.lower().split("x")]
    return SIZES[dataset][1 if args.full else 0]


def bench_overrides(args: argparse.Namespace, dataset: str, fold: int | None, variant: str) -> list[str]:
    """The config overrides of one benchmark run (bench/pseudo_masks.py builds on the same ones)."""
    size = input_size(args, dataset)
    overrides = [
        f"dataset.root={args.data / dataset}",
        f"classifier.backbone.name={args.backbone}",
        f"classifier.input_size=[{size[0]},{size[1]}]",
        f"classifier.epochs={args.epochs or (40 if args.full else 12)}",
        f"run.device={args.device}",
        "run.pipeline=full",
        *VARIANTS[variant],
    ]
    if args.device.startswith("cuda"):
        overrides += ["classifier.amp=true", "classifier.channels_last=true", "classifier.workers=8"]
    if fold is not None:
        overrides.append(f"prepare.split.fold={fold}")
    return overrides + list(args.overrides)


def run_one(args, dataset: str, fold: int | None, variant: str) -> dict:
    size = input_size(args, dataset)
    overrides = bench_overrides(args, dataset, fold, variant)
    cfg = load_config(ROOT / "configs" / f"{dataset}.yaml", overrides)
    name = f"{dataset}{'' if fold is None else f'-fold{fold}'}-{variant}"
    run = Run(args.out / name, cfg, echo=lambda m: print(f"[{name}] {m}", flush=True))
    t0 = time.perf_counter()
    stage_dir = run.run_stage("prepare")
    index = stage_dir / "index.csv"
    model_dir = run.run_stage("train-classifier")
    wall = time.perf_counter() - t0
    ap, roc, n, n_def = test_scores(model_dir, index, args.device)
    sec, ips, n_epochs = epoch_seconds(model_dir / "metrics.csv")
    best = json.loads((model_dir / "dfc.json").read_text())["epoch"] + 1
    return {
        "run": name,
        "dataset": dataset,
        "fold": fold,
        "variant": variant,
        "input_size": size,
        "epochs_run": n_epochs,
        "best_epoch": best,
        "test_images": n,
        "test_defective": n_def,
        "test_ap": ap,
        "test_auroc": roc,
        "sec_per_epoch": sec,
        "images_per_s": ips,
        "wall_s": wall,
    }


def throughput(args, dataset: str, fold: int | None, index: Path, variants: list[str]) -> dict[str, float]:
    """Seconds per training image of each variant, measured interleaved in this process.

    Every round runs ``--throughput-steps`` optimisation steps of each variant in turn (data loading included, on
    each variant's own balanced loader); the first round is warm-up, and each variant's median over the other
    rounds is returned. Background load so falls on all variants alike, and their ratio is the per-epoch cost
    ratio (an epoch is the same number of images for every variant).
    """
    import torch

    from wsss.stages.train_classifier import classifier_trainer

    trainers = {}
    for v in variants:
        cfg = load_config(ROOT / "configs" / f"{dataset}.yaml", bench_overrides(args, dataset, fold, v))
        trainers[v] = classifier_trainer(cfg, index, args.out / "throughput-unused", echo=lambda *_: None)
    batches = {v: iter(t.loader(0)) for v, t in trainers.items()}
    per_image: dict[str, list[float]] = {v: [] for v in variants}
    gen = torch.Generator().manual_seed(0)
    for r in range(args.throughput_rounds + 1):
        for v, t in trainers.items():
            t.net.train()
            n, t0 = 0, time.perf_counter()
            for _ in range(args.throughput_steps):
                batch = next(batches[v], None)
                if batch is None:
                    batches[v] = iter(t.loader(r + 1))
                    batch = next(batches[v])
                t.train_batch(batch, gen)
                n += len(batch["image"])
            if r > 0:
                per_image[v].append((time.perf_counter() - t0) / n)
    return {v: float(np.median(s)) for v, s in per_image.items()}


def table(results: list[dict]) -> str:
    lines = [
        "| dataset | fold | variant | input HxW | test imgs (defective) | image AP | AUROC | best/run epochs "
        "| train img/s | time/epoch vs plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        speed = r.get("throughput_s_per_image")
        ratio = r.get("time_vs_plain")
        lines.append(
            f"| {r['dataset']} | {'-' if r['fold'] is None else r['fold']} | {r['variant']} "
            f"| {r['input_size'][0]}x{r['input_size'][1]} | {r['test_images']} ({r['test_defective']}) "
            f"| {r['test_ap']:.4f} | {r['test_auroc']:.4f} | {r['best_epoch']}/{r['epochs_run']} "
            f"| {f'{1 / speed:.1f}' if speed else '-'} | {f'{ratio:.2f}x' if ratio else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = [d for d in args.datasets.split(",") if d]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            sys.exit(f"--variants: unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
    folds = args.ksdd_folds or ("0,1,2" if args.full else "0")
    print(
        f"classifier benchmark: {args.backbone}, device {args.device}, "
        f"{'full' if args.full else 'reduced (CPU-feasible)'} resolution: "
        + ", ".join(f"{d} {input_size(args, d)}" for d in datasets),
        flush=True,
    )
    results = []
    for dataset in datasets:
        for fold in [int(f) for f in folds.split(",")] if dataset == "ksdd" else [None]:
            done = []
            for variant in variants:
                done.append(run_one(args, dataset, fold, variant))
                (args.out / "results.json").write_text(json.dumps(results + done, indent=2))
                print(table(done[-1:]).splitlines()[-1], flush=True)
            if args.throughput_rounds > 0:
                index = args.out / done[0]["run"] / "prepare" / "index.csv"
                speed = throughput(args, dataset, fold, index, variants)
                for r in done:
                    r["throughput_s_per_image"] = speed[r["variant"]]
                    r["time_vs_plain"] = speed[r["variant"]] / speed["plain"] if "plain" in speed else None
                print(
                    f"[{dataset}] interleaved training throughput: "
                    + ", ".join(f"{v} {1 / t:.1f} img/s" for v, t in speed.items()),
                    flush=True,
                )
            results += done
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
