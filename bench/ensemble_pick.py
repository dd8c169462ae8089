"""Benchmark: ``classifier.ensemble_pick: flip-consistent`` simulated on finished single-classifier runs of one fold.

Each run folder holds one classifier (one seed) and its pseudo-masks. For every run this prints the classifier's flip
consistency on the defective training images (what the pick ranks by: image labels only) beside its pseudo-mask
mIoU_def on the validation and test splits. Then, for every K-subset of a fold's runs, the pick keeps the run of
highest consistency: the mean and the range of the kept runs' figures over all subsets, against one classifier drawn
at random (every run alike). This is what an ensemble of K seeds with the pick gives, without training K classifiers
per seed again:

    python bench/recipe.py --config configs/ksdd.yaml --folds 0,1,2 --seeds 0,1,2,3 --out OUT \
        --pipeline cam-iem-crf --jobs 2 --threads 1 --splits val,test
    python bench/ensemble_pick.py --config configs/ksdd.yaml --runs 'OUT/fold0-cam-iem-crf-s*' \
        --runs 'OUT/fold1-cam-iem-crf-s*' --runs 'OUT/fold2-cam-iem-crf-s*' --k 3
"""

from __future__ import annotations

import argparse
import glob
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import score  # noqa: E402


def consistency(run: Path, high_bit_depth: str) -> float:
    """The run's classifier's flip consistency on its defective training images, as the pick scores a member."""
    from wsss.cam.consistency import consistency_images, member_consistency

    images = consistency_images(run / "prepare" / "index.csv", high_bit_depth)
    return member_consistency(run / "train-classifier", images)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", type=Path, required=True, help="the recipe the runs ran (its splits, its images' bit depth)"
    )
    p.add_argument("--runs", action="append", required=True, help="a glob of one fold's run folders (repeatable)")
    p.add_argument("--k", type=int, default=3, help="ensemble size to simulate")
    args = p.parse_args(argv)
    from wsss.config import load_config

    high_bit_depth = load_config(args.config).dataset.high_bit_depth
    print("| fold runs | run | flip consistency | pseudo-masks val | test |\n|---|---|---|---|---|")
    picked = {"val": [], "test": []}
    single = {"val": [], "test": []}
    for pattern in args.runs:
        runs = [Path(r) for r in sorted(glob.glob(pattern)) if (Path(r) / "pseudo-labels" / "masks").is_dir()]
        rows = []
        for run in runs:
            c = consistency(run, high_bit_depth)
            figs = {s: score(run, args.config, [], s)[0]["pseudo-labels"]["miou_def"] for s in ("val", "test")}
            rows.append((run.name, c, figs))
            print(f"| {pattern} | {run.name} | {c:.3f} | {figs['val']:.2%} | {figs['test']:.2%} |")
        for split in ("val", "test"):
            single[split].append([r[2][split] for r in rows])
            picked[split].append(
                [max(sub, key=lambda r: r[1])[2][split] for sub in itertools.combinations(rows, args.k)]
            )
    print(
        f"\n| split | one classifier: mean (range of fold means) | pick of {args.k}: mean | worst pick | fold spread, one / pick |"
    )
    print("|---|---|---|---|---|")
    for split in ("val", "test"):
        one = [np.mean(v) for v in single[split]]
        pick = [np.mean(v) for v in picked[split]]
        spread_one = np.mean([max(v) - min(v) for v in single[split]])
        spread_pick = np.mean([max(v) - min(v) for v in picked[split]])
        worst = min(min(v) for v in picked[split])
        print(
            f"| {split} | {np.mean(one):.2%} ({min(one):.2%}-{max(one):.2%}) | {np.mean(pick):.2%} | {worst:.2%} | "
            f"{spread_one * 100:.1f} / {spread_pick * 100:.1f} points |"
        )


if __name__ == "__main__":
    main()
