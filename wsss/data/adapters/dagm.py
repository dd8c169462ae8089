"""``kind: dagm``: DAGM 2007 (weakly supervised learning for industrial optical inspection).

Layout: ``root/Class<N>/{Train,Test}/<NNNN>.PNG`` with ``Label/Labels.txt`` (one row per image: index, label 0/1,
image file, 0, label file; other lines such as the header are skipped; tabs or spaces) and masks
``Label/<NNNN>_label.PNG``. ``root`` may also be one ``Class<N>`` folder. Images missing from Labels.txt (or no
Labels.txt at all) are defective iff their mask file exists.

Each DAGM class is its own texture, so a defective image's class is its texture, ``Class<N>``: a run over several
textures stays multi-class (set ``dataset.binary: true`` for one ``defect`` class). ``dataset.categories`` picks
textures (``Class3`` or ``3``). ``Sample.split`` is the official Train/Test split. Ids: ``Class<N>__Train__NNNN``.
"""

from __future__ import annotations

import re
from pathlib import Path

from wsss.data.adapters._shared import list_images, select, subfolders
from wsss.data.base import DatasetAdapter, Sample, make_id, register
from wsss.errors import DataError

SPLITS = {"Train": "train", "Test": "test"}


def read_labels(path: Path) -> dict[str, tuple[bool, str | None]]:
    """Labels.txt as ``{image file (lower case): (defective, label file or None)}``."""
    rows = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        tok = line.split()
        if len(tok) < 3 or not tok[0].isdigit():
            continue
        if tok[1] not in ("0", "1"):
            raise DataError(
                f"{path}, line {n}", f"label {tok[1]!r} is not 0 or 1", "fix the row: index, 0|1, image, ..."
            )
        rows[tok[2].lower()] = (tok[1] == "1", tok[4] if len(tok) > 4 and tok[4] != "0" else None)
    return rows


def _key(name: str) -> str:
    return name.casefold() if not name.isdigit() else f"class{name}"


@register
class DagmAdapter(DatasetAdapter):
    kind = "dagm"

    def scan(self) -> list[Sample]:
        self.require_root()
        if any((self.root / s).is_dir() for s in SPLITS):
            base, classes = self.root.parent, [self.root.name]
        else:
            base = self.root
            classes = [p.name for p in subfolders(self.root) if re.fullmatch(r"Class\d+", p.name, flags=re.IGNORECASE)]
        if not classes:
            raise DataError(
                self.root,
                "no Class<N>/Train or Class<N>/Test folders found",
                "set dataset.root to the DAGM folder holding Class1, Class2, ...",
            )
        samples = []
        for cls in select(self, classes, "DAGM classes", key=_key):
            for sub, split in SPLITS.items():
                folder = base / cls / sub
                if not folder.is_dir():
                    continue
                labels_txt = folder / "Label" / "Labels.txt"
                rows = read_labels(labels_txt) if labels_txt.is_file() else {}
                for p in list_images(self, folder, recursive=False):
                    default = folder / "Label" / f"{p.stem}_label{p.suffix}"
                    defective, label_file = rows.get(p.name.lower(), (default.is_file(), None))
                    mask = folder / "Label" / label_file if label_file else default
                    samples.append(
                        Sample(
                            id=make_id(p.relative_to(base)),
                            path=p,
                            labels=(cls,) if defective else (),
                            mask=mask if defective and mask.is_file() else None,
                            split=split,
                        )
                    )
        return samples
