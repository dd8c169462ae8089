"""One process per stage of a run folder: an exclusive ``flock`` on ``RUN/.locks/<stage>.lock`` while the stage runs.
The lock goes with its process however that ends, so a killed run never leaves a stale lock behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsss.errors import StageError


def _lock_path(run_dir: Path, stage: str) -> Path:
    return run_dir / ".locks" / f"{stage}.lock"


def _try_lock(f: Any) -> bool | None:
    """Take the exclusive lock of open file ``f`` without waiting: False when another process holds it, None where
    the platform has no ``flock``. The lock goes when ``f`` is closed, or with its process, however that ends."""
    # POSIX only: elsewhere no lock is taken
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def stage_lock(run_dir: Path, stage: str) -> Iterator[None]:
    """Refuse to run one stage of one run folder twice at the same time."""
    path = _lock_path(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        if _try_lock(f) is False:
            raise StageError(
                run_dir / stage,
                "another wsss process is running this stage now",
                "wait for it to finish, or use another --run-dir",
            )
        yield


def lock_held(run_dir: Path, stage: str) -> bool:
    """Whether a live process holds ``stage``'s lock now (without flock: assumed, so the manifest is trusted)."""
    path = _lock_path(run_dir, stage)
    if not path.is_file():
        return False
    with open(path) as f:
        return _try_lock(f) is not True
