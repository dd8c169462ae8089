"""Content hashes: a file's sha256, read in 1 MiB chunks (weights files, stage outputs, review packages); a stage's
manifest, and the check that a stage's output file is still the one its manifest recorded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"  # a finished stage's record, beside its outputs (wsss/runs.py)


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """A stage folder's manifest, or None where it has none (or one that is unreadable, not UTF-8 or not JSON: as
    good as none)."""
    p = Path(stage_dir) / MANIFEST
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What a manifest records of one output file: its sha256, size and modification time."""
    st = path.stat()
    return {"sha256": file_sha256(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def file_changed(path: Path, record: dict[str, Any], full: bool = False) -> str | None:
    """Why ``path`` is no longer the file ``record`` describes, or None when it still is.

    The size is always compared. The sha256 is computed when ``full``, or when the recorded modification time differs
    from the file's (a file rewritten in place at the same size); a record without a time (an older wsss) is
    checked by size alone unless ``full``.
    """
    try:
        st = path.stat()
    except OSError:
        return "the file is missing"
    if st.st_size != record.get("size"):
        return f"{st.st_size} bytes where the manifest recorded {record.get('size')}"
    if not full and record.get("mtime_ns") in (None, st.st_mtime_ns):
        return None
    if file_sha256(path) != record.get("sha256"):
        return "its sha256 differs from the one the manifest recorded"
    return None


def recorded_by(path: Path, levels: int = 4) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """The finished stage folder whose manifest records ``path`` (looking up to ``levels`` folders up), that
    manifest and the file's record; None when no manifest records it (a file from outside a run, or a stage still
    running)."""
    path = Path(os.path.abspath(path))
    for folder in list(path.parents)[:levels]:
        if not (folder / MANIFEST).is_file():
            continue
        data = read_manifest(folder)
        if data is None:
            return None
        record = (data.get("files") or {}).get(path.relative_to(folder).as_posix())
        return (folder, data, record) if isinstance(record, dict) and data.get("status") == "done" else None
    return None
