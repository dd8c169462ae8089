"""Benchmark: what a reviewer's corrections are worth: the segmenter's test figures against the number of masks.

On finished recipe runs (``bench/recipe.py``'s ``OUT/fold<k>``), a simulated reviewer corrects N training images:
their ground-truth masks are imported with ``wsss import-review --format png`` into a copy of the run, chosen

- ``confidence``: least confident first, the order of the review page (the masks stage's ``confidence.csv``),
- ``random``: ``--draws`` random draws of N training images (seeds 0, 1, ...),

and the segmenter learns from them, as ``--mode`` says:

- ``round``: ``wsss review-round --epochs E`` (fine-tuning from the run's segmenter: minutes); N = 0 is the same
  round with an empty review, which keeps the segmenter as trained (a round is judged by reviewed masks alone);
- ``loop``: ``wsss review-round --tune --epochs E``: the settings tuned on the reviewed masks, the labelling stages
  they make stale re-run (the retrain round with the reviewed masks), then the round; N = 0 is the control above;
- ``retrain``: ``wsss run-stage train-segmenter --set segmenter.reviewed=...``: the recipe's full training.

Prints test mIoU_def and pixel AP per N and choice (mean over the runs given and the random draws) and writes
``OUT/review_gain.json``. Ground-truth masks are read here (the simulated reviewer) and by evaluation only.

    python bench/review_gain.py /tmp/bench/ksdd/fold1 --config configs/ksdd.yaml --out /tmp/bench/review-gain
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="finished recipe runs")
    p.add_argument("--config", type=Path, required=True, help="the recipe the runs ran")
    p.add_argument("--out", type=Path, required=True, help="folder for the copies and review_gain.json")
    p.add_argument("--n", default="0,5,10,20,40", help="numbers of reviewed training images")
    p.add_argument("--draws", type=int, default=3, help="random draws per N")
    p.add_argument("--mode", choices=["round", "loop", "retrain"], default="round")
    p.add_argument("--epochs", type=int, default=3, help="review-round epochs (--mode round)")
    p.add_argument("--choices", default="confidence,random")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override for the segmenter the reviewer's masks train (repeatable), e.g. segmenter.lr=1e-4; the copies "
        "are named after them",
    )
    return p.parse_args(argv)


def wsss(*args: str) -> None:
    cmd = [sys.executable, "-m", "wsss.cli", *args]
    subprocess.run(cmd, check=True, cwd=ROOT, env=os.environ | {"WSSS_PROGRESS": "0"}, stdout=subprocess.DEVNULL)


def fold_sets(run: Path) -> list[str]:
    fold = json.loads((run / "prepare" / "manifest.json").read_text())["config"]["prepare"]["split"]["fold"]
    return ["--set", f"prepare.split.fold={fold}"]


def ranked_ids(run: Path, choice: str, draw: int) -> list[str] | None:
    """Training ids in the order the simulated reviewer takes them: None = least confident first (the masks the
    segmenter trained on; :func:`wsss.review_round.simulated_review`)."""
    from wsss.data.index import read_train_index

    if choice != "random":
        return None
    ids = [r.id for r in read_train_index(run / "prepare" / "index.csv", "train")]
    return list(np.random.default_rng(draw).permutation(ids))


def one(run: Path, args: argparse.Namespace, choice: str, draw: int, n: int) -> dict[str, float]:
    from wsss.config import load_config
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import evaluate_stage
    from wsss.review_round import copy_stages, fine_tune_settings, simulated_review

    tag = "".join(f"-{key.split('.')[-1]}{value}" for key, _, value in (s.partition("=") for s in args.sets))
    copy = args.out / f"{run.name}-{args.mode}{tag}-{choice}{draw}-n{n}"
    if not (copy / "train-segmenter" / "manifest.json").is_file() or not (copy / "done").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        copy_stages(run, copy)
        base = ["-c", str(args.config), "--run-dir", str(copy), *fold_sets(run)]
        base += [a for s in args.sets for a in ("--set", s)]
        chosen = simulated_review(copy, n, lambda *_: None, ranked_ids(run, choice, draw)) if n else []
        t0 = time.perf_counter()
        if args.mode in ("round", "loop") and chosen:
            wsss("review-round", *(["--tune"] if args.mode == "loop" else []), *base, "--epochs", str(args.epochs))
        elif args.mode in ("round", "loop"):  # the control: the same fine-tuning without reviewed masks
            before = copy / "before-control"
            shutil.copytree(copy / "train-segmenter", before)
            (copy / "reviewed" / "masks").mkdir(parents=True)  # an empty review: the round with N = 0 masks
            sets = [f"segmenter.reviewed={copy / 'reviewed'}", *fine_tune_settings(before, args.epochs)]
            wsss("run-stage", "train-segmenter", *base, "--force", *sum((["--set", s] for s in sets), []))
        elif chosen:
            wsss("run-stage", "train-segmenter", *base, "--set", f"segmenter.reviewed={copy / 'reviewed'}")
        (copy / "done").write_text(f"{time.perf_counter() - t0:.1f}\n")
    cfg = load_config(args.config, fold_sets(run)[1:])
    index = copy / "prepare" / "index.csv"
    report = evaluate_stage(
        read_eval_index(index, split="test"), read_dataset_info(index), copy / "train-segmenter", cfg.evaluate
    )
    return {
        "miou_def": float(report.miou_def),
        "pixel_ap": float(report.pixel_ap),
        "seconds": float((copy / "done").read_text()),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ns = [int(v) for v in args.n.split(",")]
    results: dict[str, dict[int, list[dict[str, float]]]] = {}
    for choice in args.choices.split(","):
        draws = range(args.draws) if choice == "random" else range(1)
        results[choice] = {n: [one(run, args, choice, d, n) for run in args.runs for d in draws] for n in ns}
        if choice == "random" and "confidence" in results:
            results[choice][0] = results["confidence"][0]  # N = 0 is the same whatever the choice
    (args.out / "review_gain.json").write_text(json.dumps(results, indent=1))
    print(
        f"\n{args.mode} ({args.epochs} epochs)" if args.mode in ("round", "loop") else "\nretrain",
        f"over {len(args.runs)} run(s)",
        " ".join(f"--set {s}" for s in args.sets),
    )
    print("\n| reviewed images | " + " | ".join(f"{c}: mIoU_def / pixel AP" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    for n in ns:
        cells = []
        for per_n in results.values():
            m = np.mean([r["miou_def"] for r in per_n[n]])
            ap = np.mean([r["pixel_ap"] for r in per_n[n]])
            cells.append(f"{100 * m:.2f}% / {100 * ap:.2f}%")
        print(f"| {n} | " + " | ".join(cells) + " |")
    seconds = [r["seconds"] for per_n in results.values() for rs in per_n.values() for r in rs]
    print(f"\nseconds per segmenter: median {np.median(seconds):.0f}, max {np.max(seconds):.0f}")


if __name__ == "__main__":
    main()
