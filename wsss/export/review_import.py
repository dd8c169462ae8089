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

``--format decisions`` imports the review page's triage instead (:func:`import_decisions`): the JSON file its
"Download decisions" button saves::

    {"format": "wsss-review-decisions", "version": 1,
     "run": {"name": "<run folder name>", "masks_sha256": "<wsss.export.review.masks_digest of the stage's masks/>"},
     "masks": "<masks stage, e.g. train-segmenter>",
     "decisions": {"<image id>": "accept" | "reject", ...}}

Undecided images are left out. An accepted image's pseudo-mask (``<run>/<masks>/masks/<id>.png``) is copied into
``reviewed/masks/`` as a human mask (recorded with format ``decisions``); a rejected image's id goes into
``reviewed/rejected.txt`` (one id per line), which keeps it out of the segmenter's mask loss
(:class:`wsss.train.segmenter_data.PseudoMaskDataset`) while its image label still trains. A mask corrected in an
annotation tool (an earlier import of another format) wins over both decisions; a later decision on an id replaces
an earlier decision on it; ids the file does not decide keep what the folder says. The file is refused whole, with
nothing written, when it is not JSON or not a decisions file of this version, names an id the run does not index or
a decision other than accept / reject, or is stale: the run's masks of that stage are not the ones the page showed
(their digest differs: the stage re-ran with other results, or this is another run). The run's folder name is
informational: a renamed or copied run keeps its masks and so its decisions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsss.artifacts.masks import REJECTED_FILE, write_mask
from wsss.atomic import atomic_write_text
from wsss.data.images import image_size
from wsss.data.index import read_train_index
from wsss.errors import ConfigError, DataError, ManyErrors, WsssError
from wsss.evaluation import read_pred_mask
from wsss.export.formats import ImageSizes, get_format
from wsss.export.review import DECISIONS_FORMAT, DECISIONS_VERSION, masks_digest, review_classes
from wsss.labels import LabelMap
from wsss.mask_format import FORMATS, write_labelmap

REVIEWED_DIR = "reviewed"
RECORD_FILE = "reviewed.json"
DECISIONS = ("accept", "reject")
DECISIONS_FIX = 'pass the file the review page\'s "Download decisions" button saved'


@dataclass
class ImportSummary:
    folder: Path
    imported: list[str]
    total: int  # reviewed images in the folder after this import


@dataclass
class DecisionsSummary:
    folder: Path
    accepted: list[str]  # pseudo-masks copied in as human masks
    rejected: list[str]  # ids added to (or kept in) rejected.txt
    kept: list[str]  # decided ids whose corrected mask from an earlier import wins
    total: int  # human masks in the folder after this import
    rejected_total: int  # ids in rejected.txt after this import


def _unknown_ids(ids, images: dict[str, Path], source: Path) -> list[WsssError]:
    """One error listing the ids of ``ids`` that the run's index lacks (none when all are known)."""
    unknown = sorted(set(ids) - set(images))
    if not unknown:
        return []
    what = f"{len(unknown)} image id(s) not in the run's index: {', '.join(unknown)}"
    return [DataError(source, what, "import into the run the package was exported from")]


def check_masks(
    masks: dict[str, np.ndarray], images: dict[str, Path], labels: LabelMap, source: Path
) -> tuple[dict[str, tuple[int, int]], list[WsssError]]:
    """The (H, W) of each imported id's image, and every problem of the decoded ``masks`` (unknown ids, unreadable
    images, wrong sizes, unknown labels), each naming the image."""
    errors: list[WsssError] = []
    errors.extend(_unknown_ids(masks, images, source))
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

    path, run_dir = Path(path), Path(run_dir)
    index = run_dir / "prepare" / "index.csv"
    if not index.is_file():
        raise ConfigError(run_dir, "no finished prepare stage here", "pass the run folder the package came from")
    if not path.exists():
        raise ConfigError(path, "file not found", "pass the file exported from the annotation tool")
    if mask_format not in FORMATS:
        raise ConfigError(f"--mask-format {mask_format}", "unknown mask format", f"use one of {', '.join(FORMATS)}")
    labels = LabelMap(tuple(review_classes(run_dir)))
    images = {r.id: r.path for r in read_train_index(index)}
    # every size the file declares is checked against these images before a mask of that size is allocated
    masks, errors = get_format(fmt).read_all(path, labels, mask_format, ImageSizes(images))
    sizes, problems = check_masks(masks, images, labels, path)
    errors += problems
    if errors:
        raise ManyErrors(errors, f"{path}: nothing imported")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    record: dict[str, Any] = {}

    def update(folder: Path) -> None:
        record.update(read_record(folder))
        for sid, mask in masks.items():
            full = mask if mask.size else np.zeros(sizes[sid], np.uint8)
            write_mask(folder / "masks" / f"{sid}.png", full)
            record[sid] = {"format": fmt, "source": str(path.resolve()), "imported": stamp}
        write_record(folder, record)
        write_rejected(folder, set(read_rejected(folder)) - set(masks))  # a corrected mask replaces a rejection

    final = rebuild_reviewed(run_dir, labels, update)
    return ImportSummary(final, sorted(masks), len(record))


def read_record(folder: Path) -> dict[str, Any]:
    """``reviewed.json`` of a reviewed folder: per id, the format and file its mask came from."""
    path = folder / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_record(folder: Path, record: dict[str, Any]) -> None:
    atomic_write_text(folder / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_rejected(folder: Path) -> list[str]:
    """The ids of ``rejected.txt`` in a reviewed folder (empty when there is none)."""
    path = folder / REJECTED_FILE
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln] if path.is_file() else []


def write_rejected(folder: Path, ids: set[str]) -> None:
    """``rejected.txt``: one id per line, sorted; no file when no id is rejected."""
    path = folder / REJECTED_FILE
    if ids:
        atomic_write_text(path, "".join(f"{i}\n" for i in sorted(ids)))
    else:
        path.unlink(missing_ok=True)


def rebuild_reviewed(run_dir: Path, labels: LabelMap, update: Callable[[Path], None]) -> Path:
    """Apply ``update`` to a copy of ``run_dir/reviewed`` built beside it (with ``masks/`` and its labelmap), then
    swap the copy in: the folder is never half-written, and a failed update leaves it as it was."""
    final, tmp = run_dir / REVIEWED_DIR, run_dir / f".{REVIEWED_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if final.is_dir():
        shutil.copytree(final, tmp)
    (tmp / "masks").mkdir(parents=True, exist_ok=True)
    try:
        write_labelmap(tmp / "masks", labels.classes)
        update(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = run_dir / f".{REVIEWED_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_decisions(path: Path) -> dict[str, Any]:
    """The review page's decisions file ``path`` with its structure checked (not yet against a run): a
    :class:`ConfigError` when there is no such file, else a :class:`DataError` naming it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, "file not found", DECISIONS_FIX)
    if not path.is_file():
        raise ConfigError(path, "is a folder, not a decisions file", DECISIONS_FIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(path, "not a decisions file (not UTF-8 text)", DECISIONS_FIX) from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})", DECISIONS_FIX) from None
    found = data.get("format") if isinstance(data, dict) else f"a JSON {type(data).__name__}"
    if found != DECISIONS_FORMAT:
        raise DataError(
            path, f"not a wsss review decisions file (format {found!r}, not {DECISIONS_FORMAT!r})", DECISIONS_FIX
        )
    version = data.get("version")
    if version != DECISIONS_VERSION or isinstance(version, bool):
        raise DataError(
            path,
            f"decisions file version {version!r}; this wsss reads version {DECISIONS_VERSION}",
            "import it with the wsss that exported the package, or export the package again with this one",
        )
    run, stage, decisions = data.get("run"), data.get("masks"), data.get("decisions")
    if not (isinstance(run, dict) and isinstance(run.get("name"), str) and isinstance(run.get("masks_sha256"), str)):
        raise DataError(path, '"run" is not {"name": ..., "masks_sha256": ...}', DECISIONS_FIX)
    if not isinstance(stage, str) or Path(stage).name != stage or stage in ("", ".", ".."):
        raise DataError(path, f'"masks" is {stage!r}, not a stage name', DECISIONS_FIX)
    if not isinstance(decisions, dict):
        raise DataError(
            path, f'"decisions" is {type(decisions).__name__}, not an object of id: decision', DECISIONS_FIX
        )
    return data


def import_decisions(path: Path, run_dir: Path) -> DecisionsSummary:
    """Import the review page's decisions file ``path`` into ``run_dir``; see the module docstring."""

    path, run_dir = Path(path), Path(run_dir)
    index = run_dir / "prepare" / "index.csv"
    if not index.is_file():
        raise ConfigError(run_dir, "no finished prepare stage here", "pass the run folder the package came from")
    data = read_decisions(path)
    decisions: dict[str, Any] = data["decisions"]
    stage, exported = data["masks"], data["run"]
    images = {r.id: r.path for r in read_train_index(index)}
    labels = LabelMap(tuple(review_classes(run_dir)))
    origin = f"; the file is from run {exported['name']!r}" if exported["name"] != run_dir.resolve().name else ""
    fix_stale = (
        "import into the run the package was exported from, or export the package again "
        f"(`wsss export review --run {run_dir} --masks {stage}`) and review its masks"
    )
    errors: list[WsssError] = []
    masks_dir = run_dir / stage / "masks"
    stale = True
    if not masks_dir.is_dir():
        fix = "import into the run the package was exported from"
        errors.append(DataError(path, f"stale: {run_dir} has no masks of stage {stage!r}{origin}", fix))
    elif masks_digest(masks_dir) != exported["masks_sha256"]:
        what = (
            f"stale: the masks of {masks_dir} are not the ones the review page showed (the stage ran again since "
            f"the export, or this is another run{origin})"
        )
        errors.append(DataError(path, what, fix_stale))
    else:
        stale = False
    errors.extend(_unknown_ids(decisions, images, path))
    for sid, d in sorted(decisions.items()):
        if d not in DECISIONS:
            errors.append(
                DataError(f"{path}: {sid}", f"unknown decision {d!r}", "use accept or reject; leave undecided out")
            )
    accepted = sorted(s for s, d in decisions.items() if d == "accept" and s in images)
    rejected = sorted(s for s, d in decisions.items() if d == "reject" and s in images)
    masks: dict[str, np.ndarray] = {}
    if not stale:
        for sid in accepted:
            try:
                masks[sid] = read_pred_mask(masks_dir / f"{sid}.png")
            except DataError as e:
                errors.append(e)
        errors += check_masks(masks, images, labels, path)[1]
    if errors:
        raise ManyErrors(errors, f"{path}: nothing imported")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    done: dict[str, list[str]] = {"accept": [], "reject": [], "kept": []}
    totals: list[int] = []

    def update(folder: Path) -> None:
        record = read_record(folder)
        rejects = set(read_rejected(folder))

        def corrected(sid: str) -> bool:  # a person's own mask, from an annotation tool
            has = (folder / "masks" / f"{sid}.png").is_file()
            return has and record.get(sid, {}).get("format") != "decisions"

        for sid in accepted + rejected:
            if corrected(sid):
                done["kept"].append(sid)
            elif sid in masks:
                write_mask(folder / "masks" / f"{sid}.png", masks[sid])
                record[sid] = {"format": "decisions", "source": str(path.resolve()), "imported": stamp, "masks": stage}
                rejects.discard(sid)
                done["accept"].append(sid)
            else:  # rejected: an earlier accept of it is taken back
                (folder / "masks" / f"{sid}.png").unlink(missing_ok=True)
                record.pop(sid, None)
                rejects.add(sid)
                done["reject"].append(sid)
        write_record(folder, record)
        write_rejected(folder, rejects)
        totals.extend([len(list((folder / "masks").glob("*.png"))), len(rejects)])

    final = rebuild_reviewed(run_dir, labels, update)
    return DecisionsSummary(final, done["accept"], done["reject"], sorted(done["kept"]), *totals)
