"""Plain mask PNGs: ``masks/<id>.png`` (the label values themselves) and ``masks/labelmap.txt`` (value name).

Reading accepts what tools write too: a folder's ``labelmap.txt`` says what its values mean, and a folder without
one is read by :func:`wsss.mask_format.mask_encoding` (binary 0/255 masks of a one-class run: 255 = defect, with a
note; an ambiguous folder is refused)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import cv2
import numpy as np

from wsss.errors import DataError
from wsss.export.formats import LabelMap, ReviewFormat, ReviewItem
from wsss.mask_format import mask_encoding, write_labelmap

FIX = "give 8-bit single-channel PNGs: the label values of labelmap.txt, or binary 0/255 masks"


class PngFormat(ReviewFormat):
    name = "png"
    default_file = "masks"

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:
        from wsss.refine.pseudo import write_mask

        out = package / self.default_file
        for item in items:
            write_mask(out / f"{item.id}.png", item.load_mask())
        write_labelmap(out, labels.classes)
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
        encoding = mask_encoding(path, labels.classes, masks.values(), check_values=False)
        if encoding.note:
            click.echo(f"note: {encoding.note}", err=True)
        return {k: encoding.to_labels(m) for k, m in masks.items()}


FORMAT = PngFormat()
