"""Helpers shared by the adapters: listing images, ok-name matching, category filters, reading masks in bulk."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from wsss.data.base import DatasetAdapter
from wsss.errors import DataError, WsssError, raise_all
from wsss.parallel import pool_size

T = TypeVar("T")


def list_images(adapter: DatasetAdapter, folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by ``dataset.extensions``), sorted; hidden files and folders skipped."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    rel = (p.relative_to(folder) for p in found)
    return sorted(
        folder / r for r in rel if not any(part.startswith(".") for part in r.parts) and adapter.is_image(folder / r)
    )


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_ok_name(adapter: DatasetAdapter, name: str) -> bool:
    """True when ``name`` is one of ``dataset.ok_names`` (case-insensitive): a defect-free class."""
    return name.casefold() in {n.casefold() for n in adapter.cfg.ok_names}


def select(
    adapter: DatasetAdapter, available: list[str], what: str, key: Callable[[str], str] = str.casefold
) -> list[str]:
    """Filter ``available`` by ``dataset.categories`` (compared through ``key``); unknown names are errors."""
    if not adapter.cfg.categories:
        return available
    by_key = {key(a): a for a in available}
    unknown = [c for c in adapter.cfg.categories if key(c) not in by_key]
    if unknown:
        raise DataError(
            "dataset.categories",
            f"unknown {what} {unknown} in {adapter.root}",
            f"available: {', '.join(available) or 'none'}",
        )
    return [by_key[key(c)] for c in adapter.cfg.categories]


def map_files(fn: Callable[[Path], T], paths: Iterable[Path], summary: str) -> list[T]:
    """``[fn(p) for p in paths]`` on threads; every :class:`WsssError` raised is collected and raised together."""

    def safe(p: Path) -> T | WsssError:
        try:
            return fn(p)
        except WsssError as e:
            return e

    with ThreadPoolExecutor(max_workers=pool_size(0, cap=16)) as ex:
        results = list(ex.map(safe, paths))
    raise_all([r for r in results if isinstance(r, WsssError)], summary)
    return results  # type: ignore[return-value]
