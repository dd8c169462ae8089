"""Benchmark: the `train-classifier` stage at a recipe's settings against other settings, side by side in one process.

Trains the classifier of a prepared run once per setting and repetition, interleaved, so the machine's load falls on
every setting alike, and prints each setting's seconds for the whole fit (feature caching, every epoch and its
validation included), its speed-up against the first setting, and the kept epoch's validation image AP and loss.
By default the baseline is the stage before its two speed-ups, contiguous (NCHW) tensors and no feature cache:

    python bench/classifier_speed.py --config configs/ksdd.yaml --run OUT/fold0-s0 --out OUT/speed
    python bench/classifier_speed.py --config configs/ksdd.yaml --run OUT/fold0-s0 --out OUT/speed \\
        --setting before:classifier.channels_last=false,classifier.cache_features=false \\
        --setting nhwc:classifier.cache_features=false --setting cache:classifier.cache_features=true
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

BASELINE = "before:classifier.channels_last=false,classifier.cache_features=false"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="the recipe the run was made with")
    p.add_argument("--run", type=Path, required=True, help="a run folder with a finished prepare stage")
    p.add_argument("--out", type=Path, required=True, help="scratch folder for the trained classifiers")
    p.add_argument("--setting", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable); the recipe is last")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from wsss.config import load_config
    from wsss.train.classifier import ClassifierTrainer

    settings = [s.split(":", 1) for s in (args.setting or [BASELINE])] + [["recipe", ""]]
    index = args.run / "prepare" / "index.csv"
    seconds: dict[str, list[float]] = {name: [] for name, _ in settings}
    summary: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, keys in settings:
            cfg = load_config(args.config, [kv for kv in keys.split(",") if kv])
            out = args.out / name
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            summary[name] = ClassifierTrainer(cfg, index, out, echo=lambda *_: None).fit()
            seconds[name].append(time.perf_counter() - t0)
    print(f"{args.config}, prepared run {args.run}, {args.threads} thread(s), {args.repeats} repeat(s)")
    print("| setting | seconds (best) | all repeats | speed-up | kept epoch | its validation AP |")
    print("|---|---|---|---|---|---|")
    first = min(next(iter(seconds.values())))
    for name, ts in seconds.items():
        s = summary[name]
        print(
            f"| {name} | {min(ts):.0f} | {', '.join(f'{t:.0f}' for t in ts)} | {first / min(ts):.2f}x "
            f"| {s['best_epoch'] + 1} of {s['epochs_run']} | {s['best_val_ap']:.4f} |"
        )


if __name__ == "__main__":
    main()
