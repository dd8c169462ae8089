"""Reading and checking dataset images and ground-truth masks.

Images come back as writable, C-contiguous ``uint8`` arrays: ``(H, W)`` for grayscale, ``(H, W, 3)`` RGB (never
the read-only buffer ``np.asarray`` gives for a PIL image, which C extensions such as pydensecrf refuse). Every file
is fully decoded (``Image.load()``), so truncated files fail here instead of in the middle of training. Conversions:

- ``L`` and ``RGB``: as stored; an RGB image whose three channels are identical becomes ``(H, W)`` grayscale
  (industrial sets often store gray images as RGB).
- ``1`` (bilevel) -> ``L`` (0/255); ``P`` (palette) -> ``L`` if the palette is gray, else ``RGB``;
  ``LA``/``RGBA``/``PA`` and palette transparency -> alpha is dropped, not composited (the colour values are kept
  as stored);
  ``CMYK``/``YCbCr``/... -> ``RGB``.
- 16-bit (``I;16*``, or ``I`` with values above 255): refused unless ``high_bit_depth == "scale"``, which maps
  the full 16-bit range 0..65535 to 0..255 (``round(v / 257)``; a 12-bit image therefore comes out dark).
  ``I`` images whose values all fit in 0..255 are read as 8-bit.
- 32-bit float (``F``): refused.
- An EXIF orientation tag (phone and camera pictures taken turned) is applied once, here: every stage, the review
  package and `predict` see the image upright, as a viewer shows it, and :func:`image_size` reports that size.

Masks are read as one 8-bit channel (colour masks: the maximum over channels, alpha ignored; 16-bit and float
masks: any non-zero value counts as 255) and binarised as ``value >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from wsss.errors import DataError

HIGH_BIT_DEPTH = ("refuse", "scale")
_REPLACE_FIX = "re-copy the file from the original source, or remove it from the dataset"
_8BIT_FIX = "convert it to an 8-bit PNG"
SCALE_FIX = "set dataset.high_bit_depth: scale"
EXIF_ORIENTATION = 0x0112  # the EXIF tag a camera writes when the picture was taken turned


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe_image` learnt from fully decoding an image."""

    width: int
    height: int
    channels: int  # 1 or 3, after conversion
    mode: str  # PIL mode as stored in the file
    converted: str | None = None  # what was changed to read it, e.g. "RGBA -> RGB (alpha dropped)"


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``; every failure becomes a :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(path, "file not found", "check the path, or re-run the dataset scan")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)", _REPLACE_FIX)
    try:
        im = Image.open(path)
        im.load()
        if exif_orientation(im) != 1:  # the image as a viewer shows it: rotated by its EXIF tag, once, here
            im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as e:
        raise DataError(path, f"image too large to decode safely: {e}", "split or downscale the image") from None
    except (OSError, SyntaxError, ValueError) as e:
        what = "truncated image file" if "truncated" in str(e) else f"not a readable image ({e})"
        raise DataError(path, what, _REPLACE_FIX) from None
    return im


def _high_bit(path: Path, im: Image.Image, high_bit_depth: str, scale_fix: str) -> tuple[np.ndarray, str | None]:
    a = np.asarray(im)
    lo, hi = int(a.min()), int(a.max())
    if im.mode == "I" and lo >= 0 and hi <= 255:
        return a.astype(np.uint8), f"{im.mode} with values 0..255 -> 8-bit"
    if lo < 0 or hi > 65535:
        raise DataError(path, f"{im.mode} image with values {lo}..{hi} outside 0..65535", _8BIT_FIX)
    if high_bit_depth != "scale":
        raise DataError(
            path,
            f"16-bit image (mode {im.mode}, values {lo}..{hi})",
            f"{_8BIT_FIX}, or {scale_fix} to map 0..65535 to 0..255",
        )
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8), "16-bit -> 8-bit (value / 257)"


def _gray_palette(im: Image.Image) -> bool:
    pal = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    return bool(len(pal)) and bool((pal == pal[:, :1]).all())


def _decode(path: Path, high_bit_depth: str, scale_fix: str = SCALE_FIX) -> tuple[np.ndarray, ImageInfo]:
    if high_bit_depth not in HIGH_BIT_DEPTH:
        raise ValueError(f"high_bit_depth must be one of {HIGH_BIT_DEPTH}, got {high_bit_depth!r}")
    path = Path(path)
    im = _open(path)
    mode, converted = im.mode, None
    if mode.startswith("I;16") or mode == "I":
        a, converted = _high_bit(path, im, high_bit_depth, scale_fix)
    elif mode == "F":
        raise DataError(path, "32-bit float image (mode F)", _8BIT_FIX)
    elif mode in ("L", "RGB"):
        a = np.asarray(im)
    elif mode == "1":
        a, converted = np.asarray(im.convert("L")), "1-bit -> 8-bit grayscale"
    elif mode == "LA":
        a, converted = np.asarray(im.convert("L")), "LA -> L (alpha dropped)"
    elif mode == "P" and _gray_palette(im) and "transparency" not in im.info:
        a, converted = np.asarray(im.convert("L")), "gray palette -> grayscale"
    else:
        try:
            a = np.asarray(im.convert("RGB"))
        except (ValueError, OSError) as e:
            raise DataError(path, f"unsupported image mode {mode} ({e})", f"{_8BIT_FIX} or JPEG") from None
        converted = {"P": "palette -> RGB", "PA": "palette -> RGB (alpha dropped)"}.get(mode)
        if mode == "P" and "transparency" in im.info:
            converted = "palette -> RGB (transparency dropped)"
        converted = converted or f"{mode} -> RGB" + (" (alpha dropped)" if "A" in mode else "")
    if a.ndim == 3 and (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all():
        a = a[..., 0]
        converted = f"{converted}, gray -> grayscale" if converted else "RGB with equal channels -> grayscale"
    a = np.require(a, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])  # copies the read-only array PIL's buffer gives
    info = ImageInfo(
        width=a.shape[1], height=a.shape[0], channels=1 if a.ndim == 2 else 3, mode=mode, converted=converted
    )
    return a, info


def read_image(path: Path | str, high_bit_depth: str = "refuse", *, scale_fix: str = SCALE_FIX) -> np.ndarray:
    """Read an image as ``uint8`` ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB); see the module docstring.

    ``scale_fix`` is how the refusal of a 16-bit image tells the user to allow scaling, by default the dataset
    setting; a command without a recipe names its own option.
    """
    return _decode(Path(path), high_bit_depth, scale_fix)[0]


def probe_image(path: Path | str, high_bit_depth: str = "refuse") -> ImageInfo:
    """Fully decode an image (so truncation is caught) and describe it, for dataset validation."""
    return _decode(Path(path), high_bit_depth)[1]


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright, 5-8 = a quarter turn, so width and height swap), 1 without one."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, TypeError):  # a malformed EXIF block: the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def image_size(path: Path | str) -> tuple[int, int]:
    """(H, W) from the file's header (turned by its EXIF orientation, as :func:`read_image` turns the pixels),
    without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return (im.width, im.height) if exif_orientation(im) >= 5 else (im.height, im.width)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(path, f"cannot read the image's size: {e}", "re-run the prepare stage") from None


def read_mask_values(path: Path | str) -> np.ndarray:
    """A mask as one ``uint8`` channel, before thresholding (class-indexed masks keep their values)."""
    path = Path(path)
    im = _open(path)
    if im.mode.startswith("I") or im.mode == "F":
        return np.where(np.asarray(im) != 0, 255, 0).astype(np.uint8)
    if im.mode == "L":
        return np.asarray(im)
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    if im.mode == "LA":
        return np.asarray(im)[..., 0]
    return np.asarray(im.convert("RGB")).max(axis=2)


def read_mask(
    path: Path | str, threshold: int, size: tuple[int, int] | None = None, *, image: Path | str | None = None
) -> np.ndarray:
    """Read a ground-truth mask as ``bool`` ``(H, W)``: a pixel is defect iff its value >= ``threshold``.

    Args:
        size: the image's ``(width, height)``; a mask of another size is a :class:`DataError`.
        image: the image the mask belongs to, named in the size-mismatch message.
    """
    m = read_mask_values(path)
    if size is not None and (m.shape[1], m.shape[0]) != tuple(size):
        of = f"image {Path(image).name}" if image is not None else "image"
        raise DataError(
            path,
            f"mask is {m.shape[1]}x{m.shape[0]} (WxH) but its {of} is {size[0]}x{size[1]}",
            "give the mask exactly its image's size (no resizing), or fix which mask belongs to which image",
        )
    return m >= threshold
