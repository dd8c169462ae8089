"""Synthetic surface-defect data: the demo dataset and the test fixture of every stage.

Grayscale surfaces, procedural (``noise``: cast/blasted surface, ``stripes``: machining marks, ``brushed``: brushed
metal) or crops of real texture photographs (``brick``, ``gravel``, ``grass``: :mod:`wsss.data.photos`), with
random brightness, contrast and a mild illumination gradient, and defects drawn on top with exact binary masks:

- ``scratch``: long, thin (1-3 px; 2-3 on photographs), gently curved line, darker or brighter than the surface.
- ``crack``: thin, jagged, branching random walk (trunk 1-2 px, 2-3 on photographs), always darker.
- ``blob``: pit or dent, a filled irregular ellipse from a few pixels to ~30% of the image, shaded towards its centre.
- ``stain``: low-contrast, soft-edged region; its mask is where the intensity change is at least
  ``STAIN_MASK_FRACTION`` of its peak, so the mask covers what is visible.

Our choice of margins (absolute gray levels, constants below): the texture's standard deviation is 5-12 levels,
scratches, cracks and blobs differ from it by 35-70 levels and stains by 18-30 at their peak (30-45 on the
photographs), so a tiny CNN learns every type from image-level labels at 64-128 px. Each image comes from its own
child seed, so generation is deterministic and independent of order and of the other images.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from wsss.data.photos import PHOTO_STD, PHOTOS, photo_field
from wsss.errors import ConfigError, DataError
from wsss.progress import progress

if TYPE_CHECKING:
    from wsss.data.config import SyntheticConfig

DEFECTS = ("scratch", "crack", "blob", "stain")
TEXTURES = ("noise", "stripes", "brushed")  # procedural
SURFACES = TEXTURES + PHOTOS  # every valid dataset.synthetic.textures name

BRIGHTNESS = (80.0, 170.0)  # mean gray level of the surface
TEXTURE_STD = (5.0, 12.0)  # standard deviation of the texture, gray levels
GRADIENT = 25.0  # largest illumination change across the image, gray levels
SENSOR_NOISE = 1.5  # std of the per-pixel noise added after the defects
STRONG_CONTRAST = (35.0, 70.0)  # |change| of scratch, crack and blob
STAIN_CONTRAST = (18.0, 30.0)  # peak |change| of a stain
# on the photographs, whose large-scale shading (gravel's pebbles, grass's tufts) hides faint changes: stains of
# 30-45 levels and scratches and crack trunks at least 2 px wide, so a person sees every defect at 128 px (the
# demo's validation pseudo-masks: 53.9% with the procedural ranges, 73.7% with these; docs/lab-notes/benchmarks-log.md)
PHOTO_STAIN_CONTRAST = (30.0, 45.0)
STAIN_MASK_FRACTION = 0.5  # stain mask: change >= this fraction of the stain's peak change
P_SECOND_DEFECT = 0.1  # chance that a defective image gets a second defect of another type
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _unit(a: np.ndarray) -> np.ndarray:
    a = a - a.mean()
    return a / (a.std() + 1e-6)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (float32, size x size)."""
    n = rng.standard_normal((size, size), dtype=np.float32)
    return _unit(cv2.GaussianBlur(n, (0, 0), sigma, borderType=cv2.BORDER_REFLECT))


def _texture_field(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    y, x = np.mgrid[:size, :size].astype(np.float32)
    if kind == "noise":  # fine-grained fractal noise; little energy at large scales so stains stay visible
        weights = rng.uniform(0.3, 1.0, 4) * (1.0, 0.8, 0.6, 0.3)
        return sum(w * _smooth_noise(rng, size, s) for w, s in zip(weights, (0.7, 1.5, 3.0, 6.0)))
    if kind == "stripes":  # periodic machining marks, orientation and phase jittered
        theta = rng.choice((0.0, np.pi / 2)) + rng.normal(0.0, 0.05)
        phase = 2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / rng.uniform(5.0, 14.0)
        phase += rng.uniform(0, 2 * np.pi) + 0.5 * _smooth_noise(rng, size, size / 6)
        wave = _unit(np.sin(phase) + 0.35 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))
        return wave * (1 + 0.25 * _smooth_noise(rng, size, size / 8)) + 0.6 * _smooth_noise(rng, size, 0.8)
    if kind == "brushed":  # white noise smeared along one direction by a line kernel
        k = max(9, size // 4) | 1
        angle = rng.choice((0.0, np.pi / 2)) + rng.normal(0.0, 0.06)
        d = (k // 2) * np.array([np.cos(angle), np.sin(angle)])
        kernel = np.zeros((k, k), np.float32)
        c = np.array([k // 2, k // 2])
        cv2.line(kernel, tuple(np.rint(c - d).astype(int)), tuple(np.rint(c + d).astype(int)), 1.0, 1, cv2.LINE_AA)
        n = rng.standard_normal((size, size), dtype=np.float32)
        streaks = _unit(cv2.filter2D(n, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT))
        return streaks + 0.4 * _smooth_noise(rng, size, 0.7) + 0.15 * _smooth_noise(rng, size, size / 8)
    raise ConfigError("dataset.synthetic.textures", f"unknown texture {kind!r}", f"valid names: {', '.join(SURFACES)}")


def make_texture(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A defect-free surface of the given kind (uint8, size x size): procedural or a photograph's crop."""
    photo = kind in PHOTOS
    t = photo_field(rng, size, kind) if photo else _unit(_texture_field(rng, size, kind))
    y, x = np.mgrid[:size, :size].astype(np.float32) - size / 2
    phi = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(phi) + y * np.sin(phi)) / size
    # one expression, in float64 (the rng's scalars): the procedural surfaces stay byte-identical to earlier releases
    img = (
        rng.uniform(*BRIGHTNESS)
        + rng.uniform(*(PHOTO_STD if photo else TEXTURE_STD)) * t
        + rng.uniform(-GRADIENT, GRADIENT) * ramp
    )
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _path(start: np.ndarray, headings: np.ndarray, step: float) -> np.ndarray:
    """Polyline points (N+1, 2) in (x, y) from a start point and one heading per step."""
    moves = step * np.stack([np.cos(headings), np.sin(headings)], 1)
    return np.vstack([start, start + np.cumsum(moves, 0)])


def _draw_lines(mask: np.ndarray, pts: np.ndarray, thickness: int) -> None:
    """OR a polyline exactly ``thickness`` (1-3) px wide into ``mask`` (cv2's own thick lines are wider)."""
    line = np.zeros_like(mask)
    cv2.polylines(line, [np.rint(pts * 16).astype(np.int32)], False, 1, 1, cv2.LINE_8, shift=4)
    if thickness > 1:
        line = cv2.dilate(line, np.ones((2, 2), np.uint8) if thickness == 2 else _CROSS)
    mask |= line


def _scratch(rng: np.random.Generator, size: int, wide: bool = False) -> tuple[np.ndarray, np.ndarray]:
    start = rng.uniform(0.1, 0.9, 2) * size
    heading = np.arctan2(*(size / 2 - start)[::-1]) + rng.uniform(-0.7, 0.7)  # roughly across the image
    n = int(rng.uniform(0.3, 0.9) * size / 1.5)
    bend = rng.uniform(-1.5, 1.5) / size  # radians per pixel: a gentle arc
    headings = heading + bend * 1.5 * np.arange(n) + np.cumsum(rng.normal(0, 0.015, n))
    mask = np.zeros((size, size), np.uint8)
    _draw_lines(mask, _path(start, headings, 1.5), rng.integers(2 if wide else 1, 4))
    return mask > 0, mask * (0.85 + 0.15 * np.clip(_smooth_noise(rng, size, size / 8), -1, 1))


def _crack(rng: np.random.Generator, size: int, wide: bool = False) -> tuple[np.ndarray, np.ndarray]:
    thin = 2 if wide else 1  # branches' width; the trunk is thin or thin + 1
    mask = np.zeros((size, size), np.uint8)
    todo = [(rng.uniform(0.15, 0.85, 2) * size, rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.7) * size, 0)]
    while todo:
        start, heading, length, depth = todo.pop()
        n = max(2, int(length / 2))
        headings = heading + np.cumsum(rng.normal(0, 0.08, n)) + rng.normal(0, 0.45, n)  # drift + jaggedness
        pts = _path(start, headings, 2.0)
        _draw_lines(mask, pts, thin if depth else rng.integers(thin, thin + 2))
        if depth < 2:
            for _ in range(rng.poisson(1.5 if depth == 0 else 0.6)):
                i = rng.integers(n // 4, n)
                turn = rng.choice((-1, 1)) * rng.uniform(0.4, 1.1)
                todo.append((pts[i], headings[i] + turn, length * rng.uniform(0.25, 0.5), depth + 1))
    return mask > 0, mask.astype(np.float32)


def _irregular_ellipse(rng: np.random.Generator, size: int, radius: float, canvas: np.ndarray) -> None:
    """Fill an irregular ellipse (random harmonics on the radius) at a random centre into ``canvas``."""
    th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    k = np.arange(2, 5)[:, None]
    rad = radius * (1 + (rng.uniform(0, 0.1, (3, 1)) * np.cos(k * th + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0))
    pts = np.stack([rad * np.cos(th), rng.uniform(0.45, 1.0) * rad * np.sin(th)], 1)
    a = rng.uniform(0, np.pi)
    centre = rng.uniform(0.6 * radius, size - 0.6 * radius, 2)
    pts = pts @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + centre
    cv2.fillPoly(canvas, [np.rint(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _blob(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((size, size), np.uint8)
    _irregular_ellipse(rng, size, _log_uniform(rng, max(2.0, 0.025 * size), 0.3 * size), mask)
    d = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    return mask > 0, mask * (0.75 + 0.25 * d / max(float(d.max()), 1.0))  # deepest at the centre


def _stain(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    radius = _log_uniform(rng, 0.1 * size, 0.28 * size)
    canvas = np.zeros((size, size), np.float32)
    _irregular_ellipse(rng, size, radius, canvas)
    change = cv2.GaussianBlur(canvas, (0, 0), 0.25 * radius, borderType=cv2.BORDER_CONSTANT)
    change /= max(float(change.max()), 1e-6)
    return change >= STAIN_MASK_FRACTION, change


_SHAPES = {"scratch": _scratch, "crack": _crack, "blob": _blob, "stain": _stain}


def defect_shape(rng: np.random.Generator, size: int, kind: str, wide: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The shape of one defect on a size x size canvas: its bool mask and its float32 change profile (peak ~1,
    0 far from the defect; a stain's soft edge is non-zero outside its mask). ``wide``: scratches and crack trunks
    at least 2 px wide (the photographs')."""
    if kind not in _SHAPES:
        raise ConfigError("dataset.synthetic.defects", f"unknown defect {kind!r}", f"valid names: {', '.join(DEFECTS)}")
    mask, change = _SHAPES[kind](rng, size, wide) if kind in ("scratch", "crack") else _SHAPES[kind](rng, size)
    return mask, change.astype(np.float32, copy=False)


def draw_defect(
    img: np.ndarray, rng: np.random.Generator, kind: str, photo: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect on a square uint8 image; returns the new image and the defect's bool mask.

    The sign of the change is random (cracks: always darker) but flipped where the surface leaves too little
    headroom, so the margin is not lost to clipping at 0 or 255. ``photo``: the surface is a photograph, so the
    defect is drawn in the photographs' visible ranges (wider lines, stronger stains).
    """
    mask, change = defect_shape(rng, img.shape[0], kind, photo)
    mag = rng.uniform(*((PHOTO_STAIN_CONTRAST if photo else STAIN_CONTRAST) if kind == "stain" else STRONG_CONTRAST))
    bg = float(img[mask].mean() if mask.any() else img.mean())
    dark = kind == "crack" or rng.random() < 0.6
    if kind != "crack" and (bg - mag < 8 if dark else bg + mag > 247):
        dark = not dark
    out = img.astype(np.float32) + (-mag if dark else mag) * change
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask


def generate_sample(
    seed: int | Sequence[int],
    size: int,
    defect: str | None,
    textures: Sequence[str] = TEXTURES,
    second: Sequence[str] = DEFECTS,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One image, its 0/255 mask and its labels (``()`` for defect-free; primary defect first).

    With probability ``P_SECOND_DEFECT`` a defective image also gets a defect of another type from ``second``.
    """
    rng = np.random.default_rng(seed)
    surface = textures[rng.integers(len(textures))]
    img = make_texture(rng, size, surface)
    kinds = [] if defect is None else [defect]
    others = [d for d in second if d != defect]
    if defect is not None and rng.random() < P_SECOND_DEFECT and others:
        kinds.append(others[rng.integers(len(others))])
    mask = np.zeros((size, size), bool)
    for kind in kinds:
        img, m = draw_defect(img, rng, kind, surface in PHOTOS)
        mask |= m
    img = np.clip(np.rint(img + rng.normal(0, SENSOR_NOISE, img.shape)), 0, 255).astype(np.uint8)
    return img, mask.astype(np.uint8) * 255, tuple(kinds)


def _validate(cfg: SyntheticConfig) -> None:
    for key, names, valid in (("defects", cfg.defects, DEFECTS), ("textures", cfg.textures, SURFACES)):
        bad = [n for n in names if n not in valid]
        if bad or not names:
            what = f"unknown name(s) {', '.join(map(repr, bad))}" if bad else "empty list"
            raise ConfigError(f"dataset.synthetic.{key}", what, f"valid names: {', '.join(valid)}")
    for key, low in (("n_ok", 1), ("n_defect", 1), ("size", 32), ("seed", 0)):
        if getattr(cfg, key) < low:
            raise ConfigError(f"dataset.synthetic.{key}", f"{getattr(cfg, key)} is below {low}", f"use {key} >= {low}")


def generate(out_dir: Path, cfg: SyntheticConfig) -> Path:
    """Write ``images/<id>.png``, ``masks/<id>.png`` and ``labels.csv`` (``path,label,mask``) under ``out_dir``.

    ``n_ok`` defect-free images (``ok_0000``...) and ``n_defect`` defective ones (``def_0000``...) whose primary
    defect cycles through ``cfg.defects``. Image ``i`` of each group uses the child seed ``[seed, group, i]``, so
    adding OK images does not change the defective ones. Returns the CSV path.
    """
    _validate(cfg)
    width = max(4, len(str(max(cfg.n_ok, cfg.n_defect) - 1)))
    jobs = [(f"ok_{i:0{width}d}", [cfg.seed, 0, i], None) for i in range(cfg.n_ok)]
    jobs += [(f"def_{j:0{width}d}", [cfg.seed, 1, j], cfg.defects[j % len(cfg.defects)]) for j in range(cfg.n_defect)]
    samples = (
        (sid, *generate_sample(seed, cfg.size, defect, cfg.textures, cfg.defects))
        for sid, seed, defect in progress(jobs, desc="synthetic data")
    )
    return write_samples(out_dir, samples)


def write_samples(
    out_dir: Path, samples: Iterable[tuple[str, np.ndarray, np.ndarray, tuple[str, ...]]], ok_label: str = ""
) -> Path:
    """Write each ``(id, image, 0/255 mask, labels)`` as ``images/<id>.png`` (a colour image given in RGB is stored
    as a colour PNG), ``masks/<id>.png``, and ``labels.csv`` (``path,label,mask``; ``ok_label`` for defect-free
    images) under ``out_dir``. Returns the CSV path."""
    out_dir = Path(out_dir)
    for sub in ("images", "masks"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for sid, img, mask, labels in samples:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        for sub, arr in (("images", img), ("masks", mask)):
            path = out_dir / sub / f"{sid}.png"
            if not cv2.imwrite(str(path), arr):
                raise DataError(path, "could not write the PNG", "check that the folder is writable and not full")
        rows.append((f"images/{sid}.png", ";".join(labels) or ok_label, f"masks/{sid}.png"))
    csv_path = out_dir / "labels.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("path", "label", "mask"))
        writer.writerows(rows)
    return csv_path
