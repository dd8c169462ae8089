"""Review formats: one small module per annotation tool on the :class:`ReviewFormat` base, registered by name.

A format writes a review package's masks in its tool's import layout (:meth:`ReviewFormat.write`) and reads the
corrected masks back from that tool's export (:meth:`ReviewFormat.read`). Masks are ``uint8`` label images:
0 background, k class k (1..K), 255 uncertain (the pseudo-masks' ignore pixels, exported as a label of their own
so a reviewer sees and resolves them; left unresolved they stay ignored in training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.errors import ConfigError, WsssError, raise_all
from wsss.labels import LabelMap
from wsss.registry import Registry


@dataclass(frozen=True)
class ReviewItem:
    """One image of a review package; ``load_mask`` reads its mask when a format needs it (memory stays flat)."""

    id: str
    image_name: str  # the image's path inside the package, e.g. images/<id>.png
    height: int
    width: int
    load_mask: Callable[[], np.ndarray]
    score: float = float("nan")
    confidence: float = float("nan")


class ReviewFormat:
    """Base of the review formats: ``name``, ``default_file`` inside the package, and the two hooks (``write``;
    ``read`` or ``read_all``)."""

    name = ""
    default_file = ""

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:
        """Write the items' masks under ``package`` in this format; returns the file or folder written."""
        raise NotImplementedError

    def read(self, path: Path, labels: LabelMap) -> dict[str, np.ndarray]:
        """Masks by image id from this format's file at ``path`` (a DataError naming it when malformed). A format
        overrides this or :meth:`read_all` (one that can list a problem per mask)."""
        masks, errors = self.read_all(path, labels)
        raise_all(errors, f"{path}: masks that cannot be read")
        return masks

    def read_all(
        self, path: Path, labels: LabelMap, mask_format: str = "auto"
    ) -> tuple[dict[str, np.ndarray], list[WsssError]]:
        """The masks that could be read and a problem for each one that could not, so that an import lists every
        bad mask at once (a problem of the whole file still raises). ``mask_format`` (``--mask-format``) says what
        raw mask values mean; only a folder of PNGs has raw values, other formats name their labels."""
        self.labels_only(mask_format)
        return self.read(path, labels), []

    def labels_only(self, mask_format: str) -> None:
        """Refuse ``--mask-format`` other than auto for a format whose file names its labels."""
        if mask_format != "auto":
            raise ConfigError(
                f"--mask-format {mask_format}",
                f"a {self.name} file names its labels itself; --mask-format is for --format png (a folder of PNGs)",
                "leave --mask-format out",
            )


FORMAT_MODULES = ("png", "coco", "cvat", "labelstudio")  # each registers its format when imported
FORMATS: Registry[ReviewFormat] = Registry(
    "review format", "formats", [f"wsss.export.formats.{m}" for m in FORMAT_MODULES]
)


def register_format(fmt: ReviewFormat) -> ReviewFormat:
    return FORMATS.register(fmt.name, fmt)


def get_format(name: str) -> ReviewFormat:
    return FORMATS.lookup(name)


def components(mask: np.ndarray, values: Iterable[int]) -> Iterable[tuple[int, np.ndarray]]:
    """``(value, bool region)`` per 8-connected component of each of ``values`` in ``mask`` (instances)."""
    import cv2

    for v in values:
        n, comp = cv2.connectedComponents((mask == v).astype(np.uint8), connectivity=8)
        for i in range(1, n):
            yield v, comp == i
