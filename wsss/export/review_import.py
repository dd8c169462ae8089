"""`wsss import-review`: corrected masks from an annotation tool back into a run, as human supervision.

The file is decoded with its format's reader (:mod:`wsss.export.formats`), then every mask is checked before
anything is written: it must be readable, its id an indexed image, its size that image's size, its values labels of
the run. All problems are reported together and nothing is imported. Mask files are decoded with PIL, so a corrupt
one is a listed problem naming it, never a decoder message on the terminal. ``--mask-format`` (png folders only)
says what a folder's values mean, as for `wsss evaluate` (:mod:`wsss.mask_format`).

Accepted masks go to ``<run>/reviewed/masks/<id>.png`` and ``<run>/reviewed/reviewed.json`` records, per id, the
format and file it came from; a later import of the same id replaces it. The folder is rebuilt beside the old one
and swapped in, so it is never half-written.

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

from wsss.data.images import image_size
from wsss.errors import ConfigError, DataError, ManyErrors, WsssError
from wsss.export.formats import LabelMap, get_format
from wsss.export.review import review_classes
from wsss.mask_format import FORMATS, write_labelmap

REVIEWED_DIR = "reviewed"
RECORD_FILE = "reviewed.json"


@dataclass
class ImportSummary:
    folder: Path
    imported: list[str]
    total: int  # reviewed images in the folder after this import


def check_masks(
    masks: dict[str, np.ndarray], images: dict[str, Path], labels: LabelMap, source: Path
) -> tuple[dict[str, tuple[int, int]], list[WsssError]]:
    """The (H, W) of each imported id's image, and every problem of the decoded ``masks`` (unknown ids, unreadable
    images, wrong sizes, unknown labels), each naming the image."""
    errors: list[WsssError] = []
    unknown = sorted(set(masks) - set(images))
    if unknown:
        errors.append(
            DataError(
                source,
                f"{len(unknown)} image id(s) not in the run's index: {', '.join(unknown)}",
                "import into the run the package was exported from",
            )
        )
    sizes: dict[str, tuple[int, int]] = {}
    for sid in sorted(set(masks) & set(images)):
        mask = masks[sid]
        try:
            want = sizes[sid] = image_size(images[sid])
        except DataError as e:
            errors.append(DataError(e.where, f"image of {sid}: {e.what}", "restore the run's images, then import"))
            want = mask.shape
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
    return sizes, errors


def import_review(fmt: str, path: Path, run_dir: Path, mask_format: str = "auto") -> ImportSummary:
    """Import the corrected masks of ``path`` (in format ``fmt``) into ``run_dir``; see the module docstring.
    ``mask_format`` (auto, labels or binary) says what the values of a png folder mean."""
    from wsss.data.index import read_train_index
    from wsss.refine.pseudo import write_mask

    path, run_dir = Path(path), Path(run_dir)
    index = run_dir / "prepare" / "index.csv"
    if not index.is_file():
        raise ConfigError(run_dir, "no finished prepare stage here", "pass the run folder the package came from")
    if not path.exists():
        raise ConfigError(path, "file not found", "pass the file exported from the annotation tool")
    if mask_format not in FORMATS:
        raise ConfigError(f"--mask-format {mask_format}", "unknown mask format", f"use one of {', '.join(FORMATS)}")
    labels = LabelMap(tuple(review_classes(run_dir)))
    masks, errors = get_format(fmt).read_all(path, labels, mask_format)
    images = {r.id: r.path for r in read_train_index(index)}
    sizes, problems = check_masks(masks, images, labels, path)
    errors += problems
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
        full = mask if mask.size else np.zeros(sizes[sid], np.uint8)
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
