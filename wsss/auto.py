"""Dataset-adaptive settings: the config values left at ``auto`` are resolved from the training images' sizes.

`prepare` records the size statistics of the training split in ``dataset.json`` (:class:`SizeStats`). Before any
later stage runs, :func:`resolve_auto` replaces every ``auto`` by a number computed from them, so the stage's
manifest and ``config.yaml`` hold the value it used, a dataset of other sizes resolves to other values (and so
makes the stage stale), and ``wsss show-config --run-dir`` shows them. An explicit value always wins.

The rules (constants here, budgets in the config):

- ``classifier.input_size``, ``retrain.input_size``, ``segmenter.input_size``: the median training image (H, W),
  scaled down (never up) so that H x W fits the section's ``max_pixels``, keeping the median aspect ratio within
  :data:`ASPECT_TOLERANCE`, each side a multiple of :data:`MULTIPLE` (the deepest stride of the backbones, so every
  feature map is whole); for the segmenters then magnified by their ``zoom`` per side, also beyond the image's own
  size (the demo's 128 px parts are segmented at 256).
  Images of other sizes are resized to it, as with an explicit size.
- ``retrain.crop``, ``segmenter.crop``: with ``zoom`` > 1, the ``max_pixels`` size of the median image (the
  windows the segmenter trains on, at the cost of an unzoomed one), within ``input_size``; else off.
- ``cam.tile_size``: off, unless the classifier sees the median image shrunk by more than :data:`TILE_ABOVE` per
  side; then the CAM looks at windows that show each part at :data:`TILE_ZOOM` times the classifier's magnification.
- ``pseudo.crf.bilateral_sxy``: :data:`wsss.refine.config.CRF_REACH` of the median image's shorter side (50 px on KSDD's 500 px
  parts, 13 px on the 128 px demo): the appearance kernel reaches across a part, not across the whole image.
- IEM's dilation is already a fraction of each image's shorter side (``cam.iem.dilation``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wsss.data.stats import SizeStats
from wsss.errors import ConfigError
from wsss.fields import AUTO
from wsss.refine.config import CRF_REACH, auto_crf_reach

if TYPE_CHECKING:
    from wsss.config.tree import Config

MULTIPLE = 32
TILE_ABOVE = 4.0
TILE_ZOOM = 2.0
ASPECT_TOLERANCE = 0.05  # auto input sizes keep the median image's aspect ratio within 5%...
MIN_AREA = 0.7  # ...unless that costs more than 30% of the pixels the budget allows (then: the nearest aspect)
INPUT_SECTIONS = ("classifier", "retrain", "segmenter")


def fit_size(size: tuple[int, int], max_pixels: int, multiple: int = MULTIPLE) -> list[int]:
    """``size`` (H, W) scaled down to at most ``max_pixels``, each side a multiple of ``multiple`` (at least one: a
    side below it is the only case that can exceed the budget).

    Of the stride multiples up to the nearest ones of the exactly scaled size that fit the budget and keep at least
    :data:`MIN_AREA` of the largest such size's pixels, the largest whose aspect ratio is within
    :data:`ASPECT_TOLERANCE` of the image's; when none is (sides of a few strides), the one nearest the aspect ratio. So square
    parts stay square (512 x 512 in 163840 px -> 384 x 384, not the larger 416 x 384), and KSDD's 1259 x 500 in 86016 px gives 416 x 160 (2.6, the image 2.52), not 448 x 192 (2.33).
    """
    h, w = size
    s = min(1.0, math.sqrt(max_pixels / (h * w)))
    top = [max(multiple, round(t * s / multiple) * multiple) for t in (h, w)]
    fitting = [
        (a, b)
        for a in range(multiple, top[0] + 1, multiple)
        for b in range(multiple, top[1] + 1, multiple)
        if a * b <= max_pixels
    ] or [(multiple, multiple)]

    def aspect_error(c: tuple[int, int]) -> float:
        return abs(math.log(c[0] / c[1]) - math.log(h / w))

    largest = max(a * b for a, b in fitting)
    sizable = [c for c in fitting if c[0] * c[1] >= MIN_AREA * largest]
    kept = [c for c in sizable if aspect_error(c) <= math.log(1 + ASPECT_TOLERANCE)]
    if kept:
        return list(max(kept, key=lambda c: (c[0] * c[1], -aspect_error(c))))
    return list(min(sizable, key=lambda c: (aspect_error(c), -c[0] * c[1])))


def auto_tiles(median: tuple[int, int], input_size: Sequence[int]) -> list[int]:
    """``cam.tile_size`` for images of ``median`` size seen by a classifier of ``input_size``: [0, 0] = no tiling."""
    shrink = max(median[0] / input_size[0], median[1] / input_size[1])
    if shrink <= TILE_ABOVE:
        return [0, 0]
    return [
        min(median[0], round(input_size[0] * shrink / TILE_ZOOM)),
        min(median[1], round(input_size[1] * shrink / TILE_ZOOM)),
    ]


def is_auto(value: Any) -> bool:
    return value == AUTO


def has_auto(cfg: Config) -> bool:
    return any(is_auto(v) for v in _auto_values(cfg).values())


def _auto_values(cfg: Config) -> dict[str, Any]:
    return {
        **{f"{s}.input_size": getattr(cfg, s).input_size for s in INPUT_SECTIONS},
        **{f"{s}.crop": getattr(cfg, s).crop for s in ("retrain", "segmenter")},
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
        zoom = float(getattr(section, "zoom", 1.0))
        base = fit_size(sizes.median, section.max_pixels)
        if is_auto(section.input_size):
            section.input_size = [max(MULTIPLE, round(zoom * b / MULTIPLE) * MULTIPLE) for b in base]
        if is_auto(getattr(section, "crop", None)):
            crop = base if zoom > 1 else [0, 0]
            section.crop = [min(c, i) for c, i in zip(crop, section.input_size, strict=True)]
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
        budget, zoom = getattr(cfg, s).max_pixels, float(getattr(getattr(cfg, s), "zoom", 1.0))
        within = f"{budget} px" if zoom == 1 else f"{budget} px, magnified {zoom:g}x per side"
        lines.append((f"{s}.input_size", getattr(out, s).input_size, f"median {h}x{w} (HxW) within {within}"))
    for s in ("retrain", "segmenter"):
        if is_auto(getattr(cfg, s).crop):
            why = "windows of the unzoomed size" if getattr(cfg, s).zoom > 1 else "whole images (zoom 1)"
            lines.append((f"{s}.crop", getattr(out, s).crop, why))
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
