"""``confidence.csv``: each image's sample score, mask confidence and defect and ignore fractions, written by the
stages that label images (`pseudo-labels`, `retrain`) and read by the review package to sort images."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from wsss.atomic import atomic_path

COLUMNS = ("id", "score", "confidence", "defect_fraction", "ignore_fraction")


def write_confidence(path: Path, rows: list[dict[str, Any]], scores: dict[str, float]) -> None:
    """``confidence.csv`` (atomically): ``rows`` from :func:`wsss.refine.pseudo.label_all` in the given order, each
    with its sample score from ``scores``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            r = {**r, "score": scores[r["id"]]}
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
