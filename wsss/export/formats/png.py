"""Plain mask PNGs: ``masks/<id>.png`` (the label values themselves) and ``masks/labelmap.txt`` (value name).

Reading accepts what tools write too: a folder's ``labelmap.txt`` says what its values mean, and a folder without
one is read by :func:`wsss.mask_format.mask_encoding` (binary 0/255 masks of a one-class run: 255 = defect, with a
note; an ambiguous folder is refused)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from wsss.artifacts.masks import write_mask
from wsss.errors import DataError, WsssError
from wsss.export.formats import ImageSizes, ReviewFormat, ReviewItem, register_format
from wsss.labels import LabelMap
from wsss.mask_format import mask_encoding, read_mask_png, write_labelmap

FIX = "give 8-bit single-channel PNGs: the label values of labelmap.txt, or binary 0/255 masks"


class PngFormat(ReviewFormat):
    name = "png"
    default_file = "masks"

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:

        out = package / self.default_file
        for item in items:
            write_mask(out / f"{item.id}.png", item.load_mask())
        write_labelmap(out, labels.classes)
        return out

    def read_all(
        self, path: Path, labels: LabelMap, mask_format: str = "auto", sizes: ImageSizes | None = None
    ) -> tuple[dict[str, np.ndarray], list[WsssError]]:
        """Every readable ``<id>.png`` (decoded with PIL: a corrupt file is one listed problem, never a decoder
        message), read as ``mask_format`` says (:func:`wsss.mask_format.mask_encoding`)."""
        if not path.is_dir():
            raise DataError(path, "not a folder of mask PNGs", "pass the masks/ folder (one <id>.png per image)")
        files = sorted(path.glob("*.png"))
        if not files:
            raise DataError(path, "no .png masks in this folder", FIX)
        masks: dict[str, np.ndarray] = {}
        errors: list[WsssError] = []
        sizes = sizes or ImageSizes()
        for f in files:
            try:
                masks[f.stem] = read_mask_png(f, size_check=lambda h, w, sid=f.stem: sizes.problem(sid, h, w))
            except DataError as e:
                errors.append(DataError(e.where, e.what, FIX))
        try:
            encoding = mask_encoding(path, labels.classes, masks.values(), mask_format, check_values=False)
        except DataError as e:
            return masks, [*errors, e]
        if encoding.note:
            click.echo(f"note: {encoding.note}", err=True)
        return {k: encoding.to_labels(m) for k, m in masks.items()}, errors


FORMAT = register_format(PngFormat())
