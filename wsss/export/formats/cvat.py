"""CVAT "Segmentation mask 1.1" (``cvat.zip``), the layout CVAT imports and exports for masks:

    labelmap.txt                         # label:color_rgb:parts:actions, one line per label, background first
    ImageSets/Segmentation/default.txt   # image names (our ids), one per line
    SegmentationClass/<id>.png           # RGB, each pixel the colour of its label in labelmap.txt
    SegmentationObject/<id>.png          # RGB, one instance per label present, in the VOC palette

Masks are colour PNGs, never raw 0/255 values (CVAT rejects a colour it finds in no label as an undeclared label).
Instances are one per label, not one per connected component: CVAT's importer (datumaro) reads instance colours from
the 256-entry VOC palette and refuses an image with more components than that, which speckled masks on large
images reach; wsss reads the class masks alone, so nothing is lost on the way back. In CVAT's upload dialog untick
"Convert masks to polygons": it drops components of a few pixels and erodes edges.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsss.atomic import atomic_path
from wsss.errors import DataError, WsssError
from wsss.export.formats import ImageSizes, ReviewFormat, ReviewItem, register_format
from wsss.labels import LabelMap

FIX = "pass the zip exported from CVAT as 'Segmentation mask 1.1'"
HEADER = "# label:color_rgb:parts:actions\n"


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def instance_colour(i: int) -> tuple[int, int, int]:
    """A distinct, non-black colour for instance ``i`` (1-based), from the bits of i as in Pascal VOC's palette."""
    r = g = b = 0
    for shift in range(8):
        r |= ((i >> (3 * shift)) & 1) << (7 - shift)
        g |= ((i >> (3 * shift + 1)) & 1) << (7 - shift)
        b |= ((i >> (3 * shift + 2)) & 1) << (7 - shift)
    return r, g, b


def labelmap_text(labels: LabelMap) -> str:
    return HEADER + "".join(f"{n}:{c[0]},{c[1]},{c[2]}::\n" for _, n, c in labels.entries())


def parse_labelmap(text: str) -> dict[tuple[int, int, int], str]:
    """Colour -> label name of a ``labelmap.txt``; a ValueError naming the line that is not ``name:r,g,b:parts:
    actions``. The last three fields are split off from the right, so a name holding ``:`` reads back whole."""
    colours = {}
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rsplit(":", 3) if line.count(":") >= 3 else line.split(":", 1)
        try:
            if len(fields) < 2:
                raise ValueError
            rgb = tuple(int(v) for v in fields[1].split(","))
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        except ValueError:
            raise ValueError(f"line {i} is not 'name:r,g,b:parts:actions': {line[:80]!r}") from None
        colours[rgb] = fields[0].strip()
    return colours


class CvatFormat(ReviewFormat):
    name = "cvat"
    default_file = "cvat.zip"

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:
        path = package / self.default_file
        colour = {v: c for v, _, c in labels.entries()}
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("labelmap.txt", labelmap_text(labels))
            z.writestr("ImageSets/Segmentation/default.txt", "".join(f"{it.id}\n" for it in items))
            for item in items:
                mask = item.load_mask()
                cls = np.zeros((*mask.shape, 3), np.uint8)
                obj = np.zeros_like(cls)
                values = [int(v) for v in np.unique(mask) if v != 0]
                for v in values:
                    cls[mask == v] = colour[v]
                for i, v in enumerate(values, start=1):  # at most 255 labels: always inside the palette
                    obj[mask == v] = instance_colour(i)
                z.writestr(f"SegmentationClass/{item.id}.png", _png(cls))
                z.writestr(f"SegmentationObject/{item.id}.png", _png(obj))
        return path

    def read_all(
        self, path: Path, labels: LabelMap, mask_format: str = "auto", sizes: ImageSizes | None = None
    ) -> tuple[dict[str, np.ndarray], list[WsssError]]:
        """Every ``SegmentationClass/*.png`` (decoded with PIL, so a corrupt one is a listed problem, not a decoder
        message; its header's size checked against its run image before it is decoded), each colour mapped to its
        label's value; a mask with a colour of no label is a problem of its own."""
        self.labels_only(mask_format)
        sizes = sizes or ImageSizes()
        try:
            z = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(path, f"not a zip file ({e})", FIX) from None
        masks: dict[str, np.ndarray] = {}
        errors: list[WsssError] = []
        with z:
            names = z.namelist()
            if "labelmap.txt" not in names:
                raise DataError(path, "no labelmap.txt in the zip", FIX)
            try:
                colours = parse_labelmap(z.read("labelmap.txt").decode("utf-8"))
            except (ValueError, zipfile.BadZipFile) as e:  # UnicodeDecodeError is a ValueError
                raise DataError(f"{path}:labelmap.txt", f"unreadable ({e})", FIX) from None
            for name in sorted(n for n in names if n.startswith("SegmentationClass/") and n.endswith(".png")):
                try:
                    with Image.open(io.BytesIO(z.read(name))) as im:
                        why = sizes.problem(Path(name).stem, im.size[1], im.size[0])  # the header: nothing decoded
                        if why:
                            errors.append(DataError(f"{path}:{name}", why, FIX))
                            continue
                        rgb = np.asarray(im.convert("RGB"))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, zipfile.BadZipFile) as e:
                    why = "corrupt, or not a PNG" if isinstance(e, Image.UnidentifiedImageError) else str(e)
                    errors.append(DataError(f"{path}:{name}", f"unreadable PNG ({why})", FIX))
                    continue
                mask = np.zeros(rgb.shape[:2], np.uint8)
                found = np.unique(rgb.reshape(-1, 3), axis=0)
                bad = []
                for c in map(tuple, found.tolist()):
                    label = colours.get(c)
                    value = labels.value_of(label) if label is not None else None
                    if value is None:
                        bad.append(f"colour {c} ({label or 'not in labelmap.txt'})")
                        continue
                    mask[(rgb == c).all(axis=2)] = value
                if bad:
                    errors.append(
                        DataError(
                            f"{path}:{name}", f"unknown label(s): {'; '.join(bad)}", "use only the labels of the export"
                        )
                    )
                    continue
                masks[Path(name).stem] = mask
        if not masks and not errors:
            raise DataError(path, "no SegmentationClass/*.png masks in the zip", FIX)
        return masks, errors


FORMAT = register_format(CvatFormat())
