"""Training checkpoints: plain tensors and numbers only, so loading never unpickles code.

A checkpoint is a dict of state_dicts (model, optimizer, scheduler) plus the epoch and bookkeeping numbers,
written atomically and loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from wsss.atomic import atomic_path
from wsss.errors import StageError


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None if there is none; a corrupt file is an error naming it."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/foreign files
        raise StageError(
            path,
            f"unreadable checkpoint ({type(e).__name__}: {e})",
            "delete it to restart the stage from scratch (or re-run with --force)",
        ) from None


def write_metrics(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """The per-epoch ``metrics.csv`` (rewritten atomically each epoch, so it always matches the checkpoint)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` written by :func:`write_metrics` (none if it does not exist), for resuming.

    An empty cell (a column the run has no value for, e.g. a loss term it does not use) reads as nan.
    """
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [
            {k: int(v) if k == "epoch" else (float(v) if v != "" else math.nan) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]
