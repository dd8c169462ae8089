"""Dataset validation: the report of a good dataset, every bad input reported together, and the real data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from wsss.config import DatasetConfig
from wsss.data.base import DatasetAdapter, Sample, create_adapter
from wsss.data.validate import validate_samples
from wsss.errors import DataError, ManyErrors

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def img(path: Path, value: int = 100, shape: tuple[int, ...] = (8, 10), dtype: type = np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, dtype))
    return path


def folder_set(root: Path, **kw: object) -> tuple[list[Sample], DatasetAdapter]:
    adapter = create_adapter(DatasetConfig(kind="folder", root=str(root), **kw), root)
    return adapter.scan(), adapter


def test_report_of_a_good_dataset(tmp_path: Path) -> None:
    img(tmp_path / "ok" / "a.png", shape=(8, 10))
    img(tmp_path / "ok" / "b.png", shape=(12, 6))
    img(tmp_path / "ok" / "b_mask.png", 0, shape=(12, 6))
    img(tmp_path / "scratch" / "c.png")
    img(tmp_path / "scratch" / "c_mask.png", 255)
    img(tmp_path / "dent" / "d.png")
    img(tmp_path / "dent" / "d_mask.png", 0)  # defective but empty mask: a warning
    rgba = np.full((8, 10, 4), 50, np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "dent" / "e.png")
    samples, adapter = folder_set(tmp_path)
    r = validate_samples(samples, adapter, workers=2)
    assert (r.n_images, r.n_defective, r.n_with_mask) == (5, 3, 3)
    assert r.class_counts == {"dent": 2, "ok": 2, "scratch": 1}
    assert (r.size_min, r.size_max, r.channels) == ((6, 8), (10, 12), 3)
    assert r.conversions == [(str(tmp_path / "dent" / "e.png"), "RGBA -> RGB (alpha dropped)")]
    assert (
        r.warnings[0] == f"{tmp_path / 'dent' / 'd_mask.png'}: image labelled defective (dent) but mask empty at >= 1"
    )
    # handled by themselves, but said: several sizes, gray mixed with colour, sides under 32 px
    assert r.warnings[1].startswith("2 different image sizes (aspect H/W 0.80..2.00)")
    assert r.warnings[2] == "4 grayscale and 1 colour images: grayscale images are repeated to 3 channels"
    assert r.warnings[3] == "5 image(s) with a side under 32 px: they are upscaled to the input size"
    # every class of this tiny set is too small to reach all three splits
    assert r.warnings[6] == (
        f"class 'scratch' has only 1 image(s), e.g. {tmp_path / 'scratch' / 'c.png'}: too few to reach the training, "
        "validation and test splits; check its label"
    )
    assert [w.split(" has only")[0] for w in r.warnings[4:]] == ["class 'dent'", "class 'ok'", "class 'scratch'"]
    assert r.sizes[samples[0].id] == (8, 10) and len(r.sizes) == 5
    data = json.loads(json.dumps(r.to_json()))
    assert data["n_ok"] == 2 and data["conversions"][0]["what"] == "RGBA -> RGB (alpha dropped)"
    md = r.to_markdown()
    assert "- images: 5 (3 defective, 2 ok)" in md and "| dent | 2 |" in md and "## Warnings (7)" in md


def test_all_bad_files_reported_together(tmp_path: Path) -> None:
    img(tmp_path / "ok" / "good.png")
    (tmp_path / "ok" / "zero.png").write_bytes(b"")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "ok" / "cut.jpg"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / "ok" / "cut.jpg").read_bytes()
    (tmp_path / "ok" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "crack").mkdir()
    (tmp_path / "crack" / "junk.png").write_bytes(b"\x89PNG not really")
    img(tmp_path / "crack" / "deep.png", 4000, dtype=np.uint16)
    img(tmp_path / "crack" / "sized.png")
    img(tmp_path / "crack" / "sized_mask.png", 255, shape=(9, 10))
    samples, adapter = folder_set(tmp_path)
    with pytest.raises(ManyErrors) as e:
        validate_samples(samples, adapter)
    msg = str(e.value)
    assert msg.startswith(f"5 problem(s): dataset {tmp_path} failed validation")
    fix = "(re-copy the file from the original source, or remove it from the dataset)"
    assert f"{tmp_path / 'ok' / 'zero.png'}: empty file (0 bytes) {fix}" in msg
    assert f"{tmp_path / 'ok' / 'cut.jpg'}: truncated image file {fix}" in msg
    assert f"{tmp_path / 'crack' / 'junk.png'}: not a readable image" in msg
    assert f"{tmp_path / 'crack' / 'deep.png'}: 16-bit image (mode I;16, values 4000..4000) (convert" in msg
    assert "or set dataset.high_bit_depth: scale" in msg
    assert f"{tmp_path / 'crack' / 'sized_mask.png'}: mask is 10x9 (WxH) but its image sized.png is 10x8" in msg


def test_16bit_accepted_when_scaled(tmp_path: Path) -> None:
    img(tmp_path / "ok" / "a.png", 65535, dtype=np.uint16)
    img(tmp_path / "crack" / "b.png")
    samples, adapter = folder_set(tmp_path, high_bit_depth="scale")
    r = validate_samples(samples, adapter)
    assert r.conversions == [(str(tmp_path / "ok" / "a.png"), "16-bit -> 8-bit (value / 257)")]


@pytest.mark.parametrize("classes", [("ok",), ("crack",)])
def test_only_one_class(tmp_path: Path, classes: tuple[str, ...]) -> None:
    for c in classes:
        img(tmp_path / c / "a.png")
        img(tmp_path / c / "b.png")
    samples, adapter = folder_set(tmp_path)
    label = "ok" if classes == ("ok",) else "crack"
    with pytest.raises(
        DataError, match=rf"all 2 images have the same label \({label}\): the dataset needs at least two"
    ):
        validate_samples(samples, adapter)


def test_defect_types_without_ok_images_only_warn(tmp_path: Path) -> None:
    img(tmp_path / "crack" / "a.png")
    img(tmp_path / "dent" / "b.png")
    img(tmp_path / "dent" / "b_mask.png", 0)
    samples, adapter = folder_set(tmp_path)
    r = validate_samples(samples, adapter)
    assert any(w.startswith("no defect-free images") for w in r.warnings)


def test_ok_image_with_nonempty_mask_warns(tmp_path: Path) -> None:
    img(tmp_path / "ok" / "a.png")
    img(tmp_path / "ok" / "a_mask.png", 255)
    img(tmp_path / "crack" / "b.png")
    samples, adapter = folder_set(tmp_path)
    assert "labelled defect-free but its mask has pixels >= 1" in validate_samples(samples, adapter).warnings[0]


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("path,label\n")
    adapter = create_adapter(DatasetConfig(kind="csv", root=str(tmp_path / "list.csv")), tmp_path / "list.csv")
    with pytest.raises(DataError, match=r"list\.csv: no images found \(dataset kind 'csv'\) \(check dataset.root"):
        validate_samples(adapter.scan(), adapter)


def test_duplicate_ids_name_both_files(tmp_path: Path) -> None:
    a, b = img(tmp_path / "ok" / "a.png"), img(tmp_path / "crack" / "a.png")
    c = img(tmp_path / "crack" / "c.png")
    _, adapter = folder_set(tmp_path)
    samples = [Sample(id="a", path=a), Sample(id="a", path=b, labels=("crack",)), Sample(id="c", path=c)]
    with pytest.raises(DataError) as e:
        validate_samples(samples, adapter)
    assert str(e.value) == (
        f"{b}: duplicate id 'a': {a} has the same id (give the files distinct names or folders, or list each file once)"
    )


@pytest.mark.slow
def test_real_datasets() -> None:
    if not (SHARED_DATA / "mtd").is_dir() or not (SHARED_DATA / "ksdd").is_dir():
        pytest.skip(f"real datasets not found under {SHARED_DATA} (see ../shared/data/README.md)")
    mtd = create_adapter(DatasetConfig(kind="mtd", root=str(SHARED_DATA / "mtd")), SHARED_DATA / "mtd")
    r = validate_samples(mtd.scan(), mtd)
    assert (r.n_images, r.n_defective, r.class_counts["ok"], r.n_with_mask) == (1344, 392, 952, 1344)
    assert len(r.warnings) == 4  # the 4 MT_Uneven images with empty masks
    ksdd = create_adapter(DatasetConfig(kind="ksdd", root=str(SHARED_DATA / "ksdd")), SHARED_DATA / "ksdd")
    samples = ksdd.scan()
    r = validate_samples(samples, ksdd)
    assert (r.n_images, r.n_defective, r.channels) == (399, 52, 1)
    groups = {s.group for s in samples}
    assert len(groups) == 48 and "kos26" not in groups and "kos34" not in groups


def test_images_over_the_megapixel_limit_are_refused_with_the_fix(tmp_path: Path) -> None:
    img(tmp_path / "ok" / "a.png", shape=(8, 10))
    img(tmp_path / "scratch" / "big.png", shape=(40, 50))
    samples, adapter = folder_set(tmp_path)
    with pytest.raises(DataError) as e:
        validate_samples(samples, adapter, max_megapixels=0.001)  # 1000 px: the 2000 px image is over it
    text = str(e.value)
    assert "big.png" in text and "50x40 is 0.0 megapixels, over prepare.max_megapixels (0.001)" in text
    assert "crop or tile" in text and "a.png" not in text
