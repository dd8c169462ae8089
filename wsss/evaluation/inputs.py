"""What evaluation reads, checked before anything is computed: the scores table, the predicted masks and the soft
probability maps (16- or 8-bit PNG, or a float ``.npy``/``.npz`` array in [0, 1]), each present, readable and the size
of its ground truth (or, without one, of its image). All problems are raised together, naming every file to fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.index import EvalRow
from wsss.errors import DataError, WsssError
from wsss.evaluation.metrics import quantize_probs
from wsss.mask_format import read_mask_png
from wsss.progress import progress

SHOW_IDS = 5  # ids named in an error message
PROB_SUFFIXES = (".png", ".npy", ".npz")  # probability map files, looked for in this order
PROB_MODES_16 = ("I;16", "I;16L", "I;16B", "I")  # PIL modes of a 16-bit grayscale PNG ("I": values checked)
PROB_FIX = (
    "write a 16-bit grayscale PNG of round(p * 65535) (8-bit: round(p * 255)) or a float .npy/.npz array in [0, 1], "
    "at the image's size"
)
PROB_TOLERANCE = 1e-6  # float maps may overshoot [0, 1] by this much (rounding); they are clipped


def _first_ids(ids: list[str]) -> str:
    more = f", ... ({len(ids) - SHOW_IDS} more)" if len(ids) > SHOW_IDS else ""
    return ", ".join(ids[:SHOW_IDS]) + more


def read_pred_mask(path: Path) -> np.ndarray:
    """A predicted mask as a 2-D uint8 array; DataError when unreadable or not 8-bit single channel."""
    return read_mask_png(path, "predicted mask")


def prob_file(probs_dir: Path, sid: str) -> Path | None:
    """The probability map of image ``sid`` in ``probs_dir`` (``<id>.png``, else ``.npy``, else ``.npz``), if any."""
    for suffix in PROB_SUFFIXES:
        path = Path(probs_dir) / f"{sid}{suffix}"
        if path.is_file():
            return path
    return None


def _read_prob_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            mode, arr = im.mode, np.array(im)
    except Image.UnidentifiedImageError:
        raise DataError(path, "probability map is not a readable image (corrupt, or not a PNG)", PROB_FIX) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        what_is = "is truncated" if "truncated" in str(e) else f"cannot be read ({e})"
        raise DataError(path, f"probability map {what_is}", PROB_FIX) from None
    if mode == "L":
        return arr.astype(np.uint16) * 257  # v / 255 = (257 v) / 65535: exact
    if mode in PROB_MODES_16 and arr.ndim == 2 and (arr.size == 0 or (arr.min() >= 0 and arr.max() <= 65535)):
        return arr.astype(np.uint16)
    raise DataError(path, f"probability map has image mode {mode}, expected 16- or 8-bit grayscale", PROB_FIX)


def _read_prob_array(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # .npy
            arr = data
        else:  # .npz
            with data:
                keys = list(data.keys())
                if "probs" not in keys and len(keys) != 1:
                    raise DataError(path, f"holds arrays {keys}, expected one (or one named probs)", PROB_FIX)
                arr = data["probs" if "probs" in keys else keys[0]]
    except (OSError, ValueError, EOFError) as e:  # np.load: not an .npy/.npz, truncated, pickled objects
        raise DataError(path, f"probability map cannot be read ({e})", PROB_FIX) from None
    arr = np.asarray(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(path, f"probability map is a {arr.dtype} array of shape {arr.shape}", PROB_FIX)
    if arr.size and not (np.all(np.isfinite(arr)) and arr.min() >= -PROB_TOLERANCE and arr.max() <= 1 + PROB_TOLERANCE):
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        raise DataError(
            path, f"probability map has values outside [0, 1] (min {lo:.4g}, max {hi:.4g}, or nan)", PROB_FIX
        )
    return quantize_probs(arr)


def read_prob_map(path: Path) -> np.ndarray:
    """A probability map as a 2-D uint16 array of levels ``round(p * 65535)``; DataError naming ``path`` when it
    is unreadable, not 16-/8-bit gray (PNG), not a 2-D float array (.npy/.npz) or outside [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "probability map not found", PROB_FIX)
    return _read_prob_png(path) if path.suffix.lower() == ".png" else _read_prob_array(path)


def _ids(ids: list[str], total: int) -> str:
    """Every id when only some images are affected (each is a file to fix); the first few when all are."""
    return _first_ids(ids) if len(ids) == total else ", ".join(ids)


def _check_inputs(
    rows: list[EvalRow], masks_dir: Path, scores: dict[str, float] | None, split: str, probs_dir: Path | None = None
) -> list[WsssError]:
    """Problems that are not one file's: no rows or no folder (raised), masks, maps or scores missing (returned)."""
    if not rows:
        raise DataError(
            f"evaluate.split={split}",
            "no indexed images to evaluate",
            "choose a split that has images, e.g. --set evaluate.split=all",
        )
    if not masks_dir.is_dir():
        raise DataError(masks_dir, "masks folder not found", "run the stage that writes masks first")
    errors: list[WsssError] = []
    missing = [r.id for r in rows if not (masks_dir / f"{r.id}.png").is_file()]
    if missing:
        fix = "run the stage that writes masks, or evaluate a split that it covered"
        if (masks_dir / "masks").is_dir():
            fix = f"pass {masks_dir / 'masks'}, the folder that holds the <id>.png masks"
        errors.append(
            DataError(
                masks_dir,
                f"{len(missing)} of {len(rows)} indexed images have no predicted mask: {_ids(missing, len(rows))}",
                fix,
            )
        )
    if scores is not None:
        missing = [r.id for r in rows if r.id not in scores]
        if missing:
            errors.append(
                DataError(
                    "scores",
                    f"{len(missing)} of {len(rows)} indexed images have no score: {_ids(missing, len(rows))}",
                    "pass the scores file written with these masks",
                )
            )
    if probs_dir is not None:
        if not probs_dir.is_dir():
            errors.append(
                DataError(
                    probs_dir,
                    "probability maps folder not found",
                    "pass the probs/ folder written beside the masks, or leave --probs out",
                )
            )
        else:
            missing = [r.id for r in rows if prob_file(probs_dir, r.id) is None]
            if missing:
                errors.append(
                    DataError(
                        probs_dir,
                        f"{len(missing)} of {len(rows)} indexed images have no probability map: "
                        f"{_ids(missing, len(rows))}",
                        f"write <id>.png (16-bit), <id>.npy or <id>.npz for every image ({PROB_FIX})",
                    )
                )
    return errors


def _header_size(path: Path) -> tuple[int, int]:
    """(H, W) from an image file's header, without decoding its pixels."""
    with Image.open(path) as im:
        return im.height, im.width


def _reference(row: EvalRow) -> tuple[tuple[int, int], str] | None:
    """The (H, W) ``row``'s predicted mask must have, and what says so: its ground truth, else its image. None for a
    row without ground truth whose image cannot be read (then there is nothing to compare with)."""
    if row.mask is not None:
        try:
            return _header_size(row.mask), f"the ground truth {row.mask}"
        except (OSError, ValueError, SyntaxError) as e:
            why = "not found" if isinstance(e, FileNotFoundError) else f"cannot be read ({e})"
            raise DataError(
                row.mask,
                f"ground-truth mask of {row.id} {why}",
                "re-copy it from the dataset, or re-run prepare if the dataset moved",
            ) from None
    try:
        return _header_size(row.path), f"its image {row.path}"
    except (OSError, ValueError, SyntaxError):
        return None


def _size_error(
    path: Path, what: str, shape: tuple[int, ...], ref: tuple[tuple[int, int], str] | None
) -> list[WsssError]:
    """[] when ``shape`` is the reference size (or there is none), else the error naming ``path``."""
    if ref is None or shape == ref[0]:
        return []
    (h, w), ((rh, rw), against) = shape, ref
    return [
        DataError(
            path, f"{what} is {w}x{h} (WxH) but {against} is {rw}x{rh}", f"write {what}s at the original image size"
        )
    ]


def check_masks(
    rows: list[EvalRow],
    masks_dir: Path,
    scores: dict[str, float] | None,
    split: str,
    probs_dir: Path | None = None,
) -> tuple[list[np.ndarray], list[WsssError]]:
    """Read every predicted mask (and probability map) once, before anything is computed or written: the values each
    mask holds (for :func:`wsss.mask_format.mask_encoding`) and every problem found (missing, unreadable, not one
    8-bit channel, a map not 16-/8-bit gray or floats in [0, 1], not the size of its ground truth or, without one, of
    its image), so that all are reported at once."""
    probs_dir = Path(probs_dir) if probs_dir is not None else None
    errors = _check_inputs(rows, masks_dir, scores, split, probs_dir)
    maps = probs_dir is not None and probs_dir.is_dir()
    values: list[np.ndarray] = []
    for row in progress(rows, desc="check masks", total=len(rows)):
        path = masks_dir / f"{row.id}.png"
        prob = prob_file(probs_dir, row.id) if maps else None
        if not path.is_file() and prob is None:
            continue  # listed by _check_inputs
        try:
            ref = _reference(row)
        except DataError as e:
            errors.append(e)
            continue
        if path.is_file():
            try:
                pred = read_pred_mask(path)
            except DataError as e:
                errors.append(e)
            else:
                values.append(np.unique(pred))
                errors += _size_error(path, "predicted mask", pred.shape, ref)
        if prob is not None:
            try:
                errors += _size_error(prob, "probability map", read_prob_map(prob).shape, ref)
            except DataError as e:
                errors.append(e)
    return values, errors
