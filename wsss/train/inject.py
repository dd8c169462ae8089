"""Defects injected into OK training images, whose masks are exact by construction (``retrain.inject``,
``segmenter.inject``).

An OK training image (no image label) is background everywhere; drawing a defect on it gives a training pair whose
mask is known to the pixel, at no labelling cost. Two kinds:

- **paste**: a connected region of a confident pseudo-mask (a defective training image whose ``confidence.csv``
  confidence reaches ``min_confidence``; only its defect pixels, never ignore pixels), cut with the pseudo-mask,
  flipped, rotated by a multiple of 90 degrees and resized by up to ``scale``, and pasted at a random place. Its
  brightness is shifted so that its surroundings' mean matches the OK image's there (the defect keeps its contrast to
  the surface, not its absolute gray level), and it fades into the OK surface over ``blend`` pixels outside its mask.
  Its mask value is the source region's class.
- **procedural**: a scratch, crack, pit/blob or stain as :func:`wsss.data.synthetic.defect_shape` draws them, on a
  square window of the image (its full height or width), with a peak change of ``contrast`` x the image's own
  standard deviation. Its kinds name no dataset class, so only a one-class dataset (binary mode, or a dataset with a
  single defect class) gets procedural defects, as class 1; a multi-class dataset is pasted only.

The target of an injected image (:func:`inject`): the defect's class on its mask, 255 (ignore) on pixels the
injection changed outside the mask (the feathered border, a stain's soft tail: neither defect nor the untouched
surface), 0 everywhere else. Injection happens on the image at the training input size, before augmentation, so the
dataset's joint geometry keeps image and mask aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wsss.data.synthetic import defect_shape
from wsss.errors import ConfigError
from wsss.labels import IGNORE
from wsss.train.config import InjectConfig

MIN_STD = 1.0  # gray levels: the std procedural contrast is relative to, at least (a flat image still gets a defect)


@dataclass(frozen=True)
class PasteSource:
    """One confident pseudo-mask region, cut from its training image at the input size.

    ``image``: uint8 (h, w) or (h, w, C) crop, the region's bounding box plus a margin of ``blend + 1`` pixels (less at
    the image border); ``region``: bool (h, w), the region's pixels; ``label``: its class (1..K)."""

    image: np.ndarray
    region: np.ndarray
    label: int


def paste_sources(
    image: np.ndarray, mask: np.ndarray, labels: Sequence[int], min_area: int, blend: int
) -> list[PasteSource]:
    """The connected regions of ``mask`` (0 background, k class k, 255 ignore) of the classes in ``labels`` with at
    least ``min_area`` pixels, as paste sources; ignore pixels are never part of a region."""
    out = []
    margin = blend + 1
    h, w = mask.shape
    for k in labels:
        n, cc, stats, _ = cv2.connectedComponentsWithStats((mask == k).astype(np.uint8), connectivity=8)
        for j in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[j])
            if area < min_area:
                continue
            y0, y1, x0, x1 = max(0, y - margin), min(h, y + bh + margin), max(0, x - margin), min(w, x + bw + margin)
            out.append(PasteSource(image[y0:y1, x0:x1].copy(), cc[y0:y1, x0:x1] == j, int(k)))
    return out


def _target(before: np.ndarray, after: np.ndarray, region: np.ndarray, label: int) -> np.ndarray:
    """``label`` on ``region``, ignore where the pixels changed outside it, 0 elsewhere."""
    changed = before != after
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    target = np.where(changed, IGNORE, 0).astype(np.uint8)
    target[region] = label
    return target


def paste(
    image: np.ndarray, src: PasteSource, rng: np.random.Generator, scale: float, blend: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """``src`` pasted at a random place of ``image`` (see the module docstring); returns (image, target) or None
    when the region does not survive resizing."""
    crop, region = src.image, src.region
    if rng.random() < 0.5:
        crop, region = crop[:, ::-1], region[:, ::-1]
    if rng.random() < 0.5:
        crop, region = crop[::-1], region[::-1]
    k = int(rng.integers(4))
    crop, region = np.rot90(crop, k), np.rot90(region, k)
    hh, ww = image.shape[:2]
    h, w = crop.shape[:2]
    f = min(rng.uniform(1 - scale, 1 + scale) if scale > 0 else 1.0, hh / h, ww / w)
    if f != 1.0:
        size = (max(1, min(ww, round(w * f))), max(1, min(hh, round(h * f))))
        crop = cv2.resize(np.ascontiguousarray(crop), size, interpolation=cv2.INTER_LINEAR)
        region = cv2.resize(region.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    crop, region = np.ascontiguousarray(crop), np.ascontiguousarray(region)
    if not region.any():
        return None
    h, w = region.shape
    y0, x0 = int(rng.integers(hh - h + 1)), int(rng.integers(ww - w + 1))
    window = image[y0 : y0 + h, x0 : x0 + w]
    dist = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # 0 on the region
    alpha = np.where(dist <= blend, 1.0 - dist / (blend + 1), 0.0).astype(np.float32)  # 1 on the region
    ring = ~region & (dist <= blend + 1)  # the region's surroundings, for the brightness shift
    pasted = crop.astype(np.float32)
    if ring.any():
        pasted += window[ring].astype(np.float32).mean(0) - pasted[ring].mean(0)
    if window.ndim == 3:
        alpha = alpha[..., None]
    out_window = np.clip(np.rint(window + alpha * (pasted - window)), 0, 255).astype(np.uint8)
    out = image.copy()
    out[y0 : y0 + h, x0 : x0 + w] = out_window
    target = np.zeros(image.shape[:2], np.uint8)
    target[y0 : y0 + h, x0 : x0 + w] = _target(window, out_window, region, src.label)
    return out, target


def procedural(
    image: np.ndarray, rng: np.random.Generator, kind: str, contrast: Sequence[float], label: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """A procedural defect of ``kind`` drawn on a random square window of ``image`` (side: its shorter side), with a
    peak change of ``contrast`` (low, high) x the image's standard deviation; returns (image, target).

    Darker or brighter at random (cracks: always darker), flipped where the surface leaves too little headroom."""
    hh, ww = image.shape[:2]
    side = min(hh, ww)
    y0, x0 = int(rng.integers(hh - side + 1)), int(rng.integers(ww - side + 1))
    region, change = defect_shape(rng, side, kind)
    window = image[y0 : y0 + side, x0 : x0 + side]
    gray = window.astype(np.float32) if window.ndim == 2 else window.astype(np.float32).mean(2)
    mag = rng.uniform(*contrast) * max(float(image.astype(np.float32).std()), MIN_STD)
    bg = float(gray[region].mean()) if region.any() else float(gray.mean())
    dark = kind == "crack" or rng.random() < 0.5
    if kind != "crack" and (bg - mag < 0 if dark else bg + mag > 255):
        dark = not dark
    delta = (-mag if dark else mag) * change
    if window.ndim == 3:
        delta = delta[..., None]
    out_window = np.clip(np.rint(window + delta), 0, 255).astype(np.uint8)
    out = image.copy()
    out[y0 : y0 + side, x0 : x0 + side] = out_window
    target = np.zeros(image.shape[:2], np.uint8)
    target[y0 : y0 + side, x0 : x0 + side] = _target(window, out_window, region, label)
    return out, target


class Injector:
    """Draws the injection of one OK sample: with probability ``cfg.prob`` a pasted region (from ``sources``) or a
    procedural defect (class ``procedural_label``; None = paste only), in the odds of their weights.

    Deterministic in the generator it is given; :meth:`__call__` returns (image, target) or None (not injected)."""

    def __init__(self, cfg: InjectConfig, sources: Sequence[PasteSource], procedural_label: int | None):
        self.cfg, self.sources, self.procedural_label = cfg, list(sources), procedural_label
        paste_w = cfg.paste_weight if self.sources else 0.0
        proc_w = cfg.procedural_weight if procedural_label is not None and cfg.kinds else 0.0
        total = paste_w + proc_w
        self.p_paste = paste_w / total if total > 0 else 0.0
        self.active = total > 0 and cfg.prob > 0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.active or rng.random() >= self.cfg.prob:
            return None
        if rng.random() < self.p_paste:
            src = self.sources[int(rng.integers(len(self.sources)))]
            return paste(image, src, rng, self.cfg.scale, self.cfg.blend)
        kind = self.cfg.kinds[int(rng.integers(len(self.cfg.kinds)))]
        return procedural(image, rng, kind, self.cfg.contrast, int(self.procedural_label or 1))


def check_inject(icfg: InjectConfig, section: str) -> None:
    """The `inject` checks that involve several fields; each is a ConfigError naming its key."""
    if icfg.paste_weight + icfg.procedural_weight <= 0:
        raise ConfigError(
            f"{section}.inject.paste_weight", "paste_weight and procedural_weight are both 0", "set one > 0"
        )
    if icfg.contrast[0] > icfg.contrast[1]:
        raise ConfigError(f"{section}.inject.contrast", f"low > high in {list(icfg.contrast)}", "write [low, high]")


def describe_injection(injector: Injector, n_ok: int, n_classes: int, section: str, masks_dir: Path) -> str:
    """The log line of a training's injection into its ``n_ok`` OK images; a ConfigError when nothing can be
    injected (no confident region to paste and no procedural defect for the classes)."""
    kinds = []
    if injector.sources:
        kinds.append(f"{len(injector.sources)} pasted region(s)")
    if injector.procedural_label is not None:
        kinds.append("procedural defects")
    if not injector.active:
        raise ConfigError(
            f"{section}.inject",
            f"nothing to inject: no region of {masks_dir} reaches min_confidence {injector.cfg.min_confidence}"
            + ("" if n_classes == 1 else " (procedural defects need a one-class dataset)"),
            f"lower {section}.inject.min_confidence, set procedural_weight > 0, or set enabled=false",
        )
    return f"{section}: injecting defects into {n_ok} OK training image(s) (p={injector.cfg.prob}): " + " and ".join(
        kinds
    )
