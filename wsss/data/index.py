"""The dataset index written by `prepare`: one row per image.

``index.csv`` columns: ``id, path, labels, split, group, fold, mask``. ``labels`` is a ``;``-joined list of
defect classes (empty = defect-free). ``path`` and ``mask`` are absolute, or relative to the index file's
folder for data generated inside the run (the synthetic demo set). ``dataset.json`` beside it records the
class list and how ground-truth masks are binarised.

Ground-truth masks are for evaluation only, and that is structural: :func:`read_train_index` returns
:class:`TrainRow` objects, which have no mask field at all. Only evaluation code calls
:func:`read_eval_index`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.data.stats import SizeStats
from wsss.errors import DataError

COLUMNS = ("id", "path", "labels", "split", "group", "fold", "mask")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainRow:
    """What training and pseudo-labelling may see of an image: no ground-truth mask."""

    id: str
    path: Path
    labels: tuple[str, ...]
    split: str
    group: str
    fold: int

    @property
    def defective(self) -> bool:
        return bool(self.labels)


@dataclass(frozen=True)
class EvalRow(TrainRow):
    """An index row for evaluation: adds the ground-truth mask path (None when there is none)."""

    mask: Path | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Dataset-level facts saved as ``dataset.json`` beside the index."""

    kind: str
    classes: tuple[str, ...]
    mask_threshold: int  # a ground-truth pixel is defect iff its value >= mask_threshold
    channels: int = 1  # 1 for grayscale sets, 3 when any image is colour
    sizes: SizeStats | None = None  # the training images' sizes, what `auto` settings resolve from (wsss/auto.py)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "classes": list(self.classes),
            "mask_threshold": self.mask_threshold,
            "channels": self.channels,
            "train_sizes": self.sizes.to_json() if self.sizes else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> DatasetInfo:
        return cls(
            kind=d["kind"],
            classes=tuple(d["classes"]),
            mask_threshold=int(d["mask_threshold"]),
            channels=int(d.get("channels", 1)),
            sizes=SizeStats.from_json(d["train_sizes"]) if d.get("train_sizes") else None,
        )


def join_labels(labels: tuple[str, ...] | list[str]) -> str:
    return ";".join(labels)


def split_labels(text: str) -> tuple[str, ...]:
    return tuple(s for s in (p.strip() for p in text.split(";")) if s)


def write_index(path: Path, rows: list[EvalRow], relative_to: Path | None = None) -> None:
    """Write ``rows`` to ``path`` (CSV). Paths under ``relative_to`` are stored relative to it."""

    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        if relative_to is not None:
            try:
                return Path(p).resolve().relative_to(relative_to.resolve()).as_posix()
            except ValueError:
                pass
        return str(Path(p).resolve())

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.id, rel(r.path), join_labels(r.labels), r.split, r.group, r.fold, rel(r.mask)])


def _read_rows(path: Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path, "index file not found", "run `wsss run-stage prepare` first, or pass the index.csv it wrote"
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                path, f"not a wsss index: missing columns {missing}", "regenerate it with the prepare stage"
            )
        return list(reader)


def _resolve(base: Path, text: str) -> Path:
    p = Path(text)
    return p if p.is_absolute() else (base / p)


def _fields(d: dict[str, str], base: Path) -> dict[str, Any]:
    """The :class:`TrainRow` fields of one CSV row (everything but the mask)."""
    return {
        "id": d["id"],
        "path": _resolve(base, d["path"]),
        "labels": split_labels(d["labels"]),
        "split": d["split"],
        "group": d["group"],
        "fold": int(d["fold"]) if d["fold"] else -1,
    }


def read_train_index(path: Path, split: str | None = None) -> list[TrainRow]:
    """Rows for training/pseudo-labelling (no mask paths), optionally only one split."""
    base = Path(path).parent
    rows = [TrainRow(**_fields(d, base)) for d in _read_rows(path)]
    return [r for r in rows if split is None or r.split == split]


def read_eval_index(path: Path, split: str | None = None) -> list[EvalRow]:
    """Rows with ground-truth mask paths: for evaluation and export only, never for training."""
    base = Path(path).parent
    rows = [
        EvalRow(**_fields(d, base), mask=_resolve(base, d["mask"]) if d["mask"] else None) for d in _read_rows(path)
    ]
    return [r for r in rows if split is None or r.split == split]


def write_dataset_info(path: Path, info: DatasetInfo) -> None:
    path.write_text(json.dumps(info.to_json(), indent=2) + "\n")


def read_dataset_info(index_path: Path) -> DatasetInfo:
    """Read ``dataset.json`` from beside ``index_path``."""
    p = Path(index_path).parent / "dataset.json"
    if not p.is_file():
        raise DataError(p, "dataset.json not found beside the index", "regenerate the index with the prepare stage")
    return DatasetInfo.from_json(json.loads(p.read_text()))
