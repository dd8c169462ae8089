"""``kind: mtd``: Magnetic Tile Defect dataset (Huang et al. 2020), in its original layout.

Layout: ``root/MT_<Class>/Imgs/<name>.jpg`` with the mask ``<name>.png`` beside it. ``MT_Free`` is defect-free;
the other folders (Blowhole, Break, Crack, Fray, Uneven) are defect classes, named without the ``MT_`` prefix.
Labels come from the folder: the 4 MT_Uneven images whose masks are empty stay defective (the dataset's label).
Masks have soft edges, hence ``mask_threshold = 128``. Ids: ``<Class>__<name>``.
"""

from __future__ import annotations

from wsss.data.adapters._shared import list_images
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.errors import DataError

PREFIX, FREE = "MT_", "Free"


@register
class MtdAdapter(DatasetAdapter):
    kind = "mtd"
    mask_threshold = 128

    def scan(self) -> list[Sample]:
        self.require_root()
        folders = sorted(p for p in self.root.glob(f"{PREFIX}*") if (p / "Imgs").is_dir())
        if not folders:
            raise DataError(
                self.root,
                "no MT_<Class>/Imgs folders found",
                "set dataset.root to the folder holding MT_Blowhole, ..., MT_Free",
            )
        samples = []
        for folder in folders:
            cls = folder.name[len(PREFIX) :]
            labels = () if cls == FREE else (cls,)
            for p in list_images(self, folder / "Imgs", recursive=False):
                if p.suffix.lower() == ".png":  # the masks
                    continue
                mask = p.with_suffix(".png")
                samples.append(
                    Sample(id=make_id(f"{cls}/{p.stem}"), path=p, labels=labels, mask=mask if mask.is_file() else None)
                )
        return samples
