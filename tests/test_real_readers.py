"""The review package read by the tools' own readers (pycocotools here), not by wsss' parsers."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.export.formats import ReviewItem
from wsss.export.formats.coco import CocoFormat
from wsss.export.formats.cvat import CvatFormat
from wsss.labels import LabelMap


def _items() -> list[ReviewItem]:
    rng = np.random.default_rng(0)
    a = np.zeros((40, 60), np.uint8)
    a[5:15, 10:30] = 1
    a[25:35, 40:55] = 2
    b = np.zeros((30, 30), np.uint8)
    b[3:9, 3:9] = 1
    b[20, 20] = 1  # a single pixel: its own defect
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
