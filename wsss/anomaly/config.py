"""The `anomaly` section: PatchCore-style anomaly maps and their fusion with the CAMs.

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsss.fields import (
    ONE,
    SEED,
    choices,
    num,
)
from wsss.models.config import BackboneConfig


@dataclass
class AnomalyConfig:
    """`anomaly`: PatchCore-style anomaly maps from a memory bank of the OK training images' patches (METHOD.md 7)."""

    # dfc: the trained DFC's backbone; backbone: the timm backbone below (random init or its local weights file)
    features: str = choices("dfc", "backbone", default="dfc")
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(output_stride=16))
    # backbone stages concatenated (resnet: layer2 + 3); negative indices count from the last
    layers: list[int] = num([2, 3], min_items=1, fix="backbone stage indices, e.g. [2, 3]")
    # H, W images are resized to; empty = the classifier's
    input_size: list[int] = num([], gt=0, lengths=(0, 2), fix="[H, W] or []")
    # each patch feature is averaged over this neighbourhood (PatchCore's local aggregation)
    patch: int = num(3, ge=1, odd=True, fix="an odd neighbourhood size >= 1")
    # each image to zero mean and unit variance before the backbone: a part that is brighter overall (lighting, a
    # different batch) is not an anomaly everywhere
    standardise: bool = True
    # patches sampled into the bank before the coreset (evenly over the OK images)
    max_patches: int = num(200_000, ge=1, fix=ONE)
    # memory bank size after greedy k-center subsampling; 0 = keep every sampled patch
    coreset: int = num(10_000, ge=0, fix="a bank size, or 0 to keep every sampled patch")
    coreset_dims: int = num(128, ge=1, fix=ONE)  # random projection the k-center distances are computed in
    # query patches per cdist chunk (memory: chunk x bank floats)
    chunk: int = num(2048, ge=1, fix="query patches per chunk, at least 1")
    # Gaussian sigma in feature cells, applied before upsampling to the image size
    smooth: float = num(1.0, ge=0, fix="a sigma >= 0 (0 = off)")
    # normalised map 0 = this percentile of the OK training images' (leave-one-out) map
    ok_percentile: float = num(99.0, ge=0, le=100, fix="a percentile in [0, 100]")
    # normalised map 1 = this percentile of the defective training images' peaks
    norm_percentile: float = num(50.0, gt=0, le=100, fix="a percentile in (0, 100]")
    batch_size: int = num(16, ge=1, fix=ONE)
    seed: int = num(0, ge=0, fix=SEED)
