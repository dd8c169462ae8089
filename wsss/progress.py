"""Progress bars for every loop over images or epochs; silent when stderr is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """True on a terminal; ``WSSS_PROGRESS=1`` forces bars on, ``WSSS_PROGRESS=0`` off."""
    forced = os.environ.get("WSSS_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar written to stderr, disabled off-terminal."""
    return iter(
        tqdm(
            iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(), leave=False, dynamic_ncols=True
        )
    )
