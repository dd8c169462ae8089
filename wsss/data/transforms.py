"""Image transforms for classifier training: texture-friendly augmentation, resizing, tensor conversion.

Images are ``uint8`` numpy arrays, ``(H, W)`` or ``(H, W, C)``. Every random choice is drawn from an explicit
:class:`numpy.random.Generator`, so an augmented sample is reproducible from the generator's seed alone
(the dataset seeds it from ``(seed, epoch, index)``).

Normalisation uses a fixed ``MEAN = 0.5`` / ``STD = 0.25`` for every channel (our choice): the default is training
from scratch on gray industrial textures, where ImageNet statistics mean nothing; 0.25 maps ``[0, 1]`` to
``[-2, 2]``, roughly unit variance for typical surfaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.config import AugmentConfig

MEAN = 0.5
STD = 0.25
BLUR_SIGMA = (0.5, 1.2)


class Augment:
    """Flips, rot90 (square images only), a small affine warp, photometric jitter and occasional blur.

    Geometric steps come first, then brightness (additive), contrast (around the image mean), gamma, blur. The
    output has the input's shape and dtype (``uint8``).
    """

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        if img.dtype != np.uint8:
            raise TypeError(f"Augment expects a uint8 image, got {img.dtype}")
        if c.flips:
            if rng.random() < 0.5:
                img = img[:, ::-1]
            if rng.random() < 0.5:
                img = img[::-1]
        if c.rot90 and img.shape[0] == img.shape[1]:
            img = np.rot90(img, int(rng.integers(4)))
        img = np.ascontiguousarray(img)
        if c.affine_degrees > 0 or c.affine_scale > 0 or c.affine_translate > 0:
            img = self._affine(img, rng)
        x = img.astype(np.float32)
        if c.brightness > 0:
            x += rng.uniform(-c.brightness, c.brightness) * 255.0
        if c.contrast > 0:
            mean = float(x.mean())
            x = (x - mean) * rng.uniform(1 - c.contrast, 1 + c.contrast) + mean
        if c.gamma > 0:
            x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** math.exp(rng.uniform(-c.gamma, c.gamma))
        if c.blur_prob > 0 and rng.random() < c.blur_prob:
            x = _keep_shape(x, cv2.GaussianBlur(x, (0, 0), rng.uniform(*BLUR_SIGMA)))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def _affine(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        h, w = img.shape[:2]
        angle = rng.uniform(-c.affine_degrees, c.affine_degrees)
        scale = rng.uniform(1 - c.affine_scale, 1 + c.affine_scale)
        tx, ty = rng.uniform(-c.affine_translate, c.affine_translate, size=2) * (w, h)
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
        m[:, 2] += (tx, ty)
        out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return _keep_shape(img, out)


class FeatureAugment:
    """The geometric part of :class:`Augment` (flips, rot90 of square maps, the affine warp) on a ``(C, h, w)`` feature
    map, for training on cached features (``classifier.cache_features``). The photometric steps have no feature-space
    counterpart and are left out. Draws from ``rng`` in :class:`Augment`'s order for its geometric steps."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def __call__(self, f: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        c = self.cfg
        if c.flips:
            if rng.random() < 0.5:
                f = f.flip(-1)
            if rng.random() < 0.5:
                f = f.flip(-2)
        if c.rot90 and f.shape[-1] == f.shape[-2]:
            f = torch.rot90(f, int(rng.integers(4)), dims=(-2, -1))
        if c.affine_degrees > 0 or c.affine_scale > 0 or c.affine_translate > 0:
            angle = math.radians(rng.uniform(-c.affine_degrees, c.affine_degrees))
            scale = rng.uniform(1 - c.affine_scale, 1 + c.affine_scale)
            tx, ty = rng.uniform(-c.affine_translate, c.affine_translate, size=2)
            # output -> input sampling grid in normalised coordinates ([-1, 1] across each side, so a rotation in
            # pixels is rescaled by the aspect ratio): the inverse of "scale, rotate, then shift"
            h, w = f.shape[-2:]
            cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
            theta = torch.tensor([[cos, -sin * h / w, -2 * tx], [sin * w / h, cos, -2 * ty]], dtype=torch.float32)
            theta[:, 2] = theta[:, :2] @ theta[:, 2]
            grid = F.affine_grid(theta[None], [1, *f.shape], align_corners=False)
            f = F.grid_sample(f[None].float(), grid, padding_mode="reflection", align_corners=False)[0].to(f.dtype)
        return f.contiguous()


def _keep_shape(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """cv2 drops a trailing channel axis of size 1; put it back."""
    return out.reshape(ref.shape)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size = (H, W)``: area averaging when shrinking (no aliasing of fine texture), bilinear otherwise."""
    h, w = int(size[0]), int(size[1])
    if img.shape[:2] == (h, w):
        return img
    shrink = h <= img.shape[0] and w <= img.shape[1]
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape((h, w, *img.shape[2:]))


FITS = ("stretch", "pad")


@dataclass(frozen=True)
class Placement:
    """Where an image sits in a network input of ``size`` (H, W): the rows ``y0:y1`` and columns ``x0:x1``.
    Stretched, it fills the input; padded, it keeps its aspect ratio, centred, and the rest is padding."""

    size: tuple[int, int]
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def padded(self) -> bool:
        return (self.y0, self.x0, self.y1, self.x1) != (0, 0, *self.size)


def placement(shape: tuple[int, ...], size: tuple[int, int], fit: str = "stretch") -> Placement:
    """Where an image of ``shape`` (H, W, ...) goes in an input of ``size`` under ``fit`` (:data:`FITS`):
    ``stretch`` resizes it to the whole input; ``pad`` scales it by one factor to fit inside and centres it."""
    h, w = int(size[0]), int(size[1])
    if fit == "stretch":
        return Placement((h, w), 0, 0, h, w)
    if fit != "pad":
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    s = min(h / shape[0], w / shape[1])
    rh, rw = min(h, max(1, round(shape[0] * s))), min(w, max(1, round(shape[1] * s)))
    y0, x0 = (h - rh) // 2, (w - rw) // 2
    return Placement((h, w), y0, x0, y0 + rh, x0 + rw)


def fit_image(img: np.ndarray, size: tuple[int, int], fit: str = "stretch", fill: float | None = None) -> np.ndarray:
    """``img`` in an input of ``size`` (H, W) as :func:`placement` says: :func:`resize` when stretched; padded, the
    image resized into its place and the rest filled with ``fill`` (default: the image's mean, a neutral flat
    surface that holds no edge a defect could be mistaken for)."""
    where = placement(img.shape, size, fit)
    if not where.padded:
        return resize(img, size)
    inner = resize(img, (where.y1 - where.y0, where.x1 - where.x0))
    value = np.asarray(img.reshape(-1, *img.shape[2:]).mean(0) if fill is None else fill)
    out = np.empty((*where.size, *img.shape[2:]), img.dtype)
    out[...] = np.rint(value).astype(img.dtype) if np.issubdtype(img.dtype, np.integer) else value
    out[where.y0 : where.y1, where.x0 : where.x1] = inner
    return out


def fit_mask(mask: np.ndarray, size: tuple[int, int], fit: str, shape: tuple[int, ...], fill: int) -> np.ndarray:
    """A label mask of the image of ``shape`` placed as :func:`fit_image` places the image (nearest neighbour),
    the padding set to ``fill`` (the ignore label: no pixel of the padding is a training target)."""
    where = placement(shape, size, fit)
    inner = cv2.resize(mask, (where.x1 - where.x0, where.y1 - where.y0), interpolation=cv2.INTER_NEAREST)
    out = np.full(where.size, fill, mask.dtype)
    out[where.y0 : where.y1, where.x0 : where.x1] = inner.reshape(where.y1 - where.y0, where.x1 - where.x0)
    return out


def unfit(maps: torch.Tensor, where: Placement, shape: tuple[int, int]) -> torch.Tensor:
    """Maps ``(B, C, h, w)`` computed on an input placed as ``where`` (at any resolution of that input) back on the
    image's own ``shape`` (H, W), bilinearly: the image's region cut out of the padded input, then resized."""
    if where.padded:
        sy, sx = maps.shape[-2] / where.size[0], maps.shape[-1] / where.size[1]
        if sy != 1 or sx != 1:  # the region is cut at the input's resolution, not at a coarse map's cells
            maps = F.interpolate(maps, size=where.size, mode="bilinear", align_corners=False)
        maps = maps[..., where.y0 : where.y1, where.x0 : where.x1]
    return F.interpolate(maps, size=tuple(shape), mode="bilinear", align_corners=False)


def to_channels(img: np.ndarray, in_chans: int) -> np.ndarray:
    """Grayscale ``(H, W)`` for ``in_chans == 1`` (RGB -> gray), ``(H, W, 3)`` for 3 (gray repeated)."""
    if in_chans == 1:
        return (
            cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 and img.shape[2] == 3 else img.reshape(img.shape[:2])
        )
    if in_chans == 3:
        return img if img.ndim == 3 and img.shape[2] == 3 else np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=2)
    raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``uint8`` ``(H, W[, C])`` -> float ``(C, H, W)``: scaled to ``[0, 1]``, then ``(x - MEAN) / STD``."""
    a = img[:, :, None] if img.ndim == 2 else img
    t = torch.from_numpy(a.transpose(2, 0, 1).copy()).float().div_(255.0)  # copy: decoded arrays are read-only
    return t.sub_(MEAN).div_(STD)


def denormalize(t: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation in :func:`to_tensor`: back to ``[0, 1]`` (clipped), any leading dims."""
    return (t * STD + MEAN).clamp_(0.0, 1.0)


def to_image(t: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor` for visualisation: ``(C, H, W)`` -> ``uint8`` ``(H, W)`` or ``(H, W, C)``."""
    a = (denormalize(t.detach().float().cpu()) * 255.0).round_().to(torch.uint8).numpy()
    return a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0))
