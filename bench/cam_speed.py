"""Benchmark: the CAM stage's first pass at the recipe's settings against other settings, side by side in one process.

Runs the `cam` stage's first pass (CAMs with their flipped views, then IEM's erasure rounds for the images called
defective) of a finished run's classifier on the same images once per setting and repetition, interleaved, so the
machine's load falls on every setting alike. The images are drawn at random from the run's index, so defective and
OK images come in the data set's own proportion (what the stage meets). Prints each setting's seconds (the best of
the repetitions, since the machine is shared), its speed-up against the first, and how far its CAMs, sample scores
and calls (score >= ``cam.score_threshold``) are from the recipe's.

By default the baseline is the stage as it was before its three speed-ups: contiguous (NCHW) tensors
(``cam.channels_last=false``), and two switches of this benchmark, not settings: BatchNorms not folded into their
convolutions (``unfolded``) and forward passes over whole batches of views instead of CPU-sized chunks
(``unchunked``). ``cam.flip_floor`` (off in the recipes) can be measured as a setting of its own:

    python bench/cam_speed.py --config configs/ksdd.yaml --run OUT/fold0-s0 --images 64
    python bench/cam_speed.py --config configs/mtd.yaml --run OUT/run --images 64 --repeats 3 \
        --setting before:cam.channels_last=false,unfolded,unchunked --setting chunked:cam.channels_last=false,unfolded \
        --setting floor:cam.flip_floor=0.25
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

BASELINE = "before:cam.channels_last=false,unfolded,unchunked"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="the recipe the run was made with")
    p.add_argument("--run", type=Path, required=True, help="a run folder with a finished train-classifier stage")
    p.add_argument("--images", type=int, default=64, help="images drawn at random from the run's index")
    p.add_argument("--setting", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable); the recipe is last")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="which images are drawn")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from classifier_speed import unchunked

    from wsss.cam import extract
    from wsss.cam.extract import CamExtractor
    from wsss.cam.iem import extend_cams
    from wsss.config import load_config
    from wsss.data.images import read_image
    from wsss.data.index import read_train_index
    from wsss.models.classifier import load_dfc

    settings = [s.split(":", 1) for s in (args.setting or [BASELINE])] + [["recipe", ""]]
    rows = read_train_index(args.run / "prepare" / "index.csv")
    rng = np.random.default_rng(args.seed)
    chosen = [rows[i] for i in sorted(rng.choice(len(rows), min(args.images, len(rows)), replace=False))]
    configs = {name: load_config(args.config, [kv for kv in keys.split(",") if "=" in kv]) for name, keys in settings}
    unfolded = {name for name, keys in settings if "unfolded" in keys.split(",")}
    whole = {name for name, keys in settings if "unchunked" in keys.split(",")}
    images = [read_image(r.path, configs["recipe"].dataset.high_bit_depth) for r in chosen]

    def cam_pass(name: str, cfg) -> tuple[float, list[np.ndarray], np.ndarray]:
        model, meta = load_dfc(args.run / "train-classifier", "cpu")
        fold = extract.folded_if_equal
        if name in unfolded:
            extract.folded_if_equal = lambda m, _x: m
        try:
            extractor = CamExtractor(
                model,
                meta["input_size"],
                int(meta["in_chans"]),
                cfg.cam,
                torch.device("cpu"),
                meta.get("fit", "stretch"),
            )
        finally:
            extract.folded_if_equal = fold
        t0 = time.perf_counter()
        with unchunked(name in whole):
            cams, scores = extractor(images)
            active = [float(s.max()) >= cfg.cam.score_threshold for s in scores]
            if cfg.cam.iem.enabled and any(active):
                cams, _ = extend_cams(extractor, images, cams, active, cfg.cam.iem)
        return time.perf_counter() - t0, cams, scores

    runs: dict[str, list] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, cfg in configs.items():
            runs[name].append(cam_pass(name, cfg))
    best = {name: min(r[0] for r in rs) for name, rs in runs.items()}
    _, ref_cams, ref_scores = runs["recipe"][0]
    threshold = configs["recipe"].cam.score_threshold
    n_def = sum(bool(r.labels) for r in chosen)
    print(
        f"{args.config}, {len(images)} images ({n_def} labelled defective) of {args.run}, "
        f"{args.threads} thread(s), {args.repeats} repeats"
    )
    print("| setting | seconds (best) | all repeats | speed-up | CAM max diff | score max diff | calls changed |")
    print("|---|---|---|---|---|---|---|")
    first = next(iter(best.values()))
    for name, rs in runs.items():
        _, cams, scores = rs[0]
        cam_diff = max(float(np.abs(a - b).max()) for a, b in zip(cams, ref_cams, strict=True))
        score_diff = float(np.abs(scores - ref_scores).max())
        calls = int(((scores.max(1) >= threshold) != (ref_scores.max(1) >= threshold)).sum())
        print(
            f"| {name} | {best[name]:.1f} | {', '.join(f'{r[0]:.1f}' for r in rs)} | {first / best[name]:.2f}x | "
            f"{cam_diff:.3g} | {score_diff:.3g} | {calls} |"
        )


if __name__ == "__main__":
    main()
