"""Image-size statistics of a dataset's training images: what the `auto` settings (wsss/auto.py) resolve from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SizeStats:
    """Sizes (H, W) of the training images: the per-side median, minimum and maximum, and how many images."""

    median: tuple[int, int]
    min: tuple[int, int]
    max: tuple[int, int]
    n: int

    @classmethod
    def of(cls, sizes: Sequence[tuple[int, int]]) -> SizeStats:
        if not sizes:
            raise ValueError("no image sizes")
        hs, ws = sorted(h for h, _ in sizes), sorted(w for _, w in sizes)
        mid = len(sizes) // 2
        med = (hs[mid], ws[mid]) if len(sizes) % 2 else ((hs[mid - 1] + hs[mid]) // 2, (ws[mid - 1] + ws[mid]) // 2)
        return cls(median=med, min=(hs[0], ws[0]), max=(hs[-1], ws[-1]), n=len(sizes))

    @classmethod
    def of_train(cls, split_sizes: Iterable[tuple[str, tuple[int, int]]]) -> SizeStats | None:
        """Statistics of the ``(split, (H, W))`` pairs of the training split (all of them when none is train), what
        `auto` settings resolve from; None without any image."""
        pairs = list(split_sizes)
        sizes = [hw for split, hw in pairs if split == "train"] or [hw for _, hw in pairs]
        return cls.of(sizes) if sizes else None

    def to_json(self) -> dict[str, Any]:
        return {"median": list(self.median), "min": list(self.min), "max": list(self.max), "n": self.n}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SizeStats:
        return cls(tuple(d["median"]), tuple(d["min"]), tuple(d["max"]), int(d["n"]))  # type: ignore[arg-type]
