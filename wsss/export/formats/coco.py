"""COCO instances (``coco.json``): one annotation per 8-connected component of each label.

``rle`` mode (default): ``segmentation`` is pycocotools' compressed RLE with ``counts`` as an ASCII string; exact,
holes included. ``polygon`` mode: outer contours from ``cv2.findContours``. Every annotation has ``iscrowd: 0``: each
is one defect, an object to find, never a crowd region that COCO's tools ignore (``COCOeval`` would find no ground
truth, detectron2-style loaders drop crowds); RLE needs no crowd flag. An image's ``file_name`` is its file name in
the package's ``images/`` folder, without the folder, as CVAT and datumaro match frames by name. COCO polygons cannot carry holes, so holes are filled, and a
component too small for a polygon (fewer than 3 boundary points) is written as RLE instead; the contour runs
through boundary pixel centres, so a polygon rasterises up to half a pixel inside the mask (approximate: use RLE for
an exact round trip). ``area`` and ``bbox``
(x, y, w, h) are always filled. Each image's wsss id is kept as ``wsss_id``; category ids are the mask values. On the
way back categories are matched by name, as a tool that re-exports the file renumbers them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

from wsss.atomic import atomic_write_text
from wsss.errors import DataError
from wsss.export.formats import ImageSizes, ReviewFormat, ReviewItem, components, register_format
from wsss.labels import LabelMap

FIX = "pass the COCO instances JSON exported from the review (images, annotations, categories)"


def encode_rle(region: np.ndarray) -> dict:
    """A bool mask as COCO compressed RLE with ASCII ``counts``."""

    rle = mask_util.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_string_counts(counts: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, in Python so that a malformed
    string is a ValueError instead of a decoder reading or writing out of bounds)."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts):
                raise ValueError("RLE counts string ends inside a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts string holds {counts[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (compressed or uncompressed RLE, or polygons) as a bool (H, W) mask. Everything is
    checked before pycocotools sees it (its C decoder trusts the run lengths): an RLE's size must be the image's
    and its runs must cover exactly its pixels; a polygon is a list of at least three x, y points."""

    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and size == [height, width]):
            raise ValueError(f"RLE size {size!r} is not the image's [{height}, {width}]")
        if isinstance(counts, str):
            runs = rle_string_counts(counts)
        elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            runs = counts
        else:
            raise ValueError("RLE counts must be a string or a list of integers")
        if any(v < 0 for v in runs) or sum(runs) != height * width:
            raise ValueError(f"RLE runs do not cover the image's {height * width} pixels exactly")
        rle = seg if isinstance(counts, str) else mask_util.frPyObjects(seg, height, width)
        if isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        return mask_util.decode(rle) > 0
    if isinstance(seg, list) and not seg:
        raise ValueError(
            "an empty polygon list: the tool dropped a region too small for a polygon (export masks as RLE: "
            "datumaro --segmentation-mode mask, CVAT's COCO export keeps masks)"
        )
    if not all(
        isinstance(poly, list)
        and len(poly) >= 6
        and len(poly) % 2 == 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e7 for v in poly)
        for poly in seg
    ):
        raise ValueError("a polygon must be a list of at least three x, y points")
    rles = mask_util.frPyObjects(seg, height, width)
    return mask_util.decode(mask_util.merge(rles)) > 0


def _annotation(region: np.ndarray, polygon: bool) -> dict:
    ys, xs = np.nonzero(region)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    ann = {"area": int(region.sum()), "bbox": bbox, "iscrowd": 0, "segmentation": None}
    if polygon:
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if polys:
            return ann | {"segmentation": polys}
    return ann | {"segmentation": encode_rle(region)}


class CocoFormat(ReviewFormat):
    name = "coco"
    default_file = "coco.json"

    def __init__(self, mode: str = "rle"):
        if mode not in ("rle", "polygon"):
            raise ValueError(f"COCO mode must be rle or polygon, got {mode!r}")
        self.mode = mode

    def write(self, package: Path, items: Sequence[ReviewItem], labels: LabelMap) -> Path:
        images, annotations = [], []
        for image_id, item in enumerate(items, start=1):
            images.append(
                {"id": image_id, "file_name": Path(item.image_name).name, "height": item.height, "width": item.width}
                | {"wsss_id": item.id}
            )
            mask = item.load_mask()
            for value, region in components(mask, [int(v) for v in np.unique(mask) if v != 0]):
                ann = _annotation(region, self.mode == "polygon")
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": value} | ann)
        categories = [{"id": v, "name": n, "supercategory": "defect"} for v, n, _ in labels.entries() if v != 0]
        data = {
            "info": {"description": "wsss review package", "version": "1.0"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        path = package / self.default_file
        atomic_write_text(path, json.dumps(data))
        return path

    def read(self, path: Path, labels: LabelMap, sizes: ImageSizes | None = None) -> dict[str, np.ndarray]:
        """The masks of a COCO instances file: its structure is checked first (:func:`_structure`), each image's
        declared size against its run image before its mask is allocated, then each annotation decoded."""
        sizes = sizes or ImageSizes()
        try:
            data = json.loads(Path(path).read_bytes())
        except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8
            raise DataError(path, f"not a COCO instances file ({type(e).__name__}: {e})", FIX) from None
        problems = _structure(data)
        if problems:
            raise DataError(path, f"not a COCO instances file: {'; '.join(problems[:5])}", FIX)
        masks, names, bad = {}, {}, []
        for im in data["images"]:
            sid = _image_id(im)
            why = sizes.problem(sid, im["height"], im["width"])
            if why:
                bad.append(f"image {im['id']} ({sid}): {why}")
                continue
            names[im["id"]] = sid
            masks[sid] = np.zeros((im["height"], im["width"]), np.uint8)
        values = _category_values(data.get("categories"), labels)
        for ann in data.get("annotations", []):
            image_id, category = ann["image_id"], ann["category_id"]
            if image_id not in names:
                if image_id not in {im["id"] for im in data["images"]}:
                    bad.append(f"annotation {ann.get('id')}: unknown image_id {image_id}")
                continue  # its image was refused above
            value = values(category)
            if value is None:
                bad.append(f"annotation {ann.get('id')}: category_id {category} is not a label of this run")
                continue
            mask = masks[names[image_id]]
            try:
                region = decode_segmentation(ann["segmentation"], *mask.shape)
            except (KeyError, ValueError, TypeError, OverflowError) as e:
                bad.append(f"annotation {ann.get('id')}: unreadable segmentation ({e})")
                continue
            mask[region] = value
        if bad:
            raise DataError(path, f"{len(bad)} unusable image(s) or annotation(s): " + "; ".join(bad[:5]), FIX)
        return masks


def _category_values(categories: object, labels: LabelMap):
    """category_id -> mask value. A tool that re-exports the file numbers its categories its own way (datumaro:
    1..K in order, so ``uncertain`` becomes K + 1), so ids are matched through their names in ``categories``; an id
    that file does not name is read as the mask value itself (the review package's own numbering)."""
    named = {}
    for c in categories if isinstance(categories, list) else []:
        if isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str):
            named[c["id"]] = labels.value_of(c["name"])

    def value(category: int) -> int | None:
        if category in named:
            return named[category]
        return category if 0 < category <= 255 and labels.name_of(category) is not None else None

    return value


def _image_id(im: dict) -> str:
    """The wsss id of a COCO image: its ``wsss_id``, else its file name's stem."""
    own = im.get("wsss_id")
    if isinstance(own, str) and own:
        return own
    name = im.get("file_name")
    return Path(name).stem if isinstance(name, str) else ""


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _structure(data: object) -> list[str]:
    """What a COCO instances file lacks: ``images`` (each with an integer ``id``, a ``file_name`` string and integer
    ``height`` and ``width``) and optional ``annotations`` (each with integer ``image_id`` and ``category_id`` and a
    ``segmentation`` object or list)."""
    if not isinstance(data, dict):
        return ["the top level is not an object"]
    images, anns = data.get("images"), data.get("annotations", [])
    if not isinstance(images, list):
        return ["'images' is missing or not a list"]
    if not isinstance(anns, list):
        return ["'annotations' is not a list"]
    problems = []
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            problems.append(f"images[{i}] is not an object")
            continue
        for key in ("id", "height", "width"):
            if not _is_int(im.get(key)):
                problems.append(f"images[{i}].{key} is missing or not an integer")
        if not isinstance(im.get("file_name"), str) and not isinstance(im.get("wsss_id"), str):
            problems.append(f"images[{i}].file_name is missing or not a string")
    ids = [im.get("id") for im in images if isinstance(im, dict)]
    if len(set(map(repr, ids))) != len(ids):
        problems.append("two images share an id")
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            problems.append(f"annotations[{i}] is not an object")
            continue
        for key in ("image_id", "category_id"):
            if not _is_int(ann.get(key)):
                problems.append(f"annotations[{i}].{key} is missing or not an integer")
        if not isinstance(ann.get("segmentation"), (dict, list)):
            problems.append(f"annotations[{i}].segmentation is missing or not an RLE object or polygon list")
    return problems


FORMAT = register_format(CocoFormat())
