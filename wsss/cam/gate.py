"""Which classes of an image the pseudo-labels may draw: the `cam` stage's gate (``cam.gate``).

METHOD.md section 2 gates a CAM by the DFC's sample score: a class scored under ``cam.score_threshold`` gets an
all-zero map, so an image called OK gets an empty pseudo-mask. On images with an image label (the training and
validation splits) the label is exact where the score is not: ``cam.gate: labels`` lets the label decide there, so
a defective training image the DFC scored low still gets its CAM (and IEM) and an OK image the DFC scored high is
never drawn on. Test images, and any image without a split of its own, keep the score: their labels are what is
measured. Ground-truth masks are never read either way.

The stage records each image's decision in its ``scores.csv`` (``called``: 1 when any class passed the gate), so
every stage after it labels exactly the images the CAMs were kept for; :func:`read_calls` falls back to
``score >= score_threshold`` for a ``scores.csv`` written before the column existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsss.artifacts.scores import SCORES_FILE, read_scores, score_columns
from wsss.cam.io import FIX, META_FILE, read_cam_meta
from wsss.data.classifier_data import label_matrix
from wsss.data.index import TrainRow
from wsss.errors import DataError

LABELLED_SPLITS = ("train", "val")  # where cam.gate=labels lets the image label decide
CALLED_COLUMN = "called"


def present_classes(
    row: TrainRow, scores: Sequence[float], classes: Sequence[str], threshold: float, gate: str = "score"
) -> np.ndarray:
    """``(K,)`` bool: the classes of ``row`` whose CAM is kept. ``gate`` score: each class's sample score reaches
    ``threshold``; labels: on the training and validation splits the classes the image label names (any label for
    the binary ``["defect"]``), elsewhere the score."""

    if gate == "labels" and row.split in LABELLED_SPLITS:
        return label_matrix([row], classes)[0] > 0
    return np.asarray(scores, np.float32).reshape(-1) >= threshold


def score_errors_line(rows: Sequence[TrainRow], scores: dict[str, float], threshold: float, gate: str) -> str:
    """One log line: how many training images the sample score alone calls wrong at ``threshold`` (OK ones called
    defective, defective ones called OK), and what decides for them under ``gate``."""

    train = [r for r in rows if r.split == "train"]
    ok = [r for r in train if not r.defective]
    bad = [r for r in train if r.defective]
    fp = sum(scores[r.id] >= threshold for r in ok)
    fn = sum(scores[r.id] < threshold for r in bad)
    decides = (
        "their labels decide (cam.gate: labels)" if gate == "labels" else "`cam.gate: labels` lets their labels decide"
    )
    return (
        f"cam: at score_threshold {threshold:g} the classifier calls {fp} of {len(ok)} OK training images defective "
        f"and {fn} of {len(bad)} defective ones OK; {decides}"
    )


def read_calls(cam_dir: Path) -> dict[str, bool]:
    """Per image id, whether the cam stage kept a CAM for it (any class passed its gate): the ``called`` column of
    its ``scores.csv``, or ``score >= score_threshold`` from ``cam.json`` for a table without that column."""

    path = Path(cam_dir) / SCORES_FILE
    if CALLED_COLUMN in score_columns(path):
        return {sid: v >= 0.5 for sid, v in read_scores(path, CALLED_COLUMN).items()}
    meta = read_cam_meta(cam_dir)
    try:
        threshold = float(meta["score_threshold"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(Path(cam_dir) / META_FILE, f"missing or invalid 'score_threshold' ({e})", FIX) from None
    return {sid: s >= threshold for sid, s in read_scores(path).items()}
