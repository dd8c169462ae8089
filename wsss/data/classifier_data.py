"""The classifier's torch dataset: training-index rows -> (image tensor, image-level target).

It only ever sees :class:`~wsss.data.index.TrainRow` objects, which carry no mask path, and refuses anything else
(an :class:`~wsss.data.index.EvalRow` is a ``TypeError``): ground-truth masks cannot leak into training.

Targets: binary mode is the single class ``"defect"`` (:data:`BINARY_CLASSES`), set iff the row has any label;
otherwise a multi-hot vector over ``classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from wsss.data.images import read_image
from wsss.data.index import TrainRow
from wsss.data.transforms import Augment, fit_image, to_channels, to_tensor

BINARY_CLASSES = ("defect",)


def target_classes(dataset_classes: Sequence[str], binary: bool) -> list[str]:
    """The classifier's output classes: ``["defect"]`` in binary mode, else the dataset's defect classes."""
    return list(BINARY_CLASSES) if binary else list(dataset_classes)


def binary_targets(rows: Sequence[TrainRow]) -> np.ndarray:
    """``(N, 1)`` float32: 1 where the row has any defect label."""
    return np.array([[float(bool(r.labels))] for r in rows], dtype=np.float32).reshape(len(rows), 1)


def multi_hot(rows: Sequence[TrainRow], classes: Sequence[str]) -> np.ndarray:
    """``(N, K)`` float32 multi-hot matrix over ``classes``; a label outside ``classes`` is a ``ValueError``."""
    col = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for i, r in enumerate(rows):
        for label in r.labels:
            if label not in col:
                raise ValueError(f"row {r.id!r}: label {label!r} is not one of the classes {list(classes)}")
            out[i, col[label]] = 1.0
    return out


def label_matrix(rows: Sequence[TrainRow], classes: Sequence[str]) -> np.ndarray:
    """Targets for ``classes``: :func:`binary_targets` when ``classes`` is ``["defect"]``, else :func:`multi_hot`."""
    return binary_targets(rows) if tuple(classes) == BINARY_CLASSES else multi_hot(rows, classes)


class ImageDataset(Dataset):
    """Reads, converts, resizes and (optionally) augments training images.

    Each item is ``{"image": (C, H, W) float tensor, "target": (K,) float tensor, "index": int}``. Augmentation
    draws from ``np.random.default_rng([seed, epoch, index])``, so a sample is reproducible from those three
    numbers whatever the worker count or order. The epoch lives in a shared-memory tensor, so :meth:`set_epoch`
    also reaches DataLoader workers that persist across epochs (``persistent_workers=True``).

    Args:
        rows: training-index rows (:class:`TrainRow` only).
        classes: output classes; ``["defect"]`` = binary (see :func:`target_classes`).
        input_size: ``(H, W)`` every image is resized to (before augmentation).
        in_chans: 1 (colour converted to gray) or 3 (gray repeated).
        augment: applied to training images only; None for validation.
        seed: the run's seed.
        high_bit_depth: passed to :func:`~wsss.data.images.read_image` (``dataset.high_bit_depth``).
        fit: how an image meets ``input_size`` (``dataset.fit``: stretch or pad, :func:`~wsss.data.transforms.fit_image`).
    """

    def __init__(
        self,
        rows: Sequence[TrainRow],
        classes: Sequence[str],
        input_size: Sequence[int],
        in_chans: int = 1,
        augment: Augment | None = None,
        seed: int = 0,
        high_bit_depth: str = "refuse",
        fit: str = "stretch",
    ):
        for r in rows:
            if type(r) is not TrainRow:
                raise TypeError(
                    f"{type(self).__name__} takes TrainRow objects only (no ground-truth masks in training), got "
                    f"{type(r).__name__} for {getattr(r, 'id', r)!r}; read the index with read_train_index"
                )
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size must be (H, W) with positive sizes, got {input_size}")
        if not classes:
            raise ValueError("classes is empty")
        self.rows = list(rows)
        self.classes = list(classes)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_chans = in_chans
        self.augment = augment
        self.seed = int(seed)
        self.high_bit_depth = high_bit_depth
        self.fit = fit
        self._targets = label_matrix(self.rows, self.classes)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: list | None = None  # what load() returns, per sample, once preloaded

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``; call before iterating the DataLoader each epoch."""
        self._epoch.fill_(int(epoch))

    def targets(self) -> np.ndarray:
        """``(N, K)`` float32 label matrix, without reading any image (for samplers and ``pos_weight``)."""
        return self._targets.copy()

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def load(self, index: int) -> np.ndarray:
        """Sample ``index`` as ``uint8`` ``(H, W)`` / ``(H, W, 3)`` at ``input_size``, before augmentation."""
        if self._cache is not None:
            return self._cache[index]
        img = read_image(self.rows[index].path, self.high_bit_depth)
        return fit_image(to_channels(img, self.in_chans), self.input_size, self.fit)

    def cache_bytes(self) -> int:
        """Memory :meth:`preload` needs: every image at ``input_size``."""
        return len(self.rows) * self.input_size[0] * self.input_size[1] * self.in_chans

    def preload(self, threads: int = 2) -> None:
        """Decode and resize every image once and keep them in memory (``uint8`` at ``input_size``).

        Decoding full-size images dominates an epoch at training resolution on a CPU (a 500 x 1263 KSDD JPEG costs
        more than the forward pass of its 320 x 128 copy), and augmentation happens after the resize, so caching
        changes nothing but speed. Call before creating DataLoaders: forked workers share the cache.
        """
        if self._cache is not None:
            return
        with ThreadPoolExecutor(max(1, threads)) as pool:  # decoding and resizing release the GIL
            self._cache = list(pool.map(self.load, range(len(self.rows))))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        index = int(index) % len(self.rows) if index < 0 else int(index)
        img = self.load(index)
        if self.augment is not None:
            img = self.augment(img, self.rng(index))
        return {"image": to_tensor(img), "target": torch.from_numpy(self._targets[index].copy()), "index": index}
