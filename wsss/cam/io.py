"""The `cam` stage's artifacts: one ``cams/<id>.npz`` per image, ``scores.csv`` and ``cam.json``.

``cams/<id>.npz`` holds ``cam``: float16 (K, H, W) at the image's original size, values in [0, 1] after the
dataset-level normalisation and the sample-score gate (an image called OK has an all-zero CAM), one map per class of
``cam.json``'s ``classes``. Files are compressed and written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsss.array_files import load_float32, save_float16
from wsss.errors import DataError

CAMS_DIR = "cams"
META_FILE = "cam.json"
FIX = "re-run the cam stage: `wsss run-stage cam --force`"


def cam_path(cam_dir: Path, sample_id: str) -> Path:
    return Path(cam_dir) / CAMS_DIR / f"{sample_id}.npz"


def write_cam(path: Path, cam: np.ndarray) -> Path:
    """Write a (K, H, W) CAM as compressed float16, atomically."""
    if cam.ndim != 3:
        raise ValueError(f"a CAM is (K, H, W), got shape {cam.shape}")
    return save_float16(path, "cam", np.clip(cam, 0.0, 1.0))


def read_cam(path: Path, shape: Sequence[int] | None = None, classes: int | None = None) -> np.ndarray:
    """A CAM as float32 (K, H, W); ``shape`` (H, W) and ``classes`` (K) are checked when given.

    A missing, corrupt or mis-shaped file is a DataError naming it.
    """
    cam = load_float32(path, "cam", "CAM file", FIX)
    if cam.ndim != 3:
        raise DataError(path, f"CAM has shape {cam.shape}, expected (K, H, W)", FIX)
    if classes is not None and cam.shape[0] != classes:
        raise DataError(path, f"CAM has {cam.shape[0]} class maps, expected {classes}", FIX)
    if shape is not None and tuple(cam.shape[1:]) != tuple(shape):
        raise DataError(path, f"CAM is {cam.shape[1:]} but its image is {tuple(shape)}", FIX)
    return cam


def read_cam_meta(cam_dir: Path) -> dict[str, Any]:
    path = Path(cam_dir) / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read the cam stage's metadata ({e})", FIX) from None
