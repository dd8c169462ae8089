"""Hostile or malformed review imports: each is refused with the file named and nothing imported, in well under a
second and without allocating what the file declares; mutated files never end in a traceback (hypothesis)."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from wsss.cli import cli
from wsss.config import load_config
from wsss.errors import WsssError
from wsss.export import labelstudio_rle
from wsss.export.formats import ImageSizes
from wsss.export.formats.coco import encode_rle
from wsss.export.formats.cvat import labelmap_text, parse_labelmap
from wsss.export.review_import import import_decisions, import_review
from wsss.labels import LabelMap
from wsss.runs import Run

H, W = 24, 40


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared run of six tiny images (what import-review reads: the index and the image sizes)."""
    root = tmp_path_factory.mktemp("probes")
    rng = np.random.default_rng(0)
    for cls in ("ok", "scratch"):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / "data" / cls / f"{cls}{i}.png"), rng.integers(0, 255, (H, W), dtype=np.uint8))
    cfg = load_config(None, ["dataset.kind=folder", f"dataset.root={root / 'data'}"])
    Run(root / "run", cfg, echo=lambda *_: None).run_stage("prepare")
    return root / "run"


def ids(run: Path) -> list[str]:
    return [line.split(",", 1)[0] for line in (run / "prepare" / "index.csv").read_text().splitlines()[1:]]


def refused(run: Path, fmt: str, path: Path, *needles: str) -> str:
    before = sorted(p.name for p in run.iterdir())
    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, ["import-review", "--format", fmt, str(path), "--run", str(run)])
    assert time.perf_counter() - t0 < 5, "refused only after decoding what the file declared"
    assert r.exit_code == 1, r.output
    assert str(path) in r.output and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in r.output, (n, r.output)
    assert sorted(p.name for p in run.iterdir()) == before  # nothing imported
    return r.output


def coco(run: Path, **image) -> dict:
    sid = ids(run)[0]
    im = {"id": 1, "file_name": f"images/{sid}.png", "height": H, "width": W, "wsss_id": sid} | image
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": encode_rle(np.ones((H, W), bool))}
    return {"images": [im], "annotations": [ann], "categories": [{"id": 1, "name": "scratch"}]}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d["images"][0].pop("height"), "images[0].height is missing"),
        (lambda d: d["images"][0].update(height=-5), "size -5x40 is not positive"),
        (lambda d: d["annotations"][0].update(category_id="1"), "category_id is missing or not an integer"),
        (lambda d: d.update(annotations="annotations"), "'annotations' is not a list"),
        (lambda d: d["images"][0].update(height=100_000, width=100_000), "is not its image's 24x40"),
        (lambda d: d["annotations"][0]["segmentation"].update(counts=[H * W * 50]), "do not cover the image"),
        (lambda d: d["annotations"][0]["segmentation"].update(counts="\x7f\x7f"), "RLE counts string"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, "x", 4, 5, 6]]), "polygon"),
        (lambda d: d["images"][0].update(wsss_id="nobody"), "not in the run's index: nobody"),
    ],
)
def test_malformed_coco_is_refused_naming_the_file(run: Path, tmp_path: Path, change, needle: str):
    data = coco(run)
    change(data)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    refused(run, "coco", path, needle)


def test_a_tiny_coco_file_declaring_a_huge_image_costs_nothing(run: Path, tmp_path: Path):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco(run, height=2_000_000_000, width=2_000_000_000)))
    assert path.stat().st_size < 512
    refused(run, "coco", path, "is not its image's")


def test_label_studio_sizes_and_streams_are_checked_before_allocation(run: Path, tmp_path: Path):
    sid = ids(run)[0]
    huge = [255, 255, 255, 255, 0, 0, 0, 0]  # a brush stream declaring 2^32 - 1 values
    result = {"type": "brushlabels", "original_height": H, "original_width": W}
    for r, needle in [
        (result | {"original_height": 90_000, "original_width": 90_000}, "is not its image's"),
        (result | {"original_height": "24"}, "whole numbers"),
        (result | {"value": {"brushlabels": ["scratch"], "rle": huge}}, "declares 4294967295 values"),
        (result | {"value": {"brushlabels": ["scratch"], "rle": ["a"]}}, "list of bytes"),
        (result | {"value": "x"}, "without its label"),
    ]:
        path = tmp_path / "ls.json"
        path.write_text(json.dumps([{"data": {"wsss_id": sid}, "annotations": [{"result": [r]}]}]))
        refused(run, "labelstudio", path, needle)
    path.write_text(json.dumps([{"data": "x", "annotations": 5}]))
    refused(run, "labelstudio", path, "'data' is not an object")


def _cvat(path: Path, labelmap: bytes, pngs: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("labelmap.txt", labelmap)
        for name, data in pngs.items():
            z.writestr(f"SegmentationClass/{name}.png", data)
    return path


def _png(shape: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (shape[1], shape[0])).save(buf, "PNG")
    return buf.getvalue()


def test_cvat_labelmaps_and_oversized_pngs_are_refused(run: Path, tmp_path: Path):
    sid = ids(run)[0]
    good = labelmap_text(LabelMap(("scratch",))).encode()
    refused(run, "cvat", _cvat(tmp_path / "a.zip", b"background\n", {sid: _png((H, W))}), "labelmap.txt", "line 1")
    refused(run, "cvat", _cvat(tmp_path / "b.zip", b"\xff\xfe:0,0,0::\n", {sid: _png((H, W))}), "labelmap.txt")
    refused(run, "cvat", _cvat(tmp_path / "c.zip", b"x:1,2::\n", {sid: _png((H, W))}), "name:r,g,b")
    t0 = time.perf_counter()
    big = _png((9000, 9000))  # 9000 x 9000 black: a small file, 81 megapixels decoded
    zipped = _cvat(tmp_path / "d.zip", good, {sid: big})
    refused(run, "cvat", zipped, "is not its image's 24x40")
    assert time.perf_counter() - t0 < 10


def test_a_class_name_with_colons_round_trips_through_the_cvat_labelmap():
    labels = LabelMap(("crack: hairline", "a:b:c"))
    names = set(parse_labelmap(labelmap_text(labels)).values())
    assert {"crack: hairline", "a:b:c"} <= names


def _json_values():
    return st.recursive(
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


def _mutate(data, path: list, value):
    """``data`` with the node at ``path`` (indices into nested lists and dicts, taken modulo their length)
    replaced by ``value``."""
    if not path or not isinstance(data, (list, dict)) or not data:
        return value
    keys = list(range(len(data))) if isinstance(data, list) else list(data)
    key = keys[path[0] % len(keys)]
    data[key] = _mutate(data[key], path[1:], value)
    return data


@pytest.mark.parametrize("fmt", ["coco", "labelstudio", "decisions"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.integers(0, 10), max_size=5), value=_json_values())
def test_mutated_import_files_import_or_fail_cleanly(run: Path, tmp_path: Path, fmt: str, path: list, value):
    sid = ids(run)[0]
    if fmt == "coco":
        data = coco(run)
    elif fmt == "labelstudio":
        r = {"type": "brushlabels", "original_height": H, "original_width": W}
        r |= {"value": {"brushlabels": ["scratch"], "rle": labelstudio_rle.encode(np.ones((H, W), bool))}}
        data = [{"data": {"wsss_id": sid}, "annotations": [{"result": [r]}]}]
    else:
        data = {"format": "wsss-review-decisions", "version": 1, "run": {"name": "run", "masks_sha256": "x"}}
        data |= {"masks": "pseudo-labels", "decisions": {sid: "accept"}}
    file = tmp_path / f"{fmt}.json"
    file.write_text(json.dumps(_mutate(data, path, value)))
    try:
        if fmt == "decisions":
            import_decisions(file, run)
        else:
            import_review(fmt, file, run)
    except WsssError as e:
        assert str(file) in str(e) or "nothing imported" in str(e) or e.where
    finally:
        shutil.rmtree(run / "reviewed", ignore_errors=True)


def test_the_image_sizes_check_needs_whole_positive_numbers():
    sizes = ImageSizes()
    assert sizes.problem("a", True, 3) and sizes.problem("a", 2.0, 3) and sizes.problem("a", 0, 3)
    assert sizes.problem("a", 10_000, 10_000) and sizes.problem("a", 10, 10) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labelmap=st.binary(max_size=80), png=st.binary(max_size=200), keep_header=st.booleans())
def test_mutated_cvat_zips_import_or_fail_cleanly(run: Path, tmp_path: Path, labelmap: bytes, png: bytes, keep_header):
    sid = ids(run)[0]
    data = (_png((H, W))[:33] + png) if keep_header else png  # a real PNG header with garbage after it, or garbage
    path = _cvat(tmp_path / "m.zip", labelmap, {sid: data})
    try:
        import_review("cvat", path, run)
    except WsssError as e:
        assert str(path) in str(e) or e.where
    finally:
        shutil.rmtree(run / "reviewed", ignore_errors=True)
