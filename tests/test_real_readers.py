"""The review package read by the tools' own readers, not by wsss' parsers: pycocotools (COCOeval), datumaro (what
CVAT's importer runs: the CVAT zip as ``voc_segmentation``, the COCO file as ``coco_instances``) and Label Studio's
brush decoder (label-studio-converter); and a round trip through each: export, the tool's reader, the tool's writer,
``wsss import-review``, which must give back the masks exported."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import datumaro as dm
import numpy as np
import pytest
from label_studio_converter.brush import decode_rle, encode_rle
from PIL import Image

from wsss.config import ExportConfig
from wsss.errors import DataError
from wsss.export.formats import ReviewItem
from wsss.export.formats.coco import CocoFormat
from wsss.export.formats.cvat import CvatFormat
from wsss.export.formats.labelstudio import LabelStudioFormat
from wsss.export.review import build_review, run_source
from wsss.export.review_import import import_review
from wsss.labels import LabelMap

LABELS = LabelMap(("scratch", "dent"))


def _items() -> list[ReviewItem]:
    rng = np.random.default_rng(0)
    a = np.zeros((40, 60), np.uint8)
    a[5:15, 10:30] = 1
    a[25:35, 40:55] = 2
    b = np.zeros((30, 30), np.uint8)
    b[3:9, 3:9] = 1
    b[20, 20] = 1  # a single pixel: its own defect
    b[2:10, 2:10][b[2:10, 2:10] == 0] = 255  # an uncertain ring around the square, as pseudo-masks have
    yy, xx = np.indices((64, 64))
    speckle = ((rng.random((64, 64)) < 0.5) & (yy % 2 == 0) & (xx % 2 == 0)).astype(np.uint8)  # ~500 lone pixels
    return [
        ReviewItem(sid, f"images/{sid}.png", *m.shape, load_mask=lambda m=m: m)
        for sid, m in (("part_a", a), ("part_b", b), ("speckle", speckle))
    ]


@pytest.mark.parametrize("mode", ["rle", "polygon"])
def test_cocoeval_scores_the_package_against_itself_at_ap_1(tmp_path: Path, mode: str):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = CocoFormat(mode).write(tmp_path, _items()[:2], LabelMap(("scratch", "dent")))
    data = json.loads(path.read_text())
    assert {im["file_name"] for im in data["images"]} == {"part_a.png", "part_b.png"}  # the name, no folder
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(path))
        found = truth.loadRes([a | {"score": 1.0} for a in data["annotations"]])
        ev = COCOeval(truth, found, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]; -1 would mean no ground truth (crowd regions)


def test_cvat_instances_stay_in_the_voc_palette_however_many_components(tmp_path: Path):
    items = _items()
    path = CvatFormat().write(tmp_path, items, LabelMap(("scratch", "dent")))
    from wsss.export.formats import components

    speckle = items[2].load_mask()
    assert sum(1 for _ in components(speckle, [1])) > 255
    with zipfile.ZipFile(path) as z:
        obj = np.asarray(Image.open(io.BytesIO(z.read("SegmentationObject/speckle.png"))).convert("RGB"))
    colours = {tuple(c) for c in obj.reshape(-1, 3).tolist()} - {(0, 0, 0)}
    assert len(colours) == 1  # one instance per label
    back = CvatFormat().read(path, LabelMap(("scratch", "dent")))
    for item in items:
        assert np.array_equal(back[item.id], item.load_mask()), item.id


def _datumaro_masks(ds: dm.Dataset, labels: LabelMap, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Label masks composed from the mask annotations datumaro read (its label names mapped to wsss' values)."""
    names = ds.categories()[dm.AnnotationType.label]
    out = {}
    for item in ds:
        mask = np.zeros(shapes[item.id], np.uint8)
        for ann in item.annotations:
            if ann.type == dm.AnnotationType.mask and names[ann.label].name != "background":
                mask[ann.image.astype(bool)] = labels.value_of(names[ann.label].name)
        out[item.id] = mask
    return out


def _zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder))
    return path


def test_datumaro_reads_the_cvat_zip_pixel_exact(tmp_path: Path):
    """What CVAT's "Segmentation mask 1.1" importer runs; 500 components in one image and uncertain pixels."""
    items = _items()
    with zipfile.ZipFile(CvatFormat().write(tmp_path, items, LABELS)) as z:
        z.extractall(tmp_path / "cvat")
    ds = dm.Dataset.import_from(str(tmp_path / "cvat"), "voc_segmentation")
    got = _datumaro_masks(ds, LABELS, {it.id: (it.height, it.width) for it in items})
    assert set(got) == {it.id for it in items}
    for item in items:
        assert np.array_equal(got[item.id], item.load_mask()), item.id


def test_datumaro_reads_the_coco_file_pixel_exact_and_finds_its_images(tmp_path: Path):
    """The layout docs/usage.md gives: the package's images/ beside annotations/instances_default.json."""
    items = _items()
    (tmp_path / "images").mkdir()
    for it in items:
        cv2.imwrite(str(tmp_path / it.image_name), np.zeros((it.height, it.width), np.uint8))
    coco = CocoFormat("rle").write(tmp_path, items, LABELS)
    (tmp_path / "annotations").mkdir()
    coco.rename(tmp_path / "annotations" / "instances_default.json")
    ds = dm.Dataset.import_from(str(tmp_path), "coco_instances")
    for item in ds:  # each image found by its file_name: the frame names CVAT and datumaro match
        assert Path(item.media.path) == tmp_path / "images" / f"{item.id}.png"
    got = _datumaro_masks(ds, LABELS, {it.id: (it.height, it.width) for it in items})
    for item in items:
        assert np.array_equal(got[item.id], item.load_mask()), item.id


def test_label_studio_decoder_reads_every_brush_result(tmp_path: Path):
    items = _items()
    tasks = json.loads(LabelStudioFormat().write(tmp_path, items, LABELS).read_text())
    masks = {it.id: it.load_mask() for it in items}
    results = [(t["data"]["wsss_id"], r) for t in tasks for r in t["predictions"][0]["result"]]
    assert len(results) == 5  # scratch + dent, scratch + uncertain, scratch
    for sid, r in results:
        h, w = r["original_height"], r["original_width"]
        decoded = np.reshape(decode_rle(r["value"]["rle"]), (h, w, 4))[:, :, 3]
        assert np.array_equal(decoded > 0, masks[sid] == LABELS.value_of(r["value"]["brushlabels"][0])), sid


def _exported(run: Path) -> dict[str, np.ndarray]:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (run / "retrain" / "masks").glob("*.png")}


def _assert_reviewed_equal(run: Path, ids: list[str]) -> None:
    exported = _exported(run)
    assert any(exported[sid].any() for sid in ids)  # defects made the trip, not only empty masks
    for sid in ids:
        back = cv2.imread(str(run / "reviewed" / "masks" / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back, exported[sid]), sid


def test_round_trip_cvat_through_datumaro(review_run: Path, tmp_path: Path):
    """Export, datumaro's voc_segmentation import (CVAT's), its export (CVAT's "Segmentation mask 1.1"), import."""
    pkg = tmp_path / "pkg"
    build_review(run_source(review_run, "retrain"), pkg, ExportConfig(formats=["cvat"]))
    with zipfile.ZipFile(pkg / "cvat.zip") as z:
        z.extractall(tmp_path / "in")
    ds = dm.Dataset.import_from(str(tmp_path / "in"), "voc_segmentation")
    ds.export(str(tmp_path / "out"), "voc_segmentation", save_media=False)
    summary = import_review("cvat", _zip_folder(tmp_path / "out", tmp_path / "corrected.zip"), review_run)
    assert sorted(summary.imported) == sorted(_exported(review_run))
    _assert_reviewed_equal(review_run, summary.imported)


def test_round_trip_coco_through_datumaro(review_run: Path, tmp_path: Path):
    """datumaro renumbers the categories (uncertain becomes 3): the import matches them by name."""
    pkg = tmp_path / "pkg"
    build_review(run_source(review_run, "retrain"), pkg, ExportConfig(formats=["coco"]))
    (pkg / "annotations").mkdir()
    shutil.copy(pkg / "coco.json", pkg / "annotations" / "instances_default.json")
    ds = dm.Dataset.import_from(str(pkg), "coco_instances")
    ds.export(str(tmp_path / "out"), "coco_instances", save_media=False, segmentation_mode="mask")
    exported = tmp_path / "out" / "annotations" / "instances_default.json"
    assert {c["name"]: c["id"] for c in json.loads(exported.read_text())["categories"]}["uncertain"] != 255
    summary = import_review("coco", exported, review_run)
    assert sorted(summary.imported) == sorted(_exported(review_run))
    _assert_reviewed_equal(review_run, summary.imported)


def test_a_coco_export_that_dropped_tiny_regions_is_refused_with_the_fix(tmp_path: Path):
    """datumaro's polygon export leaves a one-pixel component as an empty polygon list: said, with the setting."""
    items = _items()[1:2]
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / items[0].image_name), np.zeros((30, 30), np.uint8))
    coco = CocoFormat("rle").write(tmp_path, items, LABELS)
    (tmp_path / "annotations").mkdir()
    coco.rename(tmp_path / "annotations" / "instances_default.json")
    dm.Dataset.import_from(str(tmp_path), "coco_instances").export(
        str(tmp_path / "out"), "coco_instances", save_media=False, segmentation_mode="polygons"
    )
    with pytest.raises(DataError, match="too small for a polygon.*segmentation-mode mask"):
        CocoFormat().read(tmp_path / "out" / "annotations" / "instances_default.json", LABELS)


def test_round_trip_label_studio_through_its_converter(review_run: Path, tmp_path: Path):
    """Label Studio's decoder reads each prediction, its encoder writes the reviewer's annotation back."""
    pkg = tmp_path / "pkg"
    build_review(run_source(review_run, "retrain"), pkg, ExportConfig(formats=["labelstudio"]))
    tasks = json.loads((pkg / "labelstudio.json").read_text())
    for t in tasks:
        result = []
        for r in t["predictions"][0]["result"]:
            h, w = r["original_height"], r["original_width"]
            rgba = np.reshape(decode_rle(r["value"]["rle"]), (h, w, 4))
            value = r["value"] | {"rle": [int(v) for v in encode_rle(rgba.ravel())]}
            result.append(r | {"value": value})
        t["annotations"] = [{"id": 1, "result": result, "was_cancelled": False}]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    summary = import_review("labelstudio", tmp_path / "export.json", review_run)
    assert sorted(summary.imported) == sorted(_exported(review_run))
    _assert_reviewed_equal(review_run, summary.imported)
