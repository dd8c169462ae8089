"""Training on cached features (``classifier.cache_features``): the frozen prefix runs once per image, not per epoch.

The stem and the frozen stages (``backbone.freeze``) map an image to the same features in every epoch, and on a CPU
they cost about half of a training step (their maps are the largest). :class:`FeatureDataset` computes them once
for every image at the input size (:class:`wsss.models.prefix.FrozenSplit`) and keeps them in memory as float16;
each epoch then augments the cached maps geometrically (:class:`wsss.data.transforms.FeatureAugment`: flips, rot90,
the affine warp, as feature crops) and :class:`SuffixDFC` trains the rest of the network on them. The photometric
augmentations (brightness, contrast, gamma, blur) have no feature-space counterpart and are dropped.

The items keep the image dataset's layout (``image`` holds the feature map), so the samplers, loaders and
validation of the image path serve both.

A seed ensemble (``classifier.ensemble``) trains its members on the same images through the same frozen prefix (the
pretrained weights; the seed draws only the trained part): a :class:`FeatureStore` passed to every member's trainer
computes the features once for all of them. Its key is the prefix's weights and the images, so members whose frozen
stages differ (random init from their own seeds) each get their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from wsss.data.classifier_data import ImageDataset
from wsss.data.transforms import FeatureAugment, to_tensor
from wsss.models.chunked import forward_chunked
from wsss.models.classifier import DFC, DFCOutput
from wsss.models.compile import channels_last_input
from wsss.models.prefix import FrozenSplit
from wsss.progress import progress

BYTES_PER_VALUE = 2  # the cache is float16


class SuffixDFC(nn.Module):
    """The DFC from its frozen prefix's features on: ``forward(f)`` is ``dfc(x)`` where ``f = split.prefix(x)``."""

    def __init__(self, dfc: DFC, split: FrozenSplit):
        super().__init__()
        self.dfc = dfc
        self.split = split

    def forward(self, f: torch.Tensor) -> DFCOutput:
        return self.dfc.head(self.split.suffix(f))


class PrefixFirstDFC(nn.Module):
    """The DFC on images, its frozen prefix run without gradients in CPU-sized chunks: ``forward(x)`` is ``dfc(x)``.

    The frozen stages keep their BatchNorm statistics (eval mode) while the rest trains, so each image's prefix
    features do not depend on the other images of the batch, and computing them one image at a time
    (:func:`~wsss.models.chunked.forward_chunked`) changes nothing but float rounding. No autograd graph is kept for
    them (they have no gradients). The rest of the network, whose BatchNorms need the whole batch, runs on the whole
    batch. What the classifier trains through when its features are not cached.
    """

    def __init__(self, dfc: DFC, split: FrozenSplit):
        super().__init__()
        self.dfc = dfc
        self.split = split

    def forward(self, x: torch.Tensor) -> DFCOutput:
        return self.dfc.head(self.split.suffix(forward_chunked(self.split.prefix, x)))


class FeatureStore:
    """The frozen prefix's features, kept across trainers: one computation per (prefix weights, images, input size).

    What :class:`FeatureDataset` reads instead of computing, when a trainer is given one: the `train-classifier`
    stage gives its seed ensemble's members the same store (every member's frozen stages hold the same pretrained
    weights), so the images go through them once for the whole ensemble."""

    def __init__(self) -> None:
        self._features: dict[str, torch.Tensor] = {}
        self.computed = 0  # how many feature sets were computed (the rest were reused)

    @staticmethod
    def key(images: ImageDataset, split: FrozenSplit) -> str:
        """What the features depend on: the prefix's weights and buffers, the images and how they are read."""
        h = hashlib.sha256(split.digest().encode())
        for r in images.rows:
            h.update(f"{r.id}\0{r.path}\0".encode())
        h.update(repr((images.input_size, images.in_chans, images.high_bit_depth, images.fit)).encode())
        return h.hexdigest()

    def holds(self, images: ImageDataset, split: FrozenSplit) -> bool:
        return self.key(images, split) in self._features

    def get(self, images: ImageDataset, split: FrozenSplit, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = self.key(images, split)
        if key not in self._features:
            self._features[key] = compute()
            self.computed += 1
        return self._features[key]


def cache_bytes(images: int, size: tuple[int, ...], stride: int, channels: int) -> int:
    """Memory the features of ``images`` images of ``size`` (H, W) need: float16 maps at the prefix's stride."""
    h, w = (-(-int(s) // max(1, stride)) for s in size)
    return images * channels * h * w * BYTES_PER_VALUE


class FeatureDataset(Dataset):
    """The frozen prefix's features of every image of ``images`` (which must not augment), computed once.

    Items are ``{"image": (C, h, w) float32 features, "target", "index"}``; with ``augment`` the features are
    augmented from ``images.rng(index)`` of the current epoch (:meth:`set_epoch`), so a resumed run repeats its steps.
    """

    def __init__(
        self,
        images: ImageDataset,
        split: FrozenSplit,
        augment: FeatureAugment | None,
        device: torch.device,
        batch_size: int = 8,
        channels_last: bool = True,
        store: FeatureStore | None = None,
    ):
        if images.augment is not None:
            raise ValueError("the cache holds un-augmented images' features: pass an ImageDataset without augment")
        self.images, self.augment = images, augment
        self._targets = images.targets()

        def compute() -> torch.Tensor:
            feats = []
            for start in progress(range(0, len(images), batch_size), desc="cache features", unit="batch"):
                idx = range(start, min(start + batch_size, len(images)))
                x = torch.stack([to_tensor(images.load(i)) for i in idx]).to(device)
                f = forward_chunked(split.prefix, channels_last_input(x, channels_last))
                feats.append(f.to("cpu", torch.float16).contiguous())
            return torch.cat(feats) if feats else torch.zeros(0)

        self.features = compute() if store is None else store.get(images, split, compute)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.images.set_epoch(epoch)

    def targets(self) -> np.ndarray:
        return self._targets.copy()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        index = int(index) % len(self) if index < 0 else int(index)
        f = self.features[index].float()
        if self.augment is not None:
            f = self.augment(f, self.images.rng(index))
        target = torch.from_numpy(self._targets[index].copy())
        return {"image": f, "target": target, "index": index}
