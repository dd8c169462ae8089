"""Benchmark: what fine-tuning the pretrained backbone costs on this machine, per ``backbone.freeze`` setting.

Builds the recipe's DFC (its backbone, input size and batch size) once per ``--freeze`` value and times training
steps (forward, BCE on the LSE-pooled scores, backward, AdamW step) on random images, interleaved round by round
so that background load falls on every setting alike. Prints images/s and the ratio to full fine-tuning.

    python bench/freeze.py --config configs/ksdd.yaml --freeze 0,3,4,-1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--freeze", default="0,3,4,-1", help="comma-separated backbone.freeze values")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per setting (after one warm-up round)")
    p.add_argument("--steps", type=int, default=2, help="training steps per round")
    p.add_argument("--in-chans", type=int, default=1)
    args = p.parse_args(argv)

    from wsss.config import load_config
    from wsss.train.classifier import build_dfc

    cfg = load_config(args.config)
    h, w = cfg.classifier.input_size
    bs = cfg.classifier.batch_size
    settings = [int(v) for v in args.freeze.split(",")]
    models, opts = {}, {}
    for f in settings:
        ccfg = load_config(args.config, [f"classifier.backbone.freeze={f}", "classifier.clm.enabled=false"]).classifier
        torch.manual_seed(0)
        models[f] = build_dfc(ccfg, 1, args.in_chans).train()
        opts[f] = torch.optim.AdamW([q for q in models[f].parameters() if q.requires_grad], lr=1e-4)
    x, y = torch.randn(bs, args.in_chans, h, w), (torch.arange(bs) % 2).float()[:, None]
    seconds = dict.fromkeys(settings, 0.0)
    for r in range(args.rounds + 1):
        for f in settings:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = F.binary_cross_entropy_with_logits(models[f](x).logits, y)
                opts[f].zero_grad(set_to_none=True)
                loss.backward()
                opts[f].step()
            if r > 0:  # round 0 warms up
                seconds[f] += time.perf_counter() - t0
    n = args.rounds * args.steps * bs
    full = n / seconds[settings[0]]
    print(f"{cfg.classifier.backbone.name} at {h} x {w}, batch {bs}, {torch.get_num_threads()} threads")
    print("| backbone.freeze | trainable params | train img/s | vs freeze=" + str(settings[0]) + " |")
    print("|---|---|---|---|")
    for f in settings:
        trainable = sum(q.numel() for q in models[f].parameters() if q.requires_grad)
        print(f"| {f} | {trainable / 1e6:.2f} M | {n / seconds[f]:.2f} | {n / seconds[f] / full:.2f}x |")


if __name__ == "__main__":
    main()
