"""``kind: ksdd``: KolektorSDD (Tabernik et al. 2019): 50 commutator items x 8 surface images.

Layout: ``root/kosNN/PartK.jpg`` with the mask ``PartK_label.png`` (or the original ``.bmp``) beside it.
The image-level label is derived from the mask: class ``defect`` iff the mask has any pixel >= the threshold (1).
Groups are items, so all parts of one item share a split; kos26 duplicates kos01 and kos34 duplicates kos27
(byte-identical images), so they are grouped as ``kos01`` and ``kos27``. Ids: ``kosNN_PartK``.
"""

from __future__ import annotations

import re
from pathlib import Path

from wsss.data.adapters._shared import list_images, map_files
from wsss.data.base import DatasetAdapter, Sample, register
from wsss.data.images import read_mask
from wsss.errors import DataError

DUPLICATE_ITEMS = {"kos26": "kos01", "kos34": "kos27"}
MASK_SUFFIX = "_label"


@register
class KsddAdapter(DatasetAdapter):
    kind = "ksdd"
    labels_from_masks = True

    def find_mask(self, image: Path) -> Path:
        for ext in (".png", ".bmp", *self.extensions):
            cand = image.with_name(f"{image.stem}{MASK_SUFFIX}{ext}")
            if cand.is_file():
                return cand
        raise DataError(
            image,
            f"no mask {image.stem}{MASK_SUFFIX}.png beside the image",
            "KSDD labels come from the masks: restore the mask file",
        )

    def scan(self) -> list[Sample]:
        self.require_root()
        items = sorted(p for p in self.root.iterdir() if p.is_dir() and re.fullmatch(r"kos\d+", p.name))
        if not items:
            raise DataError(
                self.root, "no kosNN item folders found", "set dataset.root to the folder holding kos01..kos50"
            )
        images = [
            p for item in items for p in list_images(self, item, recursive=False) if not p.stem.endswith(MASK_SUFFIX)
        ]
        masks = map_files(self.find_mask, images, "KSDD images without masks")
        threshold = self.threshold()
        defective = map_files(lambda m: bool(read_mask(m, threshold).any()), masks, "unreadable KSDD masks")
        return [
            Sample(
                id=f"{p.parent.name}_{p.stem}",
                path=p,
                labels=("defect",) if d else (),
                mask=m,
                group=DUPLICATE_ITEMS.get(p.parent.name, p.parent.name),
            )
            for p, m, d in zip(images, masks, defective)
        ]
