"""The `anomaly` stage's artifacts: one ``<id>.npz`` per image, ``scores.csv`` and ``anomaly.json``.

``<id>.npz`` holds ``map``: float16 (H, W) at the image's original size, the raw smoothed nearest-neighbour distance
(not normalised, so pixel AUROC keeps its full ranking). ``anomaly.json`` holds the dataset-level ``lo`` and ``hi``
that :func:`normalise` maps to [0, 1]; :func:`read_anomaly` applies them. Files are written
atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsss.array_files import load_float32, save_float16
from wsss.errors import DataError

META_FILE = "anomaly.json"
FIX = "re-run the anomaly stage: `wsss run-stage anomaly --force`"


def normalise(raw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A raw distance map in [0, 1]: 0 at or below ``lo`` (normal), 1 at or above ``hi`` (as anomalous as a typical
    defect); dataset-level constants, never per image (an OK image must not get a full-strength map)."""
    return np.clip((raw.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def anomaly_path(anomaly_dir: Path, sample_id: str) -> Path:
    return Path(anomaly_dir) / f"{sample_id}.npz"


def write_map(path: Path, raw: np.ndarray) -> Path:
    """Write a raw (H, W) anomaly map as compressed float16, atomically."""
    if raw.ndim != 2:
        raise ValueError(f"an anomaly map is (H, W), got shape {raw.shape}")
    return save_float16(path, "map", raw)


def read_map(path: Path, shape: Sequence[int] | None = None) -> np.ndarray:
    """A raw anomaly map as float32 (H, W); a missing, corrupt or mis-shaped file is a DataError naming it."""
    raw = load_float32(path, "map", "anomaly map", FIX)
    if raw.ndim != 2 or (shape is not None and tuple(raw.shape) != tuple(shape)):
        raise DataError(path, f"anomaly map is {raw.shape}, expected {tuple(shape) if shape else '(H, W)'}", FIX)
    return raw


def read_meta(anomaly_dir: Path) -> dict[str, Any]:
    path = Path(anomaly_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
        float(meta["lo"]), float(meta["hi"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(path, f"cannot read the anomaly stage's metadata ({e})", FIX) from None
    return meta


def read_range(anomaly_dir: Path) -> tuple[float, float]:
    """The dataset-level normalisation (lo, hi) of ``anomaly.json``."""
    meta = read_meta(anomaly_dir)
    return float(meta["lo"]), float(meta["hi"])


def read_anomaly(path: Path, lo: float, hi: float, shape: Sequence[int] | None = None) -> np.ndarray:
    """The normalised (H, W) anomaly map in [0, 1] (``lo``, ``hi`` from ``anomaly.json``)."""

    return normalise(read_map(path, shape), lo, hi)
