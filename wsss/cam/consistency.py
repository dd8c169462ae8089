"""How well a trained DFC's CAMs agree with themselves under flips: a check of where a classifier looks that needs no
mask.

A classifier can call images right while its CAM fires beside the defect instead of on it (the LSE pooling rewards
any position whose receptive field holds the defect). Such a map moves when the image is flipped: the CAM of the
flipped image, flipped back, lands on the other side of the defect. A map on the defect stays where it is. So the
cosine similarity between an image's class map and the flipped-back maps of its horizontal and vertical flips,
averaged over the images labelled defective, ranks classifiers of one recipe by how well their CAMs sit on the
defects (KSDD fold 1, five seeds: the two classifiers whose pseudo-masks fell to 9-11% mIoU_def score 0.59 and 0.64,
the three at 39-42% score 0.77-0.87; docs/benchmarks.md). It reads image labels only.

``classifier.ensemble_pick: flip-consistent`` keeps, of the seed ensemble's members, the one that scores highest
(the `train-classifier` stage writes every member's score to ``ensemble.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wsss.cam.config import CamConfig
from wsss.cam.extract import CamExtractor
from wsss.data.images import read_image
from wsss.data.index import read_train_index
from wsss.data.transforms import fit_image, to_channels, to_tensor
from wsss.models.classifier import DFC, load_dfc

BATCH = 8
# the defective training images the pick reads at most (spread evenly over them): a few hundred rank the members
CONSISTENCY_IMAGES = 256


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity of (B, h, w) maps; 0 where either map is empty (no direction to agree on)."""
    a, b = a.flatten(1), b.flatten(1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(1) / norms.clamp_min(1e-12), torch.zeros_like(norms))


@torch.no_grad()
def flip_consistency(
    model: DFC,
    images: Sequence[np.ndarray],
    input_size: Sequence[int],
    in_chans: int,
    cfg: CamConfig,
    device: torch.device | str = "cpu",
    fit: str = "stretch",
) -> float:
    """The mean over ``images`` and the two flips of the cosine similarity between the DFC's defect map (the
    largest class map after a relu, ``cam.method``, at the classifier's input size) and the flipped-back map of
    the flipped image. 1 = the maps do not move; an empty map counts 0."""
    if not images:
        raise ValueError("flip consistency needs at least one image")
    extractor = CamExtractor(model, input_size, in_chans, replace(cfg, scales=[1.0], flips=False), device, fit)
    size = tuple(int(s) for s in input_size)
    total, count = 0.0, 0
    for start in range(0, len(images), BATCH):
        x = torch.stack(
            [to_tensor(fit_image(to_channels(im, in_chans), size, fit)) for im in images[start : start + BATCH]]
        )
        base = extractor.views(x)[0].relu().amax(1)
        for dim in (-1, -2):
            moved = extractor.views(x.flip(dim))[0].relu().amax(1).flip(dim)
            sims = _cosine(base, moved)
            total += float(sims.sum())
            count += len(sims)
    return total / count


def member_consistency(
    model_dir: str | Path, images: Sequence[np.ndarray], device: torch.device | str = "cpu", channels_last: bool = True
) -> float:
    """:func:`flip_consistency` of the trained DFC in ``model_dir`` (one member's folder), at the input size, channels
    and fit it was trained with."""
    model, meta = load_dfc(model_dir, device)
    cfg = CamConfig(channels_last=channels_last)
    fit = meta.get("fit", "stretch")
    return flip_consistency(model, images, meta["input_size"], int(meta["in_chans"]), cfg, device, fit)


def consistency_images(index: str | Path, high_bit_depth: str = "refuse") -> list[np.ndarray]:
    """The images the pick scores members on: the defective training images of a `prepare` index (labels only), at
    most :data:`CONSISTENCY_IMAGES` of them spread evenly over the list; empty where there are none. 16-bit images
    are refused or scaled as ``high_bit_depth`` (``dataset.high_bit_depth``) says."""
    rows = [r for r in read_train_index(index, "train") if r.labels]
    keep = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), CONSISTENCY_IMAGES)).round().astype(int))
    return [read_image(rows[i].path, high_bit_depth) for i in keep] if rows else []
