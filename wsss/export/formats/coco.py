"""COCO instances (``coco.json``): one annotation per 8-connected component of each label.

``rle`` mode (default): ``segmentation`` is pycocotools' compressed RLE with ``counts`` as an ASCII string and
``iscrowd: 1``, the COCO convention for RLE-encoded regions; exact, holes included. ``polygon`` mode: outer contours
from ``cv2.findContours`` with ``iscrowd: 0``. COCO polygons cannot carry holes, so holes are filled, and a
component too small for a polygon (fewer than 3 boundary points) is written as RLE instead; the contour runs
through boundary pixel centres, so a polygon rasterises up to half a pixel inside the mask (approximate: use RLE for
an exact round trip). ``area`` and ``bbox``
(x, y, w, h) are always filled. Each image's wsss id is kept as ``wsss_id``; category ids are the mask values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from wsss.atomic import atomic_write_text
from wsss.errors import DataError
from wsss.export.formats import ReviewFormat, ReviewItem, components, register_format
from wsss.labels import LabelMap

FIX = "pass the COCO instances JSON exported from the review (images, annotations, categories)"


def encode_rle(region: np.ndarray) -> dict:
    """A bool mask as COCO compressed RLE with ASCII ``counts``."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (compressed or uncompressed RLE, or polygons) as a bool (H, W) mask."""
    from pycocotools import mask as mask_util

    if isinstance(seg, dict):
        if [int(v) for v in seg.get("size", [])] != [height, width]:
            raise ValueError(f"RLE size {seg.get('size')} is not the image's [{height}, {width}]")
        rle = seg if isinstance(seg["counts"], str) else mask_util.frPyObjects(seg, height, width)
        if isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        return mask_util.decode(rle) > 0
    rles = mask_util.frPyObjects(seg, height, width)
    return mask_util.decode(mask_util.merge(rles)) > 0


def _annotation(region: np.ndarray, polygon: bool) -> dict:
    ys, xs = np.nonzero(region)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    ann = {"area": int(region.sum()), "bbox": bbox, "iscrowd": 1, "segmentation": None}
    if polygon:
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if polys:
            return ann | {"segmentation": polys, "iscrowd": 0}
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
                {"id": image_id, "file_name": item.image_name, "height": item.height, "width": item.width}
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

    def read(self, path: Path, labels: LabelMap) -> dict[str, np.ndarray]:
        try:
            data = json.loads(Path(path).read_text())
            images = {int(im["id"]): im for im in data["images"]}
            anns = data.get("annotations", [])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(path, f"not a COCO instances file ({type(e).__name__}: {e})", FIX) from None
        masks, names = {}, {}
        for image_id, im in images.items():
            names[image_id] = str(im.get("wsss_id") or Path(im["file_name"]).stem)
            masks[names[image_id]] = np.zeros((int(im["height"]), int(im["width"])), np.uint8)
        bad = []
        for ann in anns:
            image_id, value = int(ann.get("image_id", -1)), int(ann.get("category_id", -1))
            if image_id not in images:
                bad.append(f"annotation {ann.get('id')}: unknown image_id {image_id}")
                continue
            mask = masks[names[image_id]]
            try:
                region = decode_segmentation(ann["segmentation"], *mask.shape)
            except (KeyError, ValueError, TypeError) as e:
                bad.append(f"annotation {ann.get('id')}: {e}")
                continue
            mask[region] = value if 0 <= value <= 255 else 0
            if not 0 <= value <= 255 or labels.name_of(value) is None:
                bad.append(f"annotation {ann.get('id')}: category_id {value} is not a label of this run")
        if bad:
            raise DataError(path, f"{len(bad)} unusable annotation(s): " + "; ".join(bad[:5]), FIX)
        return masks


FORMAT = register_format(CocoFormat())
