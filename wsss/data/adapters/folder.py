"""``kind: folder``: one sub-folder per class.

Layout::

    root/<class>/**/<image>             class folder named in dataset.ok_names (e.g. ok, good) = defect-free;
                                        any other folder name = that defect class
    root/masks/<class>/**/<stem>.png    optional ground-truth masks mirroring the class folders, or
    root/<class>/**/<stem>_mask.png     a mask beside its image (files ending in _mask are never images)

Ids are made from the path relative to ``root`` (``scratch/a/01.png`` -> ``scratch__a__01``).
"""

from __future__ import annotations

from pathlib import Path

from wsss.data.adapters._shared import is_ok_name, list_images, subfolders
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.errors import DataError, raise_all

MASKS_DIR = "masks"


@register
class FolderAdapter(DatasetAdapter):
    kind = "folder"

    def find_mask(self, image: Path) -> Path | None:
        rel = image.relative_to(self.root).with_suffix(".png")
        for cand in (self.root / MASKS_DIR / rel, image.with_name(f"{image.stem}_mask.png")):
            if cand.is_file():
                return cand
        return None

    def scan(self) -> list[Sample]:
        self.require_root()
        loose = [p for p in self.root.iterdir() if self.is_image(p)]
        if loose:
            raise DataError(
                self.root,
                f"{len(loose)} image(s) lie directly in the root, e.g. {loose[0].name}",
                "put each image into a class folder: root/<class>/ (e.g. root/ok/, root/scratch/)",
            )
        samples, errors = [], []
        for folder in subfolders(self.root):
            if folder.name.casefold() == MASKS_DIR:
                continue
            images = [p for p in list_images(self, folder) if not p.stem.endswith("_mask")]
            if not images:
                errors.append(
                    DataError(
                        folder,
                        "class folder has no images",
                        f"add images ({', '.join(self.extensions)}) or remove the folder",
                    )
                )
            labels = () if is_ok_name(self, folder.name) else (folder.name,)
            for p in images:
                rel = p.relative_to(self.root)
                samples.append(Sample(id=make_id(rel), path=p, labels=labels, mask=self.find_mask(p)))
        raise_all(errors, f"dataset folder {self.root} has problems")
        return samples
