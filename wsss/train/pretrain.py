"""Anomaly-guided pretraining of a backbone (METHOD.md 7b, after AGSSP): no labels, only anomaly maps.

For each selected backbone stage s, the channel-wise energy map ``E_s = sum_c f_c^2`` (B, h_s, w_s) is pulled toward
the image's anomaly map resized to (h_s, w_s) (area averaging) with a cosine loss, ``1 - cos(vec E_s, vec A_s)``,
averaged over stages and images. The cosine is scale-free, so only where the energy sits matters: the backbone learns
to respond most where the image departs from the normal texture, which is where the classifier trained on it next
has to look.

Targets: the normalised anomaly map (0 at the OK images' ``ok_percentile``, 1 at the highest OK peak; the identity of
the OK images is the only label involved) plus :data:`TARGET_FLOOR`, so an image with no anomaly asks for evenly
spread energy rather than an undefined direction. Images and targets are flipped together (the only augmentation:
it keeps them aligned exactly).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.anomaly.io import normalise
from wsss.models.backbone import Backbone
from wsss.train.config import PretrainConfig
from wsss.train.schedule import warmup_cosine

TARGET_FLOOR = 0.1


def energy_cosine_loss(stages: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Mean over ``stages`` (each (B, C, h, w)) of ``1 - cos(energy map, target resized to (h, w))``, target (B, H, W)."""
    losses = []
    for f in stages:
        energy = f.float().pow(2).sum(1)  # (B, h, w)
        t = F.adaptive_avg_pool2d(target[:, None], energy.shape[-2:])[:, 0]
        losses.append(1.0 - F.cosine_similarity(energy.flatten(1), t.flatten(1), dim=1, eps=1e-8).mean())
    return torch.stack(losses).mean()


def pretrain_backbone(
    student: Backbone,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: PretrainConfig,
    device: torch.device,
    seed: int,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Train ``student`` in place on ``images`` (N, C, H, W, normalised) against ``targets`` (N, h, w) in [0, 1];
    returns one metrics row per epoch (epoch, loss, seconds)."""

    n = len(student.channels)
    chosen = [i % n for i in cfg.stages] if cfg.stages else list(range(n))
    gen = torch.Generator().manual_seed(seed)
    student.to(device).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, -(-len(images) // cfg.batch_size))
    sched = warmup_cosine(opt, steps, cfg.epochs * steps)
    rows = []
    for epoch in range(cfg.epochs):
        t0, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2 and len(order) > 1:  # BatchNorm needs two samples; the last singleton waits an epoch
                continue
            x, t = images[idx].clone(), targets[idx].clone() + TARGET_FLOOR
            for dim in (-1, -2):  # flips, image and target together
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x[flip], t[flip] = x[flip].flip(dim), t[flip].flip(dim)
            stages = student.forward_stages(x.to(device))
            loss = energy_cosine_loss([stages[i] for i in chosen], t.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        row = {"epoch": epoch + 1, "loss": total / max(seen, 1), "seconds": time.perf_counter() - t0}
        rows.append(row)
        echo(f"pretrain: epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.4f} ({row['seconds']:.1f} s)")
    student.eval()
    return rows


def normalised_targets(grids: Sequence[np.ndarray], lo: float, hi: float) -> torch.Tensor:
    """(N, h, w) float32 targets in [0, 1] from the teacher's raw (h, w) distance grids."""

    return torch.from_numpy(np.stack([normalise(g, lo, hi) for g in grids]))
