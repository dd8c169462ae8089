"""Benchmark: the recipe `wsss init` writes for a dataset given as a plain CSV, run as is, beside the tuned recipe.

What a team gets on its own data is the init recipe, so this measures how much of a tuned recipe's result it
reaches. For each fold and seed:

1. the tuned recipe (``--tuned``, e.g. configs/ksdd.yaml) runs as `bench/recipe.py` runs it, into
   ``TUNED_OUT/fold<k>-s<seed>`` (``run-s<seed>`` without folds); a run there whose segmenter has finished is
   scored as it is, never re-run (even where the code changed since), so the published runs serve directly;
2. ``bench/csv_dataset.py`` writes the dataset as a plain CSV with a ``split`` column holding that run's split of
   each image (so both recipes train, choose and test on exactly the same images) and a ``group`` column;
3. ``wsss init --kind csv`` writes its recipe for the CSV, and ``wsss run`` runs it unchanged (only ``run.seed``
   is set) into ``OUT/init-fold<k>-s<seed>``. With ``--init-only`` the tuned recipe makes its split alone, and its
   figures are the published runs' (the same split and seed at a commit that computes the same).

Then both are scored on each split asked for, and one table gives, per recipe: the classifier's and the segmenter's
image AP, the pseudo-mask, retrain and segmenter mIoU_def, the segmenter's pixel AP and the wall time, per run and
as mean (min-max):

    python bench/transfer.py --kind ksdd --root ../shared/data/ksdd --tuned configs/ksdd.yaml \\
        --tuned-out /tmp/bench/ksdd --out /tmp/bench/transfer-ksdd --folds 0,1,2 --seeds 0 --threads 1
    python bench/transfer.py --kind mtd --root ../shared/data/mtd --tuned configs/mtd.yaml \\
        --tuned-out /tmp/bench/mtd --out /tmp/bench/transfer-mtd --seeds 0,1,2 --jobs 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import ROOT, pct, score  # noqa: E402  (the recipe benchmark's scoring)

COLUMNS = (
    ("classifier image AP", "pseudo-labels", "ap"),
    ("pseudo-masks", "pseudo-labels", "miou_def"),
    ("retrain", "retrain", "miou_def"),
    ("segmenter", "train-segmenter", "miou_def"),
    ("segmenter image AP", "train-segmenter", "ap"),
    ("segmenter pixel AP", "train-segmenter", "pixel_ap"),
)


def wsss(args: argparse.Namespace, log: Path, *cmd: str) -> None:
    """``python -m wsss.cli CMD`` with the run's thread count, its output appended to ``log``."""
    env = os.environ | {"WSSS_PROGRESS": "0"}
    if args.threads:
        env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    full = [sys.executable, "-m", "wsss.cli", *cmd]
    print("+", " ".join(full), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        subprocess.run(full, check=True, env=env, stdout=f, stderr=subprocess.STDOUT)


def run_pair(args: argparse.Namespace, fold: str, seed: str) -> tuple[Path, Path, Path]:
    """Run (or with ``--collect`` only locate) the tuned and the init recipe of one fold and seed: their run folders
    and the init recipe's path."""
    name = (f"fold{fold}" if fold else "run") + f"-s{seed}"
    tuned_dir, init_dir, csv_dir = args.tuned_out / name, args.out / f"init-{name}", args.out / f"csv-{name}"
    recipe = csv_dir / "recipe.yaml"
    if args.collect:
        return tuned_dir, init_dir, recipe
    tuned_sets = [f"prepare.split.fold={fold}"] if fold else []
    sets = [x for s in [*tuned_sets, f"run.seed={seed}"] for x in ("--set", s)]
    log = args.out / f"{name}.log"
    tuned_done = (tuned_dir / "train-segmenter" / "manifest.json").is_file()
    if not tuned_done:  # its split first: the CSV copies it, and the two recipes can then run side by side
        wsss(args, log, "run", "--config", str(args.tuned), "--run-dir", str(tuned_dir), "--to", "prepare", *sets)
    if not recipe.exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "csv_dataset.py"), "--kind", args.kind, "--root", str(args.root)]
            + ["--out", str(csv_dir), "--splits-from", str(tuned_dir / "prepare" / "index.csv")],
            check=True,
        )
        wsss(args, log, "init", "--kind", "csv", "--root", str(csv_dir / "labels.csv"), "--out", str(recipe))
    runs = {"init": ["run", "--config", str(recipe), "--run-dir", str(init_dir), "--set", f"run.seed={seed}"]}
    if not tuned_done and not args.init_only:
        runs["tuned"] = ["run", "--config", str(args.tuned), "--run-dir", str(tuned_dir), *sets]
    with ThreadPoolExecutor(len(runs) if args.side_by_side else 1) as pool:
        list(pool.map(lambda item: wsss(args, args.out / f"{name}.{item[0]}.log", *item[1]), runs.items()))
    return tuned_dir, init_dir, recipe


def figures(run_dir: Path, config: Path, split: str) -> dict[str, float]:
    metrics, seconds = score(run_dir, config, [], split)
    out = {label: metrics.get(stage, {}).get(key, float("nan")) for label, stage, key in COLUMNS}
    return out | {"minutes": sum(seconds.values()) / 60}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", required=True, help="the dataset's own kind (ksdd, mtd, ...)")
    p.add_argument("--root", type=Path, required=True, help="the dataset's folder")
    p.add_argument("--tuned", type=Path, required=True, help="the tuned recipe, e.g. configs/ksdd.yaml")
    p.add_argument("--tuned-out", type=Path, required=True, help="where the tuned recipe's runs are (or go)")
    p.add_argument("--out", type=Path, required=True, help="the CSVs, init recipes and their runs")
    p.add_argument("--folds", default="", help="comma-separated prepare.split.fold values (kfold recipes)")
    p.add_argument("--seeds", default="0", help="comma-separated run.seed values")
    p.add_argument("--splits", default="val,test", help="splits to report")
    p.add_argument("--jobs", type=int, default=1, help="fold/seed pairs side by side")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (0 = the environment's)")
    p.add_argument("--collect", action="store_true", help="only score finished runs")
    p.add_argument(
        "--one-at-a-time", dest="side_by_side", action="store_false", help="run a pair's two recipes one after another"
    )
    p.add_argument(
        "--init-only",
        action="store_true",
        help="run the init recipe alone (the tuned recipe's split is still made; its runs are scored where finished)",
    )
    args = p.parse_args(argv)
    args.root, args.tuned = args.root.resolve(), args.tuned.resolve()
    args.tuned_out, args.out = args.tuned_out.resolve(), args.out.resolve()
    os.chdir(ROOT)
    folds = [f.strip() for f in args.folds.split(",") if f.strip()] or [""]
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    jobs = [(fold, seed) for fold in folds for seed in seeds]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        pairs = list(pool.map(lambda j: run_pair(args, *j), jobs))
    for split in args.splits.split(","):
        print(f"\n## {args.kind}: `wsss init`'s recipe on a plain CSV against {args.tuned.name}, {split} split\n")
        labels = [c[0] for c in COLUMNS]
        print("| recipe | fold | seed | " + " | ".join(labels) + " | wall min |")
        print("|---|---|---|" + "---|" * (len(labels) + 1))
        table: dict[str, list[dict[str, float]]] = {"tuned": [], "init": []}
        for (fold, seed), (tuned_dir, init_dir, recipe) in zip(jobs, pairs, strict=True):
            for which, run_dir, config in (("tuned", tuned_dir, args.tuned), ("init", init_dir, recipe)):
                if not (run_dir / "train-segmenter" / "manifest.json").is_file():
                    continue  # not run (--init-only) or not finished
                f = figures(run_dir, config, split)
                table[which].append(f)
                cells = " | ".join(pct(f[k]) for k in labels)
                print(f"| {which} | {fold or '-'} | {seed} | {cells} | {f['minutes']:.1f} |")
        if len(jobs) > 1:
            for which, rows in table.items():
                if not rows:
                    continue
                cells = []
                for k in [*labels, "minutes"]:
                    a = np.array([r[k] for r in rows])
                    fmt = (lambda v: f"{v:.1f}") if k == "minutes" else pct
                    cells.append(f"{fmt(a.mean())} ({fmt(a.min())}-{fmt(a.max())})")
                print(f"| {which}, mean (min-max) of {len(rows)} | | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
