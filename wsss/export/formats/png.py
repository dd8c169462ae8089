"""Plain mask PNGs: ``masks/<id>.png`` (the label values themselves) and ``masks/labelmap.txt`` (value name)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from wsss.atomic import atomic_write_text
from wsss.errors import DataError
from wsss.export.formats import LabelMap, ReviewFormat, ReviewItem

FIX = "give 8-bit single-channel PNGs whose values are the label values of labelmap.txt"


class PngFormat(ReviewFormat):
    name = "png"
    default_file = "masks"

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:
        from wsss.refine.pseudo import write_mask

        out = package / self.default_file
        for item in items:
            write_mask(out / f"{item.id}.png", item.load_mask())
        atomic_write_text(out / "labelmap.txt", "".join(f"{v} {n}\n" for v, n, _ in labels.entries()))
        return out

    def read(self, path: Path, labels: LabelMap) -> dict[str, np.ndarray]:
        if not path.is_dir():
            raise DataError(path, "not a folder of mask PNGs", "pass the masks/ folder (one <id>.png per image)")
        masks = {}
        for f in sorted(path.glob("*.png")):
            mask = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
                raise DataError(f, "not an 8-bit single-channel PNG", FIX)
            masks[f.stem] = mask
        if not masks:
            raise DataError(path, "no .png masks in this folder", FIX)
        return masks


FORMAT = PngFormat()
