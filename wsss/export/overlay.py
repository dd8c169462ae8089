"""Masks drawn over their images for people to look at: a translucent fill per class and a solid outline.

Class k gets its colour (:func:`wsss.labels.class_colour`); ignore pixels (255) are drawn in grey. Images are returned as
RGB ``uint8``; write them with :func:`write_rgb_png`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsss.atomic import atomic_path
from wsss.errors import StageError
from wsss.labels import class_colour

ALPHA = 0.35  # fill opacity


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """RGB uint8 (H, W, 3): ``image`` (gray or RGB uint8) with each label region filled at ``alpha`` and outlined."""
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match image {image.shape[:2]}")
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3].copy()
    out = rgb.astype(np.float32)
    for k in np.unique(labels):
        if k == 0:
            continue
        region = labels == k
        colour = np.array(class_colour(int(k)), np.float32)
        out[region] = (1 - alpha) * out[region] + alpha * colour
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        outline = np.zeros(labels.shape, np.uint8)
        cv2.drawContours(outline, contours, -1, 1, thickness=max(1, round(min(labels.shape) / 300)))
        out[outline > 0] = colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise StageError(path, "could not encode the overlay as PNG", "check the image is (H, W, 3) uint8")
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(buf.tobytes())
