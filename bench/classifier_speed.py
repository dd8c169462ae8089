"""Benchmark: the `train-classifier` stage at a recipe's settings against other settings, side by side in one process.

Trains the classifier of a prepared run once per setting, interleaved epoch by epoch (every setting's first epoch,
then every setting's second, ...), so the machine's load falls on every setting alike. Prints each setting's
seconds for the whole training (building the trainer, which caches the features where a setting asks for it, then
every epoch and its validation), its speed-up against the first setting, and the last epoch's validation image AP
and loss. A recipe with a seed ensemble (``classifier.ensemble``) trains every member, as the stage does (their
cached features computed once, in one store per setting); the AP and loss are the first member's.

By default the baseline is the stage before its speed-ups: contiguous (NCHW) tensors, no feature cache, and two
switches of this benchmark (not settings): ``whole``, the frozen stages run in the training step's whole batch
instead of image by image without gradients, and ``unchunked``, every forward pass without gradients (validation)
over the whole batch instead of CPU-sized chunks:

    python bench/classifier_speed.py --config configs/ksdd.yaml --run OUT/fold0-s0 --out OUT/speed
    python bench/classifier_speed.py --config configs/ksdd.yaml --run OUT/fold0-s0 --out OUT/speed \\
        --setting before:classifier.channels_last=false,whole,unchunked \\
        --setting nhwc:whole --setting cache:classifier.cache_features=true
    python bench/classifier_speed.py --config configs/ksdd.yaml --run OUT/fold0-s0 --out OUT/speed \
        --setting recipe: --setting cache:classifier.cache_features=true
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

BASELINE = "before:classifier.channels_last=false,classifier.cache_features=false,whole,unchunked"
SWITCHES = {"whole", "unchunked"}


@contextlib.contextmanager
def unchunked(on: bool) -> Iterator[None]:
    """Forward passes without gradients over whole batches (as before they ran in CPU-sized chunks) while ``on``."""
    from wsss.models import chunked

    kept = chunked.CPU_PIXELS
    if on:
        chunked.CPU_PIXELS = 2**62
    try:
        yield
    finally:
        chunked.CPU_PIXELS = kept


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="the recipe the run was made with")
    p.add_argument("--run", type=Path, required=True, help="a run folder with a finished prepare stage")
    p.add_argument("--out", type=Path, required=True, help="scratch folder for the trained classifiers")
    p.add_argument("--setting", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable); the recipe is last")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from wsss.config import load_config
    from wsss.stages.train_classifier import classifier_trainer, member_config
    from wsss.train.classifier import ClassifierTrainer
    from wsss.train.feature_cache import FeatureStore

    settings = [s.split(":", 1) for s in (args.setting or [BASELINE])]
    if "recipe" not in {name for name, _ in settings}:  # the recipe as it is, last unless placed by --setting recipe:
        settings.append(["recipe", ""])
    index = args.run / "prepare" / "index.csv"
    seconds: dict[str, float] = {}
    trainers: dict[str, list[ClassifierTrainer]] = {}
    switches = {name: set(keys.split(",")) & SWITCHES for name, keys in settings}
    for name, keys in settings:
        cfg = load_config(args.config, [kv for kv in keys.split(",") if "=" in kv])
        store = FeatureStore()  # as the stage: the members share the cached features
        t0 = time.perf_counter()
        trainers[name] = []
        for k in range(cfg.classifier.ensemble):
            with unchunked("unchunked" in switches[name]):
                t = classifier_trainer(
                    member_config(cfg, k), index, args.out / name / str(k), echo=lambda *_: None, feature_store=store
                )
            if "whole" in switches[name]:
                t.net = t.train_net = t.scorer  # the whole DFC in the training step
            trainers[name].append(t)
        seconds[name] = time.perf_counter() - t0
    epochs = {t.ccfg.epochs for ts in trainers.values() for t in ts}
    if len(epochs) != 1:
        p.error(f"the settings train for different numbers of epochs ({sorted(epochs)}): compare equal work")
    last: dict[str, dict] = {}
    for epoch in range(epochs.pop()):
        for name, ts in trainers.items():
            t0 = time.perf_counter()
            with unchunked("unchunked" in switches[name]):
                for t in ts:
                    t.train_epoch(epoch)
                    v = t.validate()
                    if t is ts[0]:  # the table reports the first member's validation
                        last[name] = v
            seconds[name] += time.perf_counter() - t0
    members = {name: len(ts) for name, ts in trainers.items()}
    print(f"{args.config}, prepared run {args.run}, {args.threads} thread(s), interleaved by epoch, members {members}")
    print("| setting | seconds | speed-up | last epoch's validation AP | its loss |")
    print("|---|---|---|---|---|")
    first = next(iter(seconds.values()))
    for name, sec in seconds.items():
        v = last[name]
        print(f"| {name} | {sec:.0f} | {first / sec:.2f}x | {v['val_ap']:.4f} | {v['val_loss']:.4f} |")


if __name__ == "__main__":
    main()
