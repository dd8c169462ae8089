"""The review package: what a person needs to check a run's masks and correct them in an annotation tool.

``build_review`` writes into one folder:

- ``images/<id>.<ext>``: the images (browser-friendly formats copied as they are, others converted to PNG);
- ``overlays/<id>.png``: the mask outlined and filled over the image, beside the CAM heat map over the image;
- ``layers/<id>.{mask,cam,gt}.png``: transparent layers the HTML page toggles over the image;
- ``index.html``: the static review page (:mod:`wsss.export.html`), where a reviewer also accepts or rejects each
  mask and downloads the decisions file that `wsss import-review --format decisions` reads
  (:mod:`wsss.export.review_import`);
- the formats of ``export.formats`` (:mod:`wsss.export.formats`): ``masks/`` + ``labelmap.txt``, ``coco.json``,
  ``cvat.zip``, ``labelstudio.json`` (+ its labeling config).

Ground-truth masks are read here, for display and per-image IoU only: the package is an evaluation artifact.

The page records which masks it shows (:func:`package_identity`: the run folder's name, the masks stage and a
digest of that stage's ``masks/``), so decisions made on it are refused by a run whose masks are not those.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from wsss.atomic import atomic_path
from wsss.cam.io import cam_path, read_cam, read_cam_meta
from wsss.data.images import exif_orientation, read_image, read_mask
from wsss.data.index import read_dataset_info, read_eval_index
from wsss.errors import ConfigError, DataError
from wsss.evaluation import read_pred_mask
from wsss.evaluation.metrics import iou
from wsss.export.config import ExportConfig
from wsss.export.formats import ReviewItem, get_format
from wsss.export.formats.coco import CocoFormat
from wsss.export.formats.labelstudio import LabelStudioFormat
from wsss.export.html import write_page
from wsss.export.overlay import overlay, write_rgb_png
from wsss.hashing import file_sha256
from wsss.labels import IGNORE, LabelMap, class_colour

BROWSER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MASK_STAGES = ("train-segmenter", "retrain", "pseudo-labels")  # newest first: the default masks of a run folder
DECISIONS_FORMAT = "wsss-review-decisions"  # the page's decisions file (see wsss.export.review_import)
DECISIONS_VERSION = 1


@dataclass(frozen=True)
class ReviewSource:
    """Where a run's review material is."""

    index: Path  # prepare/index.csv
    masks_stage: Path  # the stage folder holding masks/ (and confidence.csv or scores.csv)
    cam_stage: Path | None  # the cam stage folder, for heat maps
    report: Path | None  # evaluate/report.json, for the summary table
    classes: list[str]


def run_source(run_dir: Path, masks: str | None = None) -> ReviewSource:
    """The review material of a finished run folder; ``masks`` names the stage (default: the newest that ran)."""
    run_dir = Path(run_dir)
    index = run_dir / "prepare" / "index.csv"
    if not index.is_file():
        raise ConfigError(run_dir, "no finished prepare stage here", "pass a run folder, e.g. runs/ksdd")
    names = [masks] if masks else [s for s in MASK_STAGES if (run_dir / s / "masks").is_dir()]
    if not names or not (run_dir / names[0] / "masks").is_dir():
        found = [s for s in MASK_STAGES if (run_dir / s / "masks").is_dir()]
        raise ConfigError(
            f"{run_dir}/{names[0] if names else '<stage>'}",
            "no masks/ folder of a finished stage",
            f"stages with masks here: {', '.join(found) or 'none (run the pipeline first)'}",
        )
    cam = run_dir / "cam" if (run_dir / "cam" / "cam.json").is_file() else None
    report = run_dir / "evaluate" / "report.json"
    return ReviewSource(index, run_dir / names[0], cam, report if report.is_file() else None, review_classes(run_dir))


def masks_digest(masks_dir: Path) -> str:
    """SHA-256 over the names and contents of every ``*.png`` in a stage's ``masks/``: what a reviewer looked at.

    Content, not the stage manifest's digest: a stage re-run that writes the same masks keeps the decisions valid,
    and a folder without a manifest still has one."""
    lines = "".join(f"{p.name} {file_sha256(p)}\n" for p in sorted(Path(masks_dir).glob("*.png")))
    return hashlib.sha256(lines.encode()).hexdigest()


def package_identity(masks_stage: Path) -> dict[str, Any]:
    """The header of the page's decisions file: format, version, the run (folder name + ``masks_sha256`` of
    :func:`masks_digest`) and the masks stage's name. The digest decides whether the masks are still those the
    reviewer saw; the run's name is there for people (a renamed or copied run folder keeps its masks)."""
    masks_stage = Path(masks_stage)
    return {
        "format": DECISIONS_FORMAT,
        "version": DECISIONS_VERSION,
        "run": {"name": masks_stage.resolve().parent.name, "masks_sha256": masks_digest(masks_stage / "masks")},
        "masks": masks_stage.name,
    }


def review_classes(run_dir: Path) -> list[str]:
    """The classes the run's masks use (the cam stage's, else the dataset's)."""

    if (Path(run_dir) / "cam" / "cam.json").is_file():
        return list(read_cam_meta(Path(run_dir) / "cam")["classes"])
    return list(read_dataset_info(Path(run_dir) / "prepare" / "index.csv").classes)


def _sample_numbers(stage: Path) -> dict[str, dict[str, float]]:
    """Per id: ``score`` and ``confidence`` from the stage's confidence.csv (else scores.csv; confidence from the
    score's distance to 0.5)."""
    path = stage / "confidence.csv"
    if not path.is_file():
        path = stage / "scores.csv"
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            score = float(r.get("score") or "nan")
            conf = float(r["confidence"]) if r.get("confidence") else max(score, 1 - score)
            out[r["id"]] = {"score": score, "confidence": conf}
    return out


GT_COLOUR = (0, 255, 0)


def _layer(mask: np.ndarray, fill_alpha: int, colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """RGBA layer of a label mask: each label's colour (or ``colour``), translucent inside, opaque on the outline."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    for k in (int(v) for v in np.unique(mask) if v != 0):
        region = (mask == k).astype(np.uint8)
        c = colour or class_colour(k)
        rgba[region > 0] = (*c, fill_alpha)
        edge = region - cv2.erode(region, np.ones((3, 3), np.uint8))
        rgba[edge > 0] = (*c, 255)
    return rgba


def _heat(cam: np.ndarray) -> np.ndarray:
    """RGB heat map (H, W, 3) of a [0, 1] map (JET)."""
    u8 = np.clip(np.rint(cam * 255), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def _write_rgba(path: Path, rgba: np.ndarray) -> None:

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise DataError(path, "could not encode the layer", "check disk space")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _shown_as_read(src: Path) -> bool:
    """Whether a browser shows the file as wsss reads it: no alpha or transparency (which wsss drops), no CMYK, no
    16-bit values (which wsss scales)."""

    with Image.open(src) as im:  # a browser may or may not apply EXIF orientation: such a file is re-encoded
        return im.mode in ("1", "L", "P", "RGB") and "transparency" not in im.info and exif_orientation(im) == 1


def _copy_image(src: Path, image: np.ndarray, out: Path, sid: str) -> str:
    """Put the image into ``out/images``: the file itself when browsers show it as wsss read it, else the image as
    read, as PNG; returns its name inside the package."""
    if src.suffix.lower() in BROWSER_SUFFIXES and _shown_as_read(src):
        name = f"images/{sid}{src.suffix.lower()}"
        shutil.copyfile(src, out / name)
    else:
        name = f"images/{sid}.png"
        write_rgb_png(out / name, image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2))
    return name


def build_review(
    src: ReviewSource, out: Path, cfg: ExportConfig, progress_fn: Callable = lambda it, **_: it
) -> dict[str, Path]:
    """Write the review package of ``src`` into ``out``; returns the artifacts written by name."""

    unknown = [f for f in cfg.formats if f not in ("png", "coco", "cvat", "labelstudio")]
    if unknown:
        raise ConfigError("export.formats", f"unknown format(s) {unknown}", "choose from png, coco, cvat, labelstudio")
    out = Path(out)
    for d in ("images", "overlays", "layers"):
        (out / d).mkdir(parents=True, exist_ok=True)
    labels = LabelMap(tuple(src.classes))
    info = read_dataset_info(src.index)
    numbers = _sample_numbers(src.masks_stage)
    masks_dir = src.masks_stage / "masks"
    items, records = [], []
    for row in progress_fn(read_eval_index(src.index), desc="review", unit="img"):
        image = read_image(row.path, "scale")  # prepare admits 16-bit images only with dataset.high_bit_depth: scale
        mask_path = masks_dir / f"{row.id}.png"
        if not mask_path.is_file():
            raise DataError(mask_path, "no mask for an indexed image", f"re-run the stage that wrote {masks_dir}")
        mask = read_pred_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(mask_path, f"mask is {mask.shape}, its image {image.shape[:2]}", "re-run that stage")
        bad = labels.check(mask)
        if bad:
            raise DataError(mask_path, f"values {bad} are not labels of {labels.classes}", "re-run that stage")
        name = _copy_image(Path(row.path), image, out, row.id)
        base = overlay(image, np.where(mask == IGNORE, 0, mask))
        cam = read_cam(cam_path(src.cam_stage, row.id), image.shape[:2]).max(0) if src.cam_stage else None
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        heat = (
            np.repeat(grey[..., None], 3, axis=2)
            if cam is None
            else cv2.addWeighted(np.repeat(grey[..., None], 3, axis=2), 0.5, _heat(cam), 0.5, 0)
        )
        write_rgb_png(out / "overlays" / f"{row.id}.png", np.hstack([base, heat]))
        _write_rgba(out / "layers" / f"{row.id}.mask.png", _layer(mask, 90))
        layers = ["mask"]
        if cam is not None:
            cam_rgba = np.dstack([_heat(cam), np.clip(np.rint(cam * 200), 0, 200).astype(np.uint8)])
            _write_rgba(out / "layers" / f"{row.id}.cam.png", cam_rgba)
            layers.append("cam")
        score_iou = None
        if row.mask is not None:
            gt = read_mask(row.mask, info.mask_threshold)
            _write_rgba(out / "layers" / f"{row.id}.gt.png", _layer(gt.astype(np.uint8), 0, GT_COLOUR))
            layers.append("gt")
            score_iou = iou((mask > 0) & (mask != IGNORE), gt)
        present = [labels.name_of(int(v)) for v in np.unique(mask) if v not in (0, IGNORE)]
        n = numbers.get(row.id, {})
        records.append(
            {
                "id": row.id,
                "split": row.split,
                "image": name,
                "overlay": f"overlays/{row.id}.png",
                "layers": layers,
                "classes": present,
                "score": _finite(n.get("score")),
                "confidence": _finite(n.get("confidence")),
                "iou": _finite(score_iou),
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
            }
        )
        items.append(
            ReviewItem(
                row.id,
                name,
                int(image.shape[0]),
                int(image.shape[1]),
                functools.partial(read_pred_mask, mask_path),
                n.get("score", math.nan),
                n.get("confidence", math.nan),
            )  # fmt: skip
        )
    written = {}
    for fmt_name in cfg.formats:
        fmt = {"coco": CocoFormat(cfg.coco_mode), "labelstudio": LabelStudioFormat(cfg.image_prefix)}.get(fmt_name)
        written[fmt_name] = (fmt or get_format(fmt_name)).write(out, items, labels)
    summary = json.loads(src.report.read_text()) if src.report else None
    package = package_identity(src.masks_stage)
    written["html"] = write_page(out / "index.html", records, src.classes, summary, src.masks_stage.name, package)
    return written


def _finite(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)
