"""``kind: ksdd2``: KolektorSDD2 (Bozic et al. 2021) in its official layout.

Layout: ``root/train/<n>.png`` and ``root/test/<n>.png`` with masks ``<n>_GT.png`` beside them. Labels come from
the masks (class ``defect`` iff any pixel >= the threshold, 1); ``Sample.split`` is the official train/test split.
Ids: ``train__<n>`` / ``test__<n>``.
"""

from __future__ import annotations

from pathlib import Path

from wsss.data.adapters._shared import list_images, map_files
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.data.images import read_mask
from wsss.errors import DataError

SPLITS = ("train", "test")
MASK_SUFFIX = "_GT"


def _mask_of(image: Path) -> Path:
    mask = image.with_name(f"{image.stem}{MASK_SUFFIX}.png")
    if not mask.is_file():
        raise DataError(image, f"no mask {mask.name} beside the image", "KSDD2 labels come from the masks: restore it")
    return mask


@register
class Ksdd2Adapter(DatasetAdapter):
    kind = "ksdd2"
    labels_from_masks = True

    def scan(self) -> list[Sample]:
        self.require_root()
        if not any((self.root / s).is_dir() for s in SPLITS):
            raise DataError(
                self.root,
                "no train/ or test/ folder found",
                "set dataset.root to the KolektorSDD2 folder holding train/ and test/",
            )
        images = [
            p
            for s in SPLITS
            if (self.root / s).is_dir()
            for p in list_images(self, self.root / s, recursive=False)
            if not p.stem.endswith(MASK_SUFFIX)
        ]
        masks = map_files(_mask_of, images, "KSDD2 images without masks")
        threshold = self.threshold()
        defective = map_files(lambda m: bool(read_mask(m, threshold).any()), masks, "unreadable KSDD2 masks")
        return [
            Sample(
                id=make_id(p.relative_to(self.root)),
                path=p,
                labels=("defect",) if d else (),
                mask=m,
                split=p.parent.name,
            )
            for p, m, d in zip(images, masks, defective)
        ]
