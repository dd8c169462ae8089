"""How a setting declares what it accepts: field helpers shared by every section's dataclass.

Each section lives beside the code that reads it (``wsss/<package>/config.py``) and declares its fields with these
helpers: :func:`num` (a number and its :class:`Range`), :func:`choices` (one of a few strings), :func:`path_field`
(a path resolved against the recipe's folder) and a :class:`Rule` for other checks. :mod:`wsss.config` loads the
sections from YAML and enforces all of them. Torch-free, so the CLI starts fast.
"""

from __future__ import annotations

import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any


def choices(*values: str, default: str) -> Any:
    return field(default=default, metadata={"choices": values})


def path_field(default: str | None = None) -> Any:
    return field(default=default, metadata={"path": True})


AUTO = "auto"  # the value of a setting left to the data: resolved from the training images (wsss.auto)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts, declared with its field (:func:`num`) and enforced by :func:`wsss.config.validate`.

    A list setting has each item checked, and ``lengths`` (allowed item counts) or ``min_items``. ``None`` (an optional
    setting left unset) passes; the string ``auto`` passes where ``auto`` is true. ``fix`` is the error's hint.
    """

    fix: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    among: tuple[float, ...] = ()  # only these values
    odd: bool = False
    lengths: tuple[int, ...] = ()
    min_items: int = 0
    auto: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, str):
            return self.auto and value == AUTO
        if isinstance(value, (list, tuple)):
            n = len(value)
            return (not self.lengths or n in self.lengths) and n >= self.min_items and all(map(self._number, value))
        return self._number(value)

    def _number(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
            or (self.among and v not in self.among)
            or (self.odd and v % 2 != 1)
        )


@dataclass(frozen=True)
class Rule:
    """A non-numeric setting's own check (``accepts``), declared with its field like a :class:`Range`."""

    fix: str
    test: typing.Callable[[Any], bool]

    def accepts(self, value: Any) -> bool:
        return self.test(value)


def num(default: Any, *, fix: str, **bounds: Any) -> Any:
    """A numeric field with its range (see :class:`Range`); a list default becomes a fresh copy per instance."""
    meta = {"check": Range(fix, **bounds)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def folder_name(name: str) -> bool:
    """A plain folder name (or empty: the config file's stem): no separators, no ``.``/``..``, not absolute."""
    return not name or not ("/" in name or "\\" in name or name in (".", "..") or os.path.isabs(name))


ONE = "at least 1"
SEED = "a seed >= 0"
FRACTION = "a fraction in [0, 1]"
PROBABILITY = "a probability in [0, 1]"
LR = "a learning rate > 0, e.g. 1e-3"
WEIGHT = "a weight >= 0 (0 = off)"
DECAY = "a weight decay >= 0 (0 = off)"
SIZE = "[H, W] with positive sizes, or auto"
PIXELS = "a pixel budget >= 1024, e.g. 163840 (640 x 256)"
STRIDE = "8, 16 or 32"
