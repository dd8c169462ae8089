"""Per-image progress logs that let a killed stage resume where it stopped.

A stage that works image by image appends one JSON row per finished image to ``rows.jsonl`` in its partial
directory (flushed at once), next to that image's artifact. A re-run reads the log back and skips every image whose
row *and* artifact both exist; a line torn by a kill mid-write is ignored, so that image is simply redone. The
stage deletes the log when it finishes.

Under torchrun each rank appends to its own ``rows.<rank>.jsonl`` (:func:`log_name`), and :meth:`RowLog.done_in`
reads every log of the folder, so a re-run with any number of ranks (one included) redoes exactly what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

ROWS_FILE = "rows.jsonl"


def log_name(rank: int = 0, world: int = 1) -> str:
    """This process's log file name: ``rows.jsonl`` alone, ``rows.<rank>.jsonl`` when ``world`` > 1."""
    return ROWS_FILE if world <= 1 else f"rows.{rank}.jsonl"


class RowLog:
    """Append-only ``rows.jsonl`` of one stage attempt; rows are dicts with at least an ``"id"``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f: Any = None

    @staticmethod
    def done_in(folder: Path, artifact: Callable[[str], Path]) -> dict[str, dict[str, Any]]:
        """Rows of earlier attempts whose ``artifact(id)`` file exists, by id, from every ``rows*.jsonl`` in ``folder``
        (the logs of all ranks of all attempts; a later row for an id wins)."""
        rows: dict[str, dict[str, Any]] = {}
        for path in sorted(Path(folder).glob("rows*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a kill: that image is redone
                    continue
                if isinstance(row, dict) and "id" in row and artifact(str(row["id"])).is_file():
                    rows[str(row["id"])] = row
        return rows

    @staticmethod
    def remove_all(folder: Path) -> None:
        """Delete every log of ``folder`` once the stage's outputs are complete."""
        for path in Path(folder).glob("rows*.jsonl"):
            path.unlink(missing_ok=True)

    def __enter__(self) -> RowLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.is_file() and self.path.stat().st_size > 0 and not self.path.read_bytes().endswith(b"\n")
        self._f = open(self.path, "a")
        if torn:  # end the line a kill cut short, so that the next row is a line of its own
            self._f.write("\n")
        return self

    def append(self, row: dict[str, Any]) -> None:
        """Record one finished image (call after its artifact is written)."""
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._f.close()
        self._f = None
