"""The `cam` stage's artifacts: one ``cams/<id>.npz`` per image, ``scores.csv`` and ``cam.json``.

``cams/<id>.npz`` holds ``cam``: float16 (K, H, W) at the image's original size, values in [0, 1] after the
dataset-level normalisation and the sample-score gate (an image called OK has an all-zero CAM), one map per class of
``cam.json``'s ``classes``. Files are compressed and written atomically.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsss.array_files import load_float32, save_float16
from wsss.atomic import atomic_path
from wsss.errors import DataError

CAMS_DIR = "cams"
SCORES_FILE = "scores.csv"
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


SCORE_COLUMNS = ("id", "score", "iem_rounds", "peak")


def write_scores(
    path: Path, rows: Iterable[dict[str, Any]], classes: Sequence[str], columns: Sequence[str] = SCORE_COLUMNS
) -> None:
    """``scores.csv``: ``columns`` (the cam stage's: id, score = max over classes, IEM rounds used, raw CAM peak),
    then per-class scores ``score_<class>`` if K > 1."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*columns, *class_score_columns(classes)], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def class_score_columns(classes: Sequence[str]) -> list[str]:
    """The per-class score columns of a ``scores.csv`` (none for a single class: ``score`` is its score)."""
    return [f"score_{c}" for c in classes] if len(classes) > 1 else []


def read_class_scores(path: Path, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per image id, the (K,) per-class sample scores of a ``scores.csv`` written by :func:`write_scores`."""
    from wsss.evaluation import read_scores

    columns = class_score_columns(classes) or ["score"]
    per_column = [read_scores(path, c) for c in columns]
    return {sid: np.array([col[sid] for col in per_column], np.float32) for sid in per_column[0]}


def read_cam_meta(cam_dir: Path) -> dict[str, Any]:
    path = Path(cam_dir) / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read the cam stage's metadata ({e})", FIX) from None
