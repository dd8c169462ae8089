"""Dense CRF (Kraehenbuehl & Koltun) over per-pixel class probabilities, via pydensecrf2's ``DenseCRF2D``.

The CRF pulls a blurry, shifted CAM onto the image's edges: the bilateral kernel makes pixels of similar intensity
that are close together agree, the Gaussian kernel removes isolated specks. METHOD.md section 4.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from wsss.fields import AUTO
from wsss.refine.config import CRFConfig, auto_crf_reach


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8:
        raise ValueError(f"dense_crf needs a uint8 image, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"dense_crf needs an (H, W) or (H, W, 3) image, got shape {image.shape}")


def _rgb(image: np.ndarray) -> np.ndarray:
    """The image as a writable, C-contiguous uint8 (H, W, 3) array, as pydensecrf's bilateral kernel takes it.

    pydensecrf refuses read-only buffers, and decoded images are read-only (``np.asarray`` of a PIL image), so a
    colour image is copied unless it is already a writable C-contiguous array.
    """
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)  # a new array
    return np.require(image, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])


def dense_crf(image: np.ndarray, probs: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """Refine ``probs`` (float32 (C, H, W), summing to 1 over C) against ``image``; returns float32 (C, H, W).

    ``cfg.backend`` picks pydensecrf2 (the reference) or the PyTorch mean-field of :mod:`wsss.refine.torch_crf`.

    CPU-bound and single-threaded (measured at 10 iterations: 0.4-0.6 s for a 512x512 grayscale image, ~2.7 s
    for a 512x512 image of random colours, whose permutohedral lattice is far larger): callers parallelise over
    images.
    """
    if probs.ndim != 3:
        raise ValueError(f"dense_crf needs (C, H, W) probabilities, got shape {probs.shape}")
    _check_image(image)
    c, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[:2]} but the probabilities are {(h, w)}")
    if cfg.bilateral_sxy == AUTO:  # not resolved for a dataset (library use): this image's own shorter side
        cfg = dataclasses.replace(cfg, bilateral_sxy=auto_crf_reach((h, w)))
    if cfg.scale < 1:
        return _downsampled(image, probs, cfg)
    if cfg.backend == "torch":
        # torch loads only for this backend: the labelling workers of the default one start without it
        from wsss.refine.torch_crf import dense_crf_fast

        return dense_crf_fast(image, probs, cfg, cfg.device)  # which copies the image

    crf = dcrf.DenseCRF2D(w, h, c)
    unary = unary_from_softmax(np.ascontiguousarray(probs, dtype=np.float32), clip=1e-5)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=cfg.gauss_sxy, compat=cfg.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=_rgb(image), compat=cfg.bilateral_compat
    )
    q = crf.inference(cfg.iterations)
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def _downsampled(image: np.ndarray, probs: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """Downsample-infer-upsample: the mean-field at ``cfg.scale`` of the size, with both kernels' spatial widths
    scaled by it (the same neighbourhoods in image terms), refined probabilities upsampled bilinearly."""
    c, h, w = probs.shape
    size = (max(1, round(w * cfg.scale)), max(1, round(h * cfg.scale)))  # cv2 order (W, H)
    small_img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small = np.stack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in probs.astype(np.float32)])
    small /= np.maximum(small.sum(0, keepdims=True), 1e-12)
    small_cfg = dataclasses.replace(
        cfg, scale=1.0, gauss_sxy=cfg.gauss_sxy * cfg.scale, bilateral_sxy=cfg.bilateral_sxy * cfg.scale
    )
    q = dense_crf(small_img, small, small_cfg)
    up = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in q])
    return up / np.maximum(up.sum(0, keepdims=True), 1e-12)
