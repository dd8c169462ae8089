"""Per-image progress logs that let a killed stage resume where it stopped.

A stage that works image by image appends one JSON row per finished image to ``rows.jsonl`` in its partial
directory (flushed at once), next to that image's artifact. A re-run reads the log back and skips every image whose
row *and* artifact both exist; a line torn by a kill mid-write is ignored, so that image is simply redone. The
stage deletes the log when it finishes.

Under torchrun each rank appends to its own ``rows.<rank>.jsonl`` (:func:`log_name`), and :meth:`RowLog.done_in`
reads every log of the folder, so a re-run with any number of ranks (one included) redoes exactly what is missing.
:class:`ImagePass` is that protocol for a stage: its share of the images, the log, the barriers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from wsss import distributed as dist
from wsss.progress import progress

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


class ImagePass:
    """One resumable pass of a stage over its images, shared among torchrun's ranks.

    On creation it reads what earlier attempts finished (:meth:`RowLog.done_in`) and gives this rank every
    world-th image still to do (:attr:`todo`). Inside ``with``, the stage writes each image's artifact and then
    logs its row (:meth:`record`); on leaving, every rank waits for the others and :attr:`done` holds every image's row,
    whoever did it. :meth:`finish` deletes the logs once the stage's outputs are complete.

    ``shared=False`` for a stage that rank 0 runs alone (one not registered ``distributed``): it takes every image
    and waits for no other rank.
    """

    def __init__(
        self,
        out: Path,
        rows: Sequence[Any],
        artifact: Callable[[str], Path],
        name: str,
        echo: Callable[[str], None] = print,
        shared: bool = True,
    ):
        self.out, self.artifact, self.name, self.shared = Path(out), artifact, name, shared
        self.rank, self.world = (dist.rank(), dist.world_size()) if shared else (0, 1)
        self.done = RowLog.done_in(self.out, artifact)
        self.todo = [r for r in rows if r.id not in self.done][self.rank :: self.world]
        self.seconds = 0.0
        self._barrier()  # every rank has its share of the same list before any rank logs a new image
        if self.done and self.rank == 0:
            echo(f"{name}: resuming, {len(self.done)} of {len(rows)} images already done")
        self._log: RowLog | None = None

    def batches(self, size: int) -> Iterator[list[Any]]:
        """This rank's images still to do, ``size`` at a time, with a progress bar."""
        for start in progress(range(0, len(self.todo), size), desc=self.name, unit="batch"):
            yield self.todo[start : start + size]

    def record(self, row: dict[str, Any]) -> None:
        """Log one finished image (its artifact written)."""
        assert self._log is not None, "record() inside `with ImagePass(...)`"
        self.done[str(row["id"])] = row
        self._log.append(row)

    @property
    def images_per_s(self) -> float:
        """Throughput of this pass, all ranks together."""
        return len(self.todo) * self.world / max(self.seconds, 1e-9)

    def __enter__(self) -> ImagePass:
        self._log = RowLog(self.out / log_name(self.rank, self.world)).__enter__()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._log is not None
        self._log.__exit__(exc_type, exc, tb)
        self._log = None
        self.seconds = time.perf_counter() - self._t0
        if exc_type is None and self.world > 1:  # the other ranks' rows are in their logs
            self._barrier()  # every rank's images are written and logged
            self.done = RowLog.done_in(self.out, self.artifact)
            self._barrier()  # every rank has read every log before any rank's finish() deletes them

    def _barrier(self) -> None:
        if self.shared:
            dist.barrier()

    def finish(self) -> None:
        """Delete the logs: the stage's outputs are complete."""
        RowLog.remove_all(self.out)
