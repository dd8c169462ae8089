"""``kind: mvtec``: MVTec AD in its official layout.

Layout: ``root/<category>/train/good/*.png``, ``root/<category>/test/<defect type>/*.png`` and masks
``root/<category>/ground_truth/<defect type>/<stem>_mask.png``. ``root`` may also be one category folder
(detected by its ``train/`` and ``test/``). ``good`` is defect-free; the defect type is the class, prefixed with
the category (``bottle.broken_large``) when several categories are read, so equal type names (``crack``) of
different objects stay apart. ``dataset.categories`` picks categories. ``Sample.split`` is the official split.
Ids: ``<category>__<split>__<type>__<stem>``.
"""

from __future__ import annotations

from wsss.data.adapters._shared import is_ok_name, list_images, select, subfolders
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.errors import DataError

SPLITS = ("train", "test")


@register
class MvtecAdapter(DatasetAdapter):
    kind = "mvtec"

    def scan(self) -> list[Sample]:
        self.require_root()
        if all((self.root / s).is_dir() for s in SPLITS):
            base, categories = self.root.parent, [self.root.name]
        else:
            base = self.root
            categories = [p.name for p in subfolders(self.root) if all((p / s).is_dir() for s in SPLITS)]
        if not categories:
            raise DataError(
                self.root,
                "no <category>/train and <category>/test folders found",
                "set dataset.root to the MVTec AD folder (holding bottle, cable, ...) or one category",
            )
        categories = select(self, categories, "MVTec categories")
        samples = []
        for cat in categories:
            for split in SPLITS:
                for folder in subfolders(base / cat / split):
                    ok = is_ok_name(self, folder.name)
                    cls = folder.name if len(categories) == 1 else f"{cat}.{folder.name}"
                    for p in list_images(self, folder):
                        mask = base / cat / "ground_truth" / folder.name / f"{p.stem}_mask.png"
                        samples.append(
                            Sample(
                                id=make_id(p.relative_to(base)),
                                path=p,
                                labels=() if ok else (cls,),
                                mask=mask if mask.is_file() else None,
                                split=split,
                            )
                        )
        return samples
