"""Benchmark: a recipe from configs/ run exactly as a user runs it, on one or more folds, scored on the test split.

Each fold is ``wsss run --config RECIPE --run-dir OUT/fold<k> --set prepare.split.fold=<k>`` in a subprocess (the
run folder, the fold and the device are the only things it changes; ``--pipeline`` picks an ablation pipeline into
its own folder). Then every mask-writing stage of the run is evaluated on the test split (METHOD.md 8: image AP of
that stage's scores, mIoU_def, pooled IoU, Seg_mIoU, Seg_Recall@0.5, and pixel AP of the stage's ungated probability
maps where it writes them: the segmenter's ``probs/``), and each stage's wall time is read from its manifest.
Finished stages are skipped by ``wsss run`` itself, so a re-run only collects.

    python bench/recipe.py --config configs/ksdd.yaml --folds 0,1,2 --out /tmp/bench/ksdd
    python bench/recipe.py --config configs/mtd.yaml --out /tmp/bench/mtd
    python bench/recipe.py --config configs/ksdd.yaml --folds 0 --out /tmp/bench/ksdd --pipeline cam-crf --reuse fold
    python bench/recipe.py --config configs/ksdd.yaml --folds 0 --out /tmp/bench/ksdd --pipeline cam-threshold \
        --reuse fold-cam-crf

``--reuse NAME`` copies the finished stage folders of the run folder ``OUT/NAME`` (``fold`` = this fold's recipe run,
``fold-cam-crf`` = its cam-crf ablation) into a new ablation run first; ``wsss run`` then re-runs whatever its
manifests say is stale (the `cam` stage without IEM, say) and skips the rest.

``--variant NAME --set KEY=VALUE ...`` measures a setting against the recipe: the runs go to ``OUT/fold<k>-NAME``
(with ``--reuse fold``, only the stages the setting changes run again), every ``--set`` is passed to ``wsss run``,
and ``--splits val,test`` reports the validation split (where a setting is chosen) beside the test split:

    python bench/recipe.py --config configs/ksdd.yaml --folds 0,1,2 --out /tmp/bench/ksdd --reuse fold \
        --variant kd0 --set segmenter.kd_weight=0 --splits val,test

``--seeds 0,1,2`` runs every fold at every seed (``run.seed``, into ``OUT/fold<k>[-NAME]-s<seed>``) and reports each
figure's mean, min and max over all runs, and the seed spread: the largest minus the smallest figure over the seeds
of one fold, averaged over the folds. ``--seed-key segmenter.seed`` varies only that stage's seed: with ``--reuse``
the stages before it are held fixed, which measures one stage's share of the spread. ``--jobs N`` runs N runs side by
side (each logs to ``OUT/<run>.log``), ``--threads N`` gives each run N CPU threads:

    python bench/recipe.py --config configs/ksdd.yaml --folds 0 --out /tmp/bench/ksdd --reuse fold \
        --variant segseed --seeds 0,1,2 --seed-key segmenter.seed --jobs 2 --threads 1 --splits val,test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MASK_STAGES = ("pseudo-labels", "retrain", "train-segmenter")
METRICS = ("ap", "miou_def", "pooled_iou", "seg_miou", "seg_recall_0_5", "pixel_ap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="a recipe, e.g. configs/ksdd.yaml")
    p.add_argument("--folds", default="", help="comma-separated prepare.split.fold values (kfold recipes)")
    p.add_argument("--out", type=Path, required=True, help="folder of the run folders")
    p.add_argument("--pipeline", default="", help="run this pipeline instead of the recipe's (an ablation)")
    p.add_argument("--device", default="", help="run.device (cpu, cuda); default the recipe's")
    p.add_argument("--collect", action="store_true", help="only collect finished runs, run nothing")
    p.add_argument("--reuse", default="", help="copy finished stages from OUT/<this, 'fold' replaced by fold<k>>")
    p.add_argument("--variant", default="", help="name of a variant of the recipe: runs go to OUT/fold<k>-NAME")
    p.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE passed to wsss run (repeatable)")
    p.add_argument("--splits", default="test", help="splits to report, e.g. val,test (choose on val)")
    p.add_argument("--seeds", default="", help="comma-separated seeds: every fold runs at each (OUT/...-s<seed>)")
    p.add_argument("--seed-key", default="run.seed", help="the seed --seeds sets, e.g. segmenter.seed (one stage)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (each logs to OUT/<run>.log)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per run (OMP/MKL); 0 = the environment's")
    args = p.parse_args(argv)
    if args.sets and not args.variant:
        p.error("--set changes the recipe: name the variant with --variant NAME (its own run folders)")
    if not args.seed_key.endswith(".seed"):
        p.error(f"--seed-key {args.seed_key}: expected a seed setting such as run.seed or segmenter.seed")
    return args


def run_fold(args: argparse.Namespace, fold: str, seed: str = "", log: Path | None = None) -> Path:
    """Run (or with ``--collect`` only locate) one fold at one seed; returns its run folder."""
    name = f"fold{fold}" if fold else "run"
    run_dir = args.out / run_name(args, fold, seed)
    source = args.out / args.reuse.replace("fold", name, 1).replace("{seed}", seed) if args.reuse else None
    if source is not None and not run_dir.exists() and not args.collect:
        # every finished stage: `wsss run` re-runs those whose manifests no longer match (the setting's stage and
        # everything after it) and skips the rest
        for manifest in sorted(source.glob("*/manifest.json")):
            if json.loads(manifest.read_text()).get("status") == "done" and manifest.parent.name != "evaluate":
                shutil.copytree(manifest.parent, run_dir / manifest.parent.name)
    if not args.collect:
        cmd = [sys.executable, "-m", "wsss.cli", "run", "--config", str(args.config), "--run-dir", str(run_dir)]
        for s in run_sets(args, fold, seed):
            cmd += ["--set", s]
        env = os.environ | {"WSSS_PROGRESS": "0"}
        if args.threads:
            env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        print("+", " ".join(cmd), f"> {log}" if log else "", flush=True)
        if log is None:
            subprocess.run(cmd, check=True, env=env)
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                subprocess.run(cmd, check=True, env=env, stdout=f, stderr=subprocess.STDOUT)
    return run_dir


def run_sets(args: argparse.Namespace, fold: str, seed: str) -> list[str]:
    """Every ``--set`` of one run: the fold, the pipeline, the device, the seed, then the variant's settings."""
    sets = [f"prepare.split.fold={fold}"] if fold else []
    sets += [f"run.pipeline={args.pipeline}"] if args.pipeline else []
    sets += [f"run.device={args.device}"] if args.device else []
    sets += [f"{args.seed_key}={seed}"] if seed else []
    return sets + args.sets


def score(
    run_dir: Path, config: Path, sets: list[str], split: str = "test"
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """``split`` metrics of each mask-writing stage, and every stage's seconds (from its manifest)."""
    from wsss.config import load_config
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import evaluate_stage

    cfg = load_config(config, sets)
    index = run_dir / "prepare" / "index.csv"
    rows, info = read_eval_index(index, split=split), read_dataset_info(index)
    metrics, seconds = {}, {}
    for manifest in sorted(run_dir.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        if m.get("status") == "done":
            seconds[m["stage"]] = float(m["seconds"])
    for stage in MASK_STAGES:
        out = run_dir / stage
        if not (out / "masks").is_dir():
            continue
        metrics[stage] = report_metrics(evaluate_stage(rows, info, out, cfg.evaluate))
    return metrics, seconds


def report_metrics(report: Any) -> dict[str, float]:
    """The :data:`METRICS` of an evaluation report, NaN where it has none (no masks, no probabilities)."""
    return {k: float("nan") if getattr(report, k) is None else float(getattr(report, k)) for k in METRICS}


def pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.2f}%"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)
    folds = [f.strip() for f in args.folds.split(",") if f.strip()] or [""]
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()] or [""]
    jobs = [(fold, seed) for fold in folds for seed in seeds]
    if args.jobs > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(args.jobs) as pool:
            dirs = list(pool.map(lambda j: run_fold(args, *j, log=args.out / f"{run_name(args, *j)}.log"), jobs))
    else:
        dirs = [run_fold(args, fold, seed) for fold, seed in jobs]
    for split in args.splits.split(","):
        results = []
        for (fold, seed), run_dir in zip(jobs, dirs, strict=True):
            sets = [s for s in run_sets(args, fold, seed) if not s.startswith("run.device=")]
            results.append((fold, seed, *score(run_dir, args.config, sets, split)))
        report(args, split, results)


def run_name(args: argparse.Namespace, fold: str, seed: str) -> str:
    name = f"fold{fold}" if fold else "run"
    suffix = "-".join(s for s in (args.pipeline, args.variant, f"s{seed}" if seed else "") if s)
    return f"{name}-{suffix}" if suffix else name


def spread(values: list[tuple[str, str, float]]) -> float:
    """The seed spread: per fold, the largest minus the smallest value over its seeds, averaged over the folds
    (nan with one seed per fold)."""
    by_fold: dict[str, list[float]] = {}
    for fold, _, v in values:
        by_fold.setdefault(fold, []).append(v)
    ranges = [max(v) - min(v) for v in by_fold.values() if len(v) > 1]
    return float(np.mean(ranges)) if ranges else float("nan")


def report(args: argparse.Namespace, split: str, results: list) -> None:
    """``results``: (fold, seed, metrics by stage, seconds by stage) per run."""
    what = " + ".join([args.pipeline or "recipe pipeline", *args.sets])
    seeded = any(seed for _, seed, _, _ in results)
    print(f"\n## {args.config} ({what}), {split} split\n")
    print("| fold | seed | stage | image AP | mIoU_def | pooled IoU | Seg_mIoU | Seg_Recall@0.5 | pixel AP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fold, seed, metrics, _ in results:
        for stage, m in metrics.items():
            print(f"| {fold or '-'} | {seed or '-'} | {stage} | " + " | ".join(pct(m[k]) for k in METRICS) + " |")
    if len(results) > 1:
        for stage in MASK_STAGES:
            vals = [(r[0], r[1], r[2][stage]) for r in results if stage in r[2]]
            if len(vals) != len(results):
                continue
            cells, spreads = [], []
            for k in METRICS:
                a = np.array([v[k] for _, _, v in vals])
                cells.append(f"{pct(a.mean())} ({pct(a.min())}-{pct(a.max())})")
                spreads.append(pct(spread([(f, s, v[k]) for f, s, v in vals])))
            print(f"| mean (min-max) of {len(vals)} | | {stage} | " + " | ".join(cells) + " |")
            if seeded:
                print(f"| seed spread ({args.seed_key}) | | {stage} | " + " | ".join(spreads) + " |")
    stages = list(results[0][3])
    print("\n| fold | seed | " + " | ".join(f"{s} s" for s in stages) + " | total min |")
    print("|---|---|" + "---|" * (len(stages) + 1))
    for fold, seed, _, seconds in results:
        total = sum(seconds.values()) / 60
        cells = " | ".join(f"{seconds[s]:.0f}" if s in seconds else "-" for s in stages)
        print(f"| {fold or '-'} | {seed or '-'} | {cells} | {total:.1f} |")


if __name__ == "__main__":
    main()
