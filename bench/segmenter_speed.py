"""Benchmark: the `train-segmenter` stage's training at a recipe's settings against other settings, in one process.

Builds the stage's trainer (its first round, as `wsss run` does: the run's masks, the CAM teacher, the recipe's
sizes and batch) once per setting on a finished run, then trains every setting's first epoch and validation, then
every setting's second, ..., so the machine's load falls on every setting alike. Prints each setting's seconds for
``--epochs`` epochs with their validation, its speed-up against the first setting, and the last epoch's loss and
validation Seg_mIoU (against the pseudo-masks, as the stage selects). A setting is ``NAME:KEY=VALUE,...`` with the
switches of bench/classifier_speed.py (``unfolded``: the frozen stages' BatchNorms run as they are; ``unchunked``).

    python bench/segmenter_speed.py --config configs/ksdd.yaml --run OUT/fold0-s0 --out OUT/speed \\
        --setting unfolded:unfolded --epochs 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from classifier_speed import SWITCHES, switched


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="the recipe the run was made with")
    p.add_argument("--run", type=Path, required=True, help="a run folder whose mask stages are finished")
    p.add_argument("--out", type=Path, required=True, help="scratch folder for the trained segmenters")
    p.add_argument("--setting", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable); the recipe is last")
    p.add_argument("--epochs", type=int, default=2, help="epochs per setting (each with its validation)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from wsss.config import load_config
    from wsss.runs import Run
    from wsss.stages.train_segmenter import Distillation

    settings = [s.split(":", 1) for s in args.setting]
    if "recipe" not in {name for name, _ in settings}:
        settings.append(["recipe", ""])
    stages = ("prepare", "cam", "pseudo-labels", "retrain")
    inputs = {s: args.run / s for s in stages if (args.run / s).is_dir()}
    seconds: dict[str, float] = {}
    trainers = {}
    for name, keys in settings:
        raw = load_config(args.config, [kv for kv in keys.split(",") if "=" in kv])
        cfg = Run(args.run, raw, echo=lambda *_: None).cfg  # `auto` sizes resolved from the run's prepare, as the stage
        t0 = time.perf_counter()
        with switched(set(keys.split(",")) & SWITCHES):
            d = Distillation(cfg, inputs)
            masks = inputs[cfg.segmenter.masks or ("retrain" if "retrain" in inputs else "pseudo-labels")] / "masks"
            trainers[name] = d.trainer(1, masks, args.out / name)
        seconds[name] = time.perf_counter() - t0
    last: dict[str, dict] = {}
    for epoch in range(args.epochs):
        for name, keys in settings:
            t, t0 = trainers[name], time.perf_counter()
            with switched(set(keys.split(",")) & SWITCHES):
                row = t.train_epoch(epoch)
                last[name] = row | t.validate()
            seconds[name] += time.perf_counter() - t0
    print(f"{args.config}, run {args.run}, {args.threads} thread(s), {args.epochs} epoch(s) each")
    print("| setting | seconds | speed-up | last epoch's loss | its validation Seg_mIoU |")
    print("|---|---|---|---|---|")
    first = next(iter(seconds.values()))
    for name, sec in seconds.items():
        v = last[name]
        print(f"| {name} | {sec:.0f} | {first / sec:.2f}x | {v['loss']:.4f} | {v['val_seg_miou']:.4f} |")


if __name__ == "__main__":
    main()
