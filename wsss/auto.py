"""Dataset-adaptive settings: the config values left at ``auto`` are resolved from the training images' sizes.

`prepare` records the size statistics of the training split in ``dataset.json`` (:class:`SizeStats`). Before any
later stage runs, :func:`resolve_auto` replaces every ``auto`` by a number computed from them, so the stage's
manifest and ``config.yaml`` hold the value it used, a dataset of other sizes resolves to other values (and so
makes the stage stale), and ``wsss show-config --run-dir`` shows them. An explicit value always wins.

The rules (constants here, budgets in the config):

- ``classifier.input_size``, ``retrain.input_size``, ``segmenter.input_size``: the median training image (H, W),
  scaled down (never up) so that H x W fits the section's ``max_pixels``, keeping the median aspect ratio, each side
  rounded to a multiple of :data:`MULTIPLE` (the deepest stride of the backbones, so every feature map is whole).
  Images of other sizes are resized to it, as with an explicit size.
- ``cam.tile_size``: off, unless the classifier sees the median image shrunk by more than :data:`TILE_ABOVE` per
  side; then the CAM looks at windows that show each part at :data:`TILE_ZOOM` times the classifier's magnification.
- ``pseudo.crf.bilateral_sxy``: :data:`CRF_REACH` of the median image's shorter side (50 px on KSDD's 500 px
  parts, 13 px on the 128 px demo): the appearance kernel reaches across a part, not across the whole image.
- IEM's dilation is already a fraction of each image's shorter side (``cam.iem.dilation``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wsss.errors import ConfigError

if TYPE_CHECKING:
    from wsss.config import Config

AUTO = "auto"
MULTIPLE = 32
TILE_ABOVE = 4.0
TILE_ZOOM = 2.0
CRF_REACH = 0.1
INPUT_SECTIONS = ("classifier", "retrain", "segmenter")


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


def fit_size(size: tuple[int, int], max_pixels: int, multiple: int = MULTIPLE) -> list[int]:
    """``size`` (H, W) scaled down to at most ``max_pixels`` (aspect kept), each side a multiple of ``multiple``
    (at least one multiple: a side below it is the only case that can exceed the budget)."""
    h, w = size
    s = min(1.0, math.sqrt(max_pixels / (h * w)))
    th, tw = h * s, w * s
    nearest = [max(multiple, round(th / multiple) * multiple), max(multiple, round(tw / multiple) * multiple)]
    if nearest[0] * nearest[1] <= max_pixels:
        return nearest
    # rounding both sides up overshot the budget: of the stride multiples around the exact size, the largest that
    # fits (then the one nearest the aspect ratio), e.g. 1259 x 500 in 86016 px -> 448 x 192, not 480 x 192
    sides = [
        sorted({max(multiple, math.floor(t / multiple) * multiple), max(multiple, math.ceil(t / multiple) * multiple)})
        for t in (th, tw)
    ]
    candidates = [[a, b] for a in sides[0] for b in sides[1]]
    fitting = [c for c in candidates if c[0] * c[1] <= max_pixels] or [[sides[0][0], sides[1][0]]]
    return max(fitting, key=lambda c: (c[0] * c[1], -abs(math.log(c[0] / c[1]) - math.log(h / w))))


def auto_tiles(median: tuple[int, int], input_size: Sequence[int]) -> list[int]:
    """``cam.tile_size`` for images of ``median`` size seen by a classifier of ``input_size``: [0, 0] = no tiling."""
    shrink = max(median[0] / input_size[0], median[1] / input_size[1])
    if shrink <= TILE_ABOVE:
        return [0, 0]
    return [
        min(median[0], round(input_size[0] * shrink / TILE_ZOOM)),
        min(median[1], round(input_size[1] * shrink / TILE_ZOOM)),
    ]


def auto_crf_reach(size: Sequence[int]) -> float:
    """The bilateral kernel's reach for images of ``size`` (H, W): :data:`CRF_REACH` of the shorter side."""
    return round(CRF_REACH * min(size[0], size[1]), 1)


def is_auto(value: Any) -> bool:
    return value == AUTO


def has_auto(cfg: Config) -> bool:
    return any(is_auto(v) for v in _auto_values(cfg).values())


def _auto_values(cfg: Config) -> dict[str, Any]:
    return {
        **{f"{s}.input_size": getattr(cfg, s).input_size for s in INPUT_SECTIONS},
        "cam.tile_size": cfg.cam.tile_size,
        "pseudo.crf.bilateral_sxy": cfg.pseudo.crf.bilateral_sxy,
    }


def resolve_auto(cfg: Config, sizes: SizeStats | None, where: str = "dataset.json") -> Config:
    """A copy of ``cfg`` with every ``auto`` value computed from ``sizes`` (``cfg`` itself when none is auto)."""
    if not has_auto(cfg):
        return cfg
    if sizes is None:
        raise ConfigError(
            where,
            "no training image sizes recorded (written by an older wsss), so `auto` settings cannot be resolved",
            "re-run the prepare stage: `wsss run-stage prepare --force`, or set the values explicitly",
        )
    out = copy.deepcopy(cfg)
    for s in INPUT_SECTIONS:
        section = getattr(out, s)
        if is_auto(section.input_size):
            section.input_size = fit_size(sizes.median, section.max_pixels)
    if is_auto(out.cam.tile_size):
        out.cam.tile_size = auto_tiles(sizes.median, out.classifier.input_size)
    if is_auto(out.pseudo.crf.bilateral_sxy):
        out.pseudo.crf.bilateral_sxy = auto_crf_reach(sizes.median)
    return out


def resolved_lines(cfg: Config, sizes: SizeStats) -> list[tuple[str, Any, str]]:
    """``(key, value, why)`` of every setting ``auto`` resolves, for ``wsss init``'s recipe comments."""
    out = resolve_auto(cfg, sizes)
    h, w = sizes.median
    lines = []
    for s in INPUT_SECTIONS:
        budget = getattr(cfg, s).max_pixels
        lines.append((f"{s}.input_size", getattr(out, s).input_size, f"median {h}x{w} (HxW) within {budget} px"))
    tiles = out.cam.tile_size
    why = (
        f"whole images: shrunk at most {TILE_ABOVE:g}x per side"
        if tiles == [0, 0]
        else f"windows seen at {TILE_ZOOM:g}x the classifier's magnification: images shrunk over {TILE_ABOVE:g}x"
    )
    lines.append(("cam.tile_size", tiles, why))
    lines.append(
        ("pseudo.crf.bilateral_sxy", out.pseudo.crf.bilateral_sxy, f"{CRF_REACH:g} x shorter side {min(h, w)}")
    )
    return lines
