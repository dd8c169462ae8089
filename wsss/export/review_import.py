"""`wsss import-review`: corrected masks from an annotation tool back into a run, as human supervision.

The file is decoded with its format's reader (:mod:`wsss.export.formats`), then every mask is checked before
anything is written: its id must be an indexed image, its size that image's size, its values labels of the run.
All problems are reported together and nothing is imported. Accepted masks go to ``<run>/reviewed/masks/<id>.png``
and ``<run>/reviewed/reviewed.json`` records, per id, the format and file it came from; a later import of the same
id replaces it. The folder is rebuilt beside the old one and swapped in, so it is never half-written.

`train-segmenter` trains on these masks instead of the pseudo-masks of the same images when
``segmenter.reviewed`` names the folder (human masks win).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.errors import ConfigError, DataError, ManyErrors, WsssError
from wsss.export.formats import LabelMap, get_format
from wsss.export.review import review_classes
from wsss.mask_format import write_labelmap

REVIEWED_DIR = "reviewed"
RECORD_FILE = "reviewed.json"


@dataclass
class ImportSummary:
    folder: Path
    imported: list[str]
    total: int  # reviewed images in the folder after this import


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.height, im.width


def check_masks(
    masks: dict[str, np.ndarray], sizes: dict[str, Path], labels: LabelMap, source: Path
) -> list[WsssError]:
    """Every problem of the decoded ``masks`` (unknown ids, wrong sizes, unknown labels), each naming the image."""
    errors: list[WsssError] = []
    unknown = sorted(set(masks) - set(sizes))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f", ... ({len(unknown) - 10} more)" if len(unknown) > 10 else "")
        errors.append(
            DataError(
                source,
                f"{len(unknown)} image id(s) not in the run's index: {shown}",
                "import into the run the package was exported from",
            )
        )
    for sid in sorted(set(masks) & set(sizes)):
        mask, want = masks[sid], _image_size(sizes[sid])
        if mask.size and mask.shape != want:
            errors.append(
                DataError(
                    f"{source}: {sid}",
                    f"mask is {mask.shape[0]}x{mask.shape[1]} (HxW), its image {want[0]}x{want[1]}",
                    "keep the image's size",
                )
            )
        bad = labels.check(mask)
        if bad:
            errors.append(
                DataError(
                    f"{source}: {sid}",
                    f"values {bad} are not labels ({', '.join(n for _, n, _ in labels.entries())})",
                    "use only the exported labels",
                )
            )
    return errors


def import_review(fmt: str, path: Path, run_dir: Path) -> ImportSummary:
    """Import the corrected masks of ``path`` (in format ``fmt``) into ``run_dir``; see the module docstring."""
    from wsss.data.index import read_train_index
    from wsss.refine.pseudo import write_mask

    path, run_dir = Path(path), Path(run_dir)
    index = run_dir / "prepare" / "index.csv"
    if not index.is_file():
        raise ConfigError(run_dir, "no finished prepare stage here", "pass the run folder the package came from")
    if not path.exists():
        raise ConfigError(path, "file not found", "pass the file exported from the annotation tool")
    labels = LabelMap(tuple(review_classes(run_dir)))
    masks = get_format(fmt).read(path, labels)
    sizes = {r.id: r.path for r in read_train_index(index)}
    errors = check_masks(masks, sizes, labels, path)
    if errors:
        raise ManyErrors(errors, f"{path}: nothing imported")
    final, tmp = run_dir / REVIEWED_DIR, run_dir / f".{REVIEWED_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if final.is_dir():
        shutil.copytree(final, tmp)
    (tmp / "masks").mkdir(parents=True, exist_ok=True)
    write_labelmap(tmp / "masks", labels.classes)
    record_path = tmp / RECORD_FILE
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for sid, mask in masks.items():
        full = mask if mask.size else np.zeros(_image_size(sizes[sid]), np.uint8)
        write_mask(tmp / "masks" / f"{sid}.png", full)
        record[sid] = {"format": fmt, "source": str(path.resolve()), "imported": stamp}
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    old = run_dir / f".{REVIEWED_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return ImportSummary(final, sorted(masks), len(record))
