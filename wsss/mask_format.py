"""What the values of a folder of mask PNGs mean, decided once per folder and used by `evaluate` and `import-review`.

wsss writes **label masks**: 0 background, k = class k (1..K, ``classes[k - 1]``), 255 ignore (uncertain). Most
tools write **binary masks**: 0 = OK, 255 = defect. The same value 255 means opposite things, so a folder is never
read by guessing silently:

1. ``labelmap.txt`` in the folder (one ``value name`` line per value; every wsss stage that writes masks writes one,
   as does the png review export) says what each value is: ``background``, a class name, or ``ignore`` /
   ``uncertain``. A user states what a foreign folder's 255 means by writing one, e.g. ``0 background`` and
   ``255 defect``.
2. A folder that is a wsss stage's ``masks/`` (its ``manifest.json`` beside it) holds label masks.
3. Any other folder is read from the values its masks hold: only 0 and 255 on a one-class dataset are binary masks
   (255 = defect, said in a one-line note); class values 1..K (with or without 255) are label masks; anything else,
   or 0/255 on a dataset with several classes, is refused with an error that says how to state the meaning.

``--mask-format labels|binary`` (``wsss evaluate``, ``evaluate.mask_format``, ``wsss import-review --format png``)
overrides all of this; binary then reads any value >= 128 as defect.

Mask files are decoded with PIL (:func:`read_mask_png`), never OpenCV, so a corrupt file gives one error naming it
and no decoder message on the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.atomic import atomic_write_text
from wsss.errors import DataError
from wsss.labels import IGNORE, LabelMap

LABELMAP = "labelmap.txt"
IGNORE_NAMES = ("ignore", "uncertain")
BACKGROUND_NAMES = ("background", "ok", "good")
FORMATS = ("auto", "labels", "binary")
BINARY_CUT = 128  # binary masks: a pixel is defect iff its value >= this
MASK_MODES = ("L", "P", "1")  # PIL modes read as one 8-bit channel (P: the palette indices are the values)
PNG_FIX = "write it as an 8-bit grayscale PNG: 0 background, k = class k, 255 ignore"


@dataclass(frozen=True)
class MaskEncoding:
    """How a folder's values map onto label values: ``lut[raw]`` is the label mask (0, 1..K, 255 ignore)."""

    kind: str  # "labels", "binary" or "labelmap"
    lut: np.ndarray  # (256,) uint8
    note: str = ""  # one line saying how a foreign folder was read ("" for a folder wsss wrote)
    # whether a defect value says *which* class it is: False for a binary run's masks over a dataset of several
    # classes (its labelmap names one ``defect`` value), whose value 1 is not the dataset's first class
    class_aware: bool = True

    def to_labels(self, raw: np.ndarray) -> np.ndarray:
        return raw if self.kind == "labels" else self.lut[raw]


def labelmap_text(classes: Sequence[str]) -> str:
    """``labelmap.txt`` of label masks (:class:`LabelMap`): ``0 background``, ``k <class k>``, ``255 uncertain``."""
    return "".join(f"{v} {n}\n" for v, n, _ in LabelMap(tuple(classes)).entries())


def write_labelmap(folder: Path, classes: Sequence[str]) -> Path:
    """Write the folder's ``labelmap.txt`` (atomically): what its label masks' values mean."""
    path = Path(folder) / LABELMAP
    atomic_write_text(path, labelmap_text(classes))
    return path


def read_mask_png(
    path: Path, what: str = "mask", size_check: Callable[[int, int], str | None] | None = None
) -> np.ndarray:
    """A mask file as a 2-D ``uint8`` array of its values; a :class:`DataError` naming ``path`` (``what`` says which
    mask, e.g. "predicted mask") when it is unreadable or not one 8-bit channel. ``size_check(height, width)`` sees
    the header's size before anything is decoded and refuses the file with its reason."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            why = size_check(im.size[1], im.size[0]) if size_check is not None else None
            if why:
                raise DataError(path, f"{what}: {why}", PNG_FIX)
            im.load()
            mode, arr = im.mode, np.array(im)  # a writable copy, like any other array
    except FileNotFoundError:
        raise DataError(path, f"{what} not found", PNG_FIX) from None
    except Image.UnidentifiedImageError:
        raise DataError(path, f"{what} is not a readable image (corrupt, or not a PNG)", PNG_FIX) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        what_is = "is truncated" if "truncated" in str(e) else f"cannot be read ({e})"
        raise DataError(path, f"{what} {what_is}", PNG_FIX) from None
    if mode not in MASK_MODES:
        raise DataError(path, f"{what} has image mode {mode}, expected 8-bit single channel", PNG_FIX)
    return arr.astype(np.uint8, copy=False)  # mode 1: bool -> 0/1


def _identity() -> np.ndarray:
    return np.arange(256, dtype=np.uint8)


def _binary() -> np.ndarray:
    return (np.arange(256) >= BINARY_CUT).astype(np.uint8)


def _fix(folder: Path, classes: Sequence[str]) -> str:
    first = classes[0] if classes else "defect"
    return (
        f"write {Path(folder) / LABELMAP} with one `value name` line per value (e.g. `0 background` and "
        f"`255 {first}`, or `255 ignore`), or pass --mask-format binary (255 = defect) or labels (255 = ignore)"
    )


def parse_labelmap(path: Path, classes: Sequence[str]) -> tuple[np.ndarray, bool]:
    """The look-up table of a ``labelmap.txt`` (value -> label value; unmapped values map to themselves), and whether
    its defect values say which class they are: one of ``classes`` named at a value 1..254, or a one-class dataset.

    A name that is not one of ``classes`` keeps its value when that is a defect value 1..254 (a binary run's
    ``defect`` over a dataset of several classes); ``defect`` at 0 or 255 is the generic defect (value 1); any other
    name at 0 or 255 is refused, as those two values must say what they are."""
    lut, errors, class_aware = _identity(), [], len(classes) == 1
    lower = {c.lower(): k for k, c in enumerate(classes, start=1)}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        value, _, name = line.strip().partition(" ")
        name = name.strip().lower()
        if not value.isdigit() or int(value) > 255 or not name:
            errors.append(f"line {n}: {line.strip()!r} is not `value name` with a value 0..255")
        elif name in BACKGROUND_NAMES:
            lut[int(value)] = 0
        elif name in IGNORE_NAMES:
            lut[int(value)] = IGNORE
        elif name in lower:
            lut[int(value)] = lower[name]
            class_aware |= 0 < int(value) < IGNORE
        elif 0 < int(value) < IGNORE:
            continue
        elif name == "defect":
            lut[int(value)] = 1
        else:
            errors.append(f"line {n}: {name!r} is not background, ignore or a class ({', '.join(classes)})")
    if errors:
        raise DataError(path, "; ".join(errors), "name each value background, ignore or one of the dataset's classes")
    return lut, class_aware


def mask_encoding(
    folder: Path, classes: Sequence[str], masks: Iterable[np.ndarray], mode: str = "auto", check_values: bool = True
) -> MaskEncoding:
    """How to read the ``masks`` of ``folder`` for a dataset of ``classes`` (see the module docstring). ``masks`` is
    only iterated for a foreign folder without ``labelmap.txt`` (pass a generator to read files only then).

    ``check_values=False`` leaves values that are neither classes nor 255 to the caller (import-review lists every
    bad mask with its id)."""
    folder = Path(folder)
    if mode not in FORMATS:
        raise DataError(f"--mask-format {mode}", "unknown mask format", f"use one of {', '.join(FORMATS)}")
    if mode == "binary":
        if len(classes) != 1:
            raise DataError(
                folder,
                f"binary masks name one defect class, the dataset has {len(classes)} ({', '.join(classes)})",
                "write label masks (value k = class k) or a labelmap.txt naming each value",
            )
        return MaskEncoding("binary", _binary())
    if mode == "labels":
        return MaskEncoding("labels", _identity())
    if (folder / LABELMAP).is_file():
        lut, class_aware = parse_labelmap(folder / LABELMAP, classes)
        return MaskEncoding("labelmap", lut, class_aware=class_aware)
    if (folder.parent / "manifest.json").is_file():  # a wsss stage's masks/ (written before labelmap.txt existed)
        return MaskEncoding("labels", _identity())
    values = {int(v) for m in masks for v in np.unique(m)}
    labels = set(range(1, len(classes) + 1))
    if values <= {0, IGNORE} and IGNORE in values:
        if len(classes) == 1:
            note = (
                f"read {folder} as binary masks (only values 0 and 255): 255 = {classes[0]}; "
                f"if 255 means ignore there, add {LABELMAP} or pass --mask-format labels"
            )
            return MaskEncoding("binary", _binary(), note)
        raise DataError(
            folder,
            f"its masks hold only 0 and 255 and the dataset has {len(classes)} classes: 255 could be any of them, "
            "or ignore",
            _fix(folder, classes),
        )
    odd = sorted(values - labels - {0, IGNORE})
    if odd and check_values:
        shown = ", ".join(map(str, odd[:8])) + (" ..." if len(odd) > 8 else "")
        raise DataError(
            folder,
            f"mask values {shown} are neither classes (1..{len(classes)}) nor 255 (ignore), nor binary 0/255",
            _fix(folder, classes),
        )
    return MaskEncoding("labels", _identity())
