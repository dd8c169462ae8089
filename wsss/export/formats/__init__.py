"""Review formats: one small module per annotation tool on the :class:`ReviewFormat` base, registered by name.

A format writes a review package's masks in its tool's import layout (:meth:`ReviewFormat.write`) and reads the
corrected masks back from that tool's export (:meth:`ReviewFormat.read`). Masks are ``uint8`` label images:
0 background, k class k (1..K), 255 uncertain (the pseudo-masks' ignore pixels, exported as a label of their own
so a reviewer sees and resolves them; left unresolved they stay ignored in training).

A reader trusts nothing its file declares: the structure is checked field by field before use, and every size a
file declares (a COCO image's height and width, a brush RLE's, a PNG's header) is checked against the run's image
of that id (:class:`ImageSizes`) before anything of that size is allocated or decoded. Each problem is a DataError
naming the file and what to fix, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from wsss.data.images import image_size
from wsss.errors import ConfigError, DataError, WsssError, raise_all
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


MAX_MASK_PIXELS = 20_000_000  # without the run's image sizes: prepare's default megapixel cap


@dataclass
class ImageSizes:
    """The (H, W) of the run's images by id (read from their headers on first use): what every size an import file
    declares must equal before a mask of that size is allocated. Without ``paths`` (a reader used on its own) any id
    is accepted at up to :data:`MAX_MASK_PIXELS`."""

    paths: Mapping[str, Path] | None = None
    _known: dict[str, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)

    def problem(self, sid: str, height: object, width: object) -> str | None:
        """Why a mask of ``height`` x ``width`` for image ``sid`` cannot be allocated, or None when it can."""
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (height, width)):
            return f"height and width must be whole numbers, got {height!r} x {width!r}"
        if height < 1 or width < 1:  # type: ignore[operator]
            return f"size {height}x{width} is not positive"
        if self.paths is None:
            if height * width > MAX_MASK_PIXELS:  # type: ignore[operator]
                return f"size {height}x{width} is over {MAX_MASK_PIXELS} pixels"
            return None
        if sid not in self.paths:
            return f"not in the run's index: {sid}"
        if sid not in self._known:
            try:
                self._known[sid] = image_size(self.paths[sid])
            except DataError as e:
                return f"its image cannot be read ({e.what}): restore the run's images"
        want = self._known[sid]
        if (height, width) != want:
            return f"declared size {height}x{width} (HxW) is not its image's {want[0]}x{want[1]}"
        return None


class ReviewFormat:
    """Base of the review formats: ``name``, ``default_file`` inside the package, and the two hooks (``write``;
    ``read`` or ``read_all``)."""

    name = ""
    default_file = ""

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:
        """Write the items' masks under ``package`` in this format; returns the file or folder written."""
        raise NotImplementedError

    def read(self, path: Path, labels: LabelMap, sizes: ImageSizes | None = None) -> dict[str, np.ndarray]:
        """Masks by image id from this format's file at ``path`` (a DataError naming it when malformed); every
        declared size is checked against ``sizes`` before it is allocated. A format overrides this or
        :meth:`read_all` (one that can list a problem per mask)."""
        masks, errors = self.read_all(path, labels, sizes=sizes)
        raise_all(errors, f"{path}: masks that cannot be read")
        return masks

    def read_all(
        self, path: Path, labels: LabelMap, mask_format: str = "auto", sizes: ImageSizes | None = None
    ) -> tuple[dict[str, np.ndarray], list[WsssError]]:
        """The masks that could be read and a problem for each one that could not, so that an import lists every
        bad mask at once (a problem of the whole file still raises). ``mask_format`` (``--mask-format``) says what
        raw mask values mean; only a folder of PNGs has raw values, other formats name their labels."""
        self.labels_only(mask_format)
        return self.read(path, labels, sizes), []

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

    for v in values:
        n, comp = cv2.connectedComponents((mask == v).astype(np.uint8), connectivity=8)
        for i in range(1, n):
            yield v, comp == i
