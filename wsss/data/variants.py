"""Generated data sets of the kinds a team brings, beyond the demo's gray 128 px squares: colour photographs, wide
strips, large images with small defects, square textures, faint regions instead of dark lines, and pits of a few
pixels on large images (gray and colour).

Each :class:`Variant` reuses the demo generator's surfaces and defect shapes (:mod:`wsss.data.synthetic`), on an
``height`` x ``width`` image: the surface is cut from a square one of the longer side, and each defect is drawn
inside a square window of side ``window`` at a random place (so a defect's size follows the window, not the image:
on the large images defects cover a few hundred pixels of several million). A colour variant tints each surface
and gives each defect a colour of its own (rust, oxide, dirt: the change is larger in some channels than in
others, so it is visible in colour and in luminance). Masks are exact, as the demo's.

``bench/generated.py`` runs the recipe `wsss init` writes on each at full size; the tests use small versions
(:func:`small`). They are data no recipe was tuned on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wsss.data.synthetic import PHOTOS, SENSOR_NOISE, draw_defect, make_texture, write_samples
from wsss.errors import ConfigError
from wsss.progress import progress

TINT = 0.15  # a colour surface's channels differ from its gray level by up to this factor
DEFECT_HUE = (0.4, 1.6)  # a colour defect's change per channel, relative to its gray change
DIRECT_MAX = 768  # surfaces up to this side are generated directly; larger ones magnified from this side
GRAIN = (3.0, 6.0)  # the fine grain of a magnified surface, gray levels
MIN_WINDOW = 8  # px: the smallest window a defect is drawn in (a blob's radius is up to 0.3 of it, at least 2 px)


@dataclass(frozen=True)
class Variant:
    """One kind of data set: image size, channels, where defects are drawn, which defects on which surfaces."""

    name: str
    height: int
    width: int
    colour: bool
    window: int  # side of the square region a defect is drawn in (its size follows this, not the image's)
    defects: tuple[str, ...]
    textures: tuple[str, ...]
    n_ok: int = 60
    n_defect: int = 60
    what: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("colour", 384, 384, True, 256, ("scratch", "blob", "stain"), ("gravel", "brick", "noise"),
                what="colour photographs of surfaces (tinted), defects of their own colour"),
        Variant("strips", 192, 576, False, 192, ("scratch", "crack", "blob"), ("brushed", "stripes"),
                what="wide strips (1:3) of machined metal"),
        Variant("large", 1800, 2700, False, 384, ("scratch", "blob", "crack"), ("noise", "stripes"), 40, 40,
                what="large images (2700 x 1800) with defects of a few hundred pixels"),
        Variant("squares", 512, 512, False, 512, ("crack", "blob", "scratch"), ("stripes", "brushed", "grass"),
                what="square textures"),
        Variant("faint", 384, 384, False, 384, ("stain",), ("noise", "gravel"),
                what="faint soft-edged regions (stains), no lines"),
        # blobs drawn in 24 px windows: 4-14 px across (radius 2-7 px), 0.001-0.01% of the image, as MTD's blowholes
        # and the pits of machined parts
        Variant("pits", 960, 1280, False, 24, ("blob",), ("brushed", "stripes", "noise"),
                what="pits of 4-14 px on large machined surfaces (1280 x 960)"),
        Variant("pits-colour", 960, 1280, True, 24, ("blob",), ("gravel", "brick", "noise"),
                what="pits of 4-14 px on large colour photographs of surfaces (1280 x 960)"),
    )
}  # fmt: skip


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"variant {name!r}", "unknown generated data set", f"use one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def small(v: Variant, factor: float = 4, n: int = 8) -> Variant:
    """``v`` shrunk by ``factor`` per side (less where its shorter side would fall below 64 px: the aspect ratio is
    kept; defect windows not below :data:`MIN_WINDOW`), with ``n`` images of each kind: the tests' size."""
    f = min(factor, min(v.height, v.width) / 64)
    window = max(MIN_WINDOW, round(v.window / f))  # the smallest defects keep a few pixels
    return dataclasses.replace(
        v, height=round(v.height / f), width=round(v.width / f), window=window, n_ok=n, n_defect=n
    )


def _surface(rng: np.random.Generator, side: int, kind: str) -> np.ndarray:
    """A square surface of ``side`` px. Above :data:`DIRECT_MAX` its structure is generated at that side and
    magnified (the demo's large-scale blurs grow with the side, minutes per image at 2700 px), with a fine grain
    of full resolution on top, as a large photograph has."""
    if side <= DIRECT_MAX:
        return make_texture(rng, side, kind)
    coarse = cv2.resize(make_texture(rng, DIRECT_MAX, kind), (side, side), interpolation=cv2.INTER_CUBIC)
    grain = rng.standard_normal((side, side), dtype=np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.7) * rng.uniform(*GRAIN)
    return np.clip(np.rint(coarse.astype(np.float32) + grain), 0, 255).astype(np.uint8)


def generate_sample(
    seed: Sequence[int], v: Variant, defect: str | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One image (H, W) or (H, W, 3), its 0/255 mask and its labels (``()`` when defect-free)."""
    rng = np.random.default_rng(seed)
    surface = v.textures[rng.integers(len(v.textures))]
    side = max(v.height, v.width)
    y0, x0 = rng.integers(side - v.height + 1), rng.integers(side - v.width + 1)
    gray = _surface(rng, side, surface)[y0 : y0 + v.height, x0 : x0 + v.width]
    tint = 1 + rng.uniform(-TINT, TINT, 3) if v.colour else np.ones(1)
    img = gray.astype(np.float32)[..., None] * tint.astype(np.float32)
    mask = np.zeros((v.height, v.width), bool)
    for kind in () if defect is None else (defect,):
        win = min(v.window, v.height, v.width)
        wy, wx = rng.integers(v.height - win + 1), rng.integers(v.width - win + 1)
        patch = gray[wy : wy + win, wx : wx + win]
        drawn, m = draw_defect(patch.copy(), rng, kind, surface in PHOTOS)
        change = drawn.astype(np.float32) - patch.astype(np.float32)
        hue = rng.uniform(*DEFECT_HUE, 3) if v.colour else np.ones(1)
        img[wy : wy + win, wx : wx + win] += change[..., None] * (hue / hue.mean()).astype(np.float32)
        mask[wy : wy + win, wx : wx + win] |= m
    img += rng.normal(0, SENSOR_NOISE, img.shape).astype(np.float32)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return (out if v.colour else out[..., 0]), mask.astype(np.uint8) * 255, (() if defect is None else (defect,))


def generate(out_dir: Path, v: Variant, seed: int = 0) -> Path:
    """Write ``images/<id>.png`` (colour as BGR PNGs), ``masks/<id>.png`` and ``labels.csv`` (``path,label,mask``,
    the CSV adapter's columns; label ``ok`` or the defect) under ``out_dir``; image ``i`` of each kind from the child seed ``[seed, kind, i]``.
    Returns the CSV path."""
    jobs = [(f"ok_{i:04d}", [seed, 0, i], None) for i in range(v.n_ok)]
    jobs += [(f"def_{j:04d}", [seed, 1, j], v.defects[j % len(v.defects)]) for j in range(v.n_defect)]
    samples = (
        (sid, *generate_sample(child, v, defect)) for sid, child, defect in progress(jobs, desc=f"{v.name} data")
    )
    return write_samples(out_dir, samples, ok_label="ok")
