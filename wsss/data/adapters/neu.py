"""``kind: neu``: NEU surface defect database (hot-rolled steel strip), two layouts, detected automatically.

- NEU-Seg: ``root/images/{training,test}/*.jpg`` with masks ``root/annotations/{training,test}/<stem>.png``
  (0 background, 1 inclusion, 2 patches, 3 scratches). The labels are the classes present in the mask; an image
  whose mask is empty is defect-free. ``Sample.split`` is the official split (``training`` -> ``train``).
- NEU-CLS (any other folder): images anywhere below ``root`` named ``<prefix>_<n>.<ext>``, the class from the
  prefix: ``Cr`` crazing, ``In`` inclusion, ``Pa`` patches, ``PS`` pitted_surface, ``RS`` rolled-in_scale, ``Sc``
  scratches (the full names, as in NEU-DET's ``crazing_1.jpg``, are accepted too). This layout has no defect-free
  images and no masks; validation only warns about the former.

Ids: the path relative to ``root`` (``images__training__000001``, ``Cr_1``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsss.data.adapters._shared import list_images, map_files
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.data.images import read_mask_values
from wsss.errors import DataError, raise_all

CLS_PREFIXES = {
    "cr": "crazing",
    "in": "inclusion",
    "pa": "patches",
    "ps": "pitted_surface",
    "rs": "rolled-in_scale",
    "sc": "scratches",
}
SEG_VALUES = {1: "inclusion", 2: "patches", 3: "scratches"}
SEG_SPLITS = {"training": "train", "test": "test"}


def seg_labels(mask: Path) -> tuple[str, ...]:
    values = {int(v) for v in np.unique(read_mask_values(mask))} - {0}
    if values - set(SEG_VALUES):
        raise DataError(
            mask,
            f"unexpected mask values {sorted(values - set(SEG_VALUES))}",
            "NEU-Seg masks hold 0 (background), 1 inclusion, 2 patches, 3 scratches",
        )
    return tuple(SEG_VALUES[v] for v in sorted(values))


@register
class NeuAdapter(DatasetAdapter):
    kind = "neu"

    def scan(self) -> list[Sample]:
        self.require_root()
        if any((self.root / "images" / s).is_dir() for s in SEG_SPLITS):
            return self.scan_seg()
        return self.scan_cls()

    def scan_seg(self) -> list[Sample]:
        pairs = [
            (p, self.root / "annotations" / sub / f"{p.stem}.png", split)
            for sub, split in SEG_SPLITS.items()
            if (self.root / "images" / sub).is_dir()
            for p in list_images(self, self.root / "images" / sub)
        ]
        missing = [
            DataError(p, f"no mask {m.relative_to(self.root)}", "NEU-Seg labels come from the masks: restore it")
            for p, m, _ in pairs
            if not m.is_file()
        ]
        raise_all(missing, "NEU-Seg images without masks")
        labels = map_files(seg_labels, [m for _, m, _ in pairs], "bad NEU-Seg masks")
        return [
            Sample(id=make_id(p.relative_to(self.root)), path=p, labels=lab, mask=m, split=split)
            for (p, m, split), lab in zip(pairs, labels)
        ]

    def scan_cls(self) -> list[Sample]:
        names = {*CLS_PREFIXES.values()}
        samples, errors = [], []
        for p in list_images(self, self.root):
            prefix = p.stem.rsplit("_", 1)[0].casefold()
            cls = CLS_PREFIXES.get(prefix) or (prefix if prefix in names else None)
            if cls is None:
                errors.append(
                    DataError(
                        p,
                        f"unknown NEU class prefix {prefix!r}",
                        f"name files <prefix>_<n> with a prefix in {', '.join(CLS_PREFIXES)}",
                    )
                )
                continue
            samples.append(Sample(id=make_id(p.relative_to(self.root)), path=p, labels=(cls,)))
        raise_all(errors, f"NEU-CLS folder {self.root} has unrecognised files")
        return samples
