"""The mask sets that cross stages: a mask stage's ``masks/<id>.png`` (0 background, k class k, 255 ignore) and its
``confidence.csv`` (each image's sample score, mask confidence, defect and ignore fractions), written by the labelling
stages (`pseudo-labels`, `retrain`), the segmenter and an imported review, and read by training, the review package
and evaluation.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss.atomic import atomic_path
from wsss.errors import DataError, StageError
from wsss.labels import IGNORE

CONFIDENCE_FILE = "confidence.csv"  # a mask stage's per-image confidence table (rank reviews and paste sources by it)
MASK_FIX = "re-run `wsss run-stage pseudo-labels`"
# beside a review's masks (<run>/reviewed/masks): the ids whose pseudo-mask a reviewer rejected (`wsss import-review`);
# they train with no mask loss (wsss.train.mask_parts)
REJECTED_FILE = "rejected.txt"


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Write a uint8 mask as PNG atomically (encoded in memory, so the temporary name needs no .png suffix)."""
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        raise StageError(path, "could not encode the mask as PNG", "check that the mask is a 2-D uint8 array")
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(buf.tobytes())


def pseudo_mask_path(masks_dir: Path, sample_id: str) -> Path:
    return Path(masks_dir) / f"{sample_id}.png"


def read_pseudo_mask(path: Path, shape: Sequence[int] | None = None, num_classes: int | None = None) -> np.ndarray:
    """A pseudo-mask as ``uint8`` (H, W); ``shape`` (H, W) and the value range {0..K, 255} are checked when given.

    A missing, unreadable, mis-sized or out-of-range file is a DataError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "pseudo-mask missing for a training image", MASK_FIX)
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        what = "unreadable pseudo-mask" if mask is None else f"pseudo-mask is {mask.dtype} {mask.shape}, not 8-bit gray"
        raise DataError(path, what, MASK_FIX)
    if shape is not None and mask.shape != tuple(shape[:2]):
        raise DataError(path, f"pseudo-mask is {mask.shape} but its image is {tuple(shape[:2])}", MASK_FIX)
    if num_classes is not None:
        bad = np.unique(mask[(mask > num_classes) & (mask != IGNORE)])
        if bad.size:
            what = f"pseudo-mask values {bad[:5].tolist()} are neither 0..{num_classes} nor {IGNORE} (ignore)"
            raise DataError(path, what, MASK_FIX)
    return mask


CONFIDENCE_COLUMNS = ("id", "score", "confidence", "defect_fraction", "ignore_fraction")


def write_confidence(path: Path, rows: list[dict[str, Any]], scores: dict[str, float]) -> None:
    """``confidence.csv`` (atomically): ``rows`` from :func:`wsss.refine.pseudo.label_all` in the given order, each
    with its sample score from ``scores``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CONFIDENCE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            r = {**r, "score": scores[r["id"]]}
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def read_confidence(path: Path) -> dict[str, float]:
    """Per id, the pseudo-mask confidence of a mask stage's ``confidence.csv``; {} when the stage wrote none."""
    if not Path(path).is_file():
        return {}
    try:
        with open(path, newline="") as f:
            return {r["id"]: float(r["confidence"]) for r in csv.DictReader(f)}
    except (KeyError, ValueError) as e:
        raise DataError(path, f"unreadable confidence table ({e})", "re-run the stage that wrote it") from e
