"""Per-image arrays on disk (CAMs, anomaly maps): one compressed ``.npz`` each, float16 on disk, float32 in memory."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from wsss.atomic import atomic_path
from wsss.errors import DataError


def save_float16(path: Path, key: str, array: np.ndarray) -> Path:
    """Write ``array`` under ``key`` as compressed float16, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{key: array.astype(np.float16)})
    return path


def load_float32(path: Path, key: str, what: str, fix: str) -> np.ndarray:
    """The array under ``key`` as float32; a missing or corrupt file is a DataError naming it (``what``: "CAM file",
    "anomaly map"; ``fix``: how to get it back)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{what} missing for an indexed image", fix)
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z[key], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, f"corrupt {what} ({type(e).__name__}: {e})", fix) from None
