"""The score table that crosses stages: ``scores.csv``, one row per image with its sample score(s).

The `cam` stage writes the classifier's (id, score = max over classes, IEM rounds used, raw CAM peak), the
segmenters theirs, the `anomaly` stage its anomaly scores; labelling, the segmenter's teacher, evaluation and the
review tools read them. With several classes each row also holds ``score_<class>``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsss.atomic import atomic_path
from wsss.errors import DataError

SCORES_FILE = "scores.csv"
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
    columns = class_score_columns(classes) or ["score"]
    per_column = [read_scores(path, c) for c in columns]
    return {sid: np.array([col[sid] for col in per_column], np.float32) for sid in per_column[0]}


def _open_table(path: Path) -> tuple[Any, list[str]]:
    """A CSV reader over a scores file and its header's column names (stripped); a DataError naming a missing or
    non-text file."""
    if not path.is_file():
        raise DataError(path, "scores file not found", "pass the scores.csv written by the cam or segmenter stage")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(path, "not a text (UTF-8) CSV file", "pass the scores.csv written by a stage") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    return reader, [h.strip() for h in next(reader, [])]


def score_columns(path: Path) -> list[str]:
    """The column names a scores CSV's header gives, read as :func:`read_scores` reads them."""
    return _open_table(Path(path))[1]


def read_scores(path: Path, column: str = "score") -> dict[str, float]:
    """Sample scores from a CSV with ``id`` and ``column`` (default ``score``) columns (other columns are ignored)."""
    path = Path(path)
    reader, header = _open_table(path)
    scores: dict[str, float] = {}
    missing = [c for c in ("id", column) if c not in header]
    if missing:
        raise DataError(
            f"{path}:1",
            f"missing column(s) {', '.join(missing)} in header {header}",
            f"the first line must name the columns, including id and {column}",
        )
    i_id, i_score = header.index("id"), header.index(column)
    for row in reader:
        line = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(i_id, i_score):
            raise DataError(line, f"{len(row)} values, header has {len(header)}", "give every row all columns")
        sid, cell = row[i_id].strip(), row[i_score].strip()
        if not sid:
            raise DataError(line, "empty id", "give every row the image id used in the index")
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(line, f"score {cell!r} of {sid!r} is not a finite number", "write a number such as 0.73")
        if sid in scores:
            raise DataError(line, f"duplicate id {sid!r}", "keep one score per image")
        scores[sid] = value
    return scores
