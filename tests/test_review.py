"""The review loop: codecs, the formats' layouts, export -> import identity, bad imports, reviewed masks."""

from __future__ import annotations

import contextlib
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from wsss.cli import cli
from wsss.config import ExportConfig
from wsss.errors import ManyErrors
from wsss.export import labelstudio_rle
from wsss.export.formats import ReviewItem, get_format
from wsss.export.formats.coco import CocoFormat
from wsss.export.review import build_review, run_source
from wsss.export.review_import import import_review
from wsss.labels import LabelMap


def cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    hole = np.zeros((20, 24), np.uint8)
    hole[3:17, 4:20] = 1
    hole[7:12, 9:14] = 0  # a hole
    single = np.zeros((9, 7), np.uint8)
    single[4, 3] = 1
    corner = np.zeros((5, 6), np.uint8)
    corner[0, 0] = corner[-1, -1] = 1
    return {
        "empty": np.zeros((13, 17), np.uint8),
        "full": np.ones((11, 8), np.uint8),
        "single": single,
        "corner": corner,
        "hole": hole,
        "random": (rng.random((31, 29)) < 0.4).astype(np.uint8),
        "long": np.pad(np.ones((1, 40_000), np.uint8), ((0, 1), (0, 0))),  # a run longer than 2^16 RGBA values
    }


def reference_encode(mask: np.ndarray) -> list[int]:
    """Label Studio converter's encoder (brush.py): runs of one as literal blocks, longer runs by size class."""
    arr = np.repeat((mask > 0).astype(np.uint8).ravel() * 255, 4)
    bits = f"{arr.size:032b}{7:05b}" + "".join(f"{x - 1:04b}" for x in (3, 4, 8, 16))
    change = np.flatnonzero(np.diff(arr.astype(int))) + 1
    starts, ends = np.r_[0, change], np.r_[change, arr.size]
    for s, e in zip(starts, ends, strict=True):
        n, v = int(e - s), int(arr[s])
        if n == 1:
            bits += f"000000{v:08b}"
            continue
        while n > 2**16:
            bits += f"111{2**16 - 1:016b}{v:08b}"
            n -= 2**16
        size = 0 if n <= 8 else 1 if n <= 16 else 2 if n <= 256 else 3
        bits += f"1{size:02b}{n - 1:0{(3, 4, 8, 16)[size]}b}{v:08b}"
    bits += "0" * (8 - len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


@pytest.mark.parametrize("name", list(cases()))
def test_label_studio_rle_round_trips_and_reads_the_reference_encoding(name: str):
    mask = cases()[name].astype(bool)
    ours = labelstudio_rle.encode(mask)
    assert all(0 <= b <= 255 for b in ours)
    assert np.array_equal(labelstudio_rle.decode(ours, *mask.shape), mask)
    assert np.array_equal(labelstudio_rle.decode(reference_encode(mask), *mask.shape), mask)
    with pytest.raises(ValueError, match="needs"):
        labelstudio_rle.decode(ours, mask.shape[0] + 1, mask.shape[1])


@pytest.mark.parametrize("name", list(cases()))
def test_coco_rle_round_trips_exactly(name: str, tmp_path: Path):
    mask = cases()[name]
    item = ReviewItem("x", "images/x.png", *mask.shape, load_mask=lambda: mask)
    labels = LabelMap(("defect",))
    path = CocoFormat("rle").write(tmp_path, [item], labels)
    data = json.loads(path.read_text())
    for ann in data["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0  # a defect, not a crowd
        assert ann["area"] > 0 and len(ann["bbox"]) == 4
    assert np.array_equal(CocoFormat().read(path, labels)["x"], mask)


def test_coco_polygon_mode_fills_holes_and_keeps_tiny_regions_as_rle(tmp_path: Path):
    c = cases()
    mask = c["hole"].copy()
    mask[0, 0] = 1  # a single pixel: too small for a polygon
    item = ReviewItem("x", "images/x.png", *mask.shape, load_mask=lambda: mask)
    path = CocoFormat("polygon").write(tmp_path, [item], LabelMap(("defect",)))
    anns = json.loads(path.read_text())["annotations"]
    assert sorted(a["iscrowd"] for a in anns) == [0, 0]
    assert sorted(isinstance(a["segmentation"], dict) for a in anns) == [False, True]  # a polygon and an RLE
    back = CocoFormat().read(path, LabelMap(("defect",)))["x"]
    filled = mask.copy()
    filled[7:12, 9:14] = 1
    assert back[0, 0] == 1 and back[9, 11] == 1  # the tiny region survives; the hole is filled
    iou = (back.astype(bool) & filled.astype(bool)).sum() / (back.astype(bool) | filled.astype(bool)).sum()
    assert iou > 0.85  # pixel-centre contours rasterise up to half a pixel inside the boundary


def test_cvat_zip_has_the_exact_segmentation_mask_layout(tmp_path: Path):
    masks = {"a": cases()["hole"] * 2, "b": np.zeros((4, 5), np.uint8)}
    masks["a"][0, :3] = 255
    items = [ReviewItem(k, f"images/{k}.png", *m.shape, load_mask=lambda m=m: m) for k, m in masks.items()]
    labels = LabelMap(("scratch", "dent"))
    path = get_format("cvat").write(tmp_path, items, labels)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(
            ["labelmap.txt", "ImageSets/Segmentation/default.txt"]
            + [f"Segmentation{kind}/{k}.png" for kind in ("Class", "Object") for k in masks]
        )
        assert z.read("ImageSets/Segmentation/default.txt").decode() == "a\nb\n"
        lines = z.read("labelmap.txt").decode().splitlines()
        assert lines[0].startswith("# label:color_rgb") and lines[1] == "background:0,0,0::"
        assert [ln.split(":")[0] for ln in lines[1:]] == ["background", "scratch", "dent", "uncertain"]
        cls = cv2.imdecode(np.frombuffer(z.read("SegmentationClass/a.png"), np.uint8), cv2.IMREAD_UNCHANGED)
        assert cls.ndim == 3 and cls.shape[2] == 3  # colour, never a raw 0/255 single-channel mask
    assert all(np.array_equal(get_format("cvat").read(path, labels)[k], m) for k, m in masks.items())


def accept_predictions(path: Path) -> Path:
    """What a Label Studio export looks like after a reviewer accepted every prediction as an annotation."""
    tasks = json.loads(path.read_text())
    for t in tasks:
        t["annotations"] = [{"result": t["predictions"][0]["result"], "was_cancelled": False}]
    out = path.with_name("ls-export.json")
    out.write_text(json.dumps(tasks))
    return out


@pytest.mark.parametrize(
    ("fmt", "file"),
    [("png", "masks"), ("coco", "coco.json"), ("cvat", "cvat.zip"), ("labelstudio", "labelstudio.json")],
)
def test_export_then_import_returns_identical_masks(review_run: Path, tmp_path: Path, fmt: str, file: str):
    pkg = tmp_path / "pkg"
    build_review(run_source(review_run, "retrain"), pkg, ExportConfig(formats=[fmt]))
    source = pkg / file if fmt != "labelstudio" else accept_predictions(pkg / file)
    summary = import_review(fmt, source, review_run)
    originals = sorted((review_run / "retrain" / "masks").glob("*.png"))
    assert sorted(summary.imported) == sorted(p.stem for p in originals)
    for p in originals:
        back = cv2.imread(str(review_run / "reviewed" / "masks" / p.name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back, cv2.imread(str(p), cv2.IMREAD_UNCHANGED)), p.name
    record = json.loads((review_run / "reviewed" / "reviewed.json").read_text())
    assert set(record) == set(summary.imported) and {r["format"] for r in record.values()} == {fmt}


def test_bad_imports_list_every_problem_and_import_nothing(review_run: Path, tmp_path: Path):
    ids = sorted(p.stem for p in (review_run / "retrain" / "masks").glob("*.png"))
    good = cv2.imread(str(review_run / "retrain" / "masks" / f"{ids[0]}.png"), cv2.IMREAD_UNCHANGED)
    folder = tmp_path / "masks"
    folder.mkdir()
    cv2.imwrite(str(folder / f"{ids[0]}.png"), good)  # fine on its own
    cv2.imwrite(str(folder / "no_such_image.png"), good)
    cv2.imwrite(str(folder / f"{ids[1]}.png"), np.zeros((good.shape[0] + 3, good.shape[1]), np.uint8))
    cv2.imwrite(str(folder / f"{ids[2]}.png"), np.full(good.shape, 7, np.uint8))  # label 7 of a 1-class run
    with pytest.raises(ManyErrors) as e:
        import_review("png", folder, review_run)
    text = str(e.value)
    assert "nothing imported" in text and "no_such_image" in text and ids[1] in text and "[7]" in text
    assert not (review_run / "reviewed").exists()
    with pytest.raises(ManyErrors, match="unknown label"):
        bad_zip = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad_zip, "w") as z:
            z.writestr("labelmap.txt", "background:0,0,0::\nrust:1,2,3::\n")
            ok, buf = cv2.imencode(".png", np.full((*good.shape, 3), (3, 2, 1), np.uint8))
            z.writestr(f"SegmentationClass/{ids[0]}.png", buf.tobytes())
        import_review("cvat", bad_zip, review_run)
    r = CliRunner().invoke(
        cli, ["import-review", "--format", "coco", str(tmp_path / "missing.json"), "--run", str(review_run)]
    )
    assert r.exit_code == 2 and "missing.json" in r.output


def _corrupt_png(path: Path, shape: tuple[int, int]) -> None:
    """A PNG whose header chunk fails its CRC (OpenCV's decoder prints `libpng error: IHDR: CRC error`)."""
    data = bytearray(cv2.imencode(".png", np.zeros(shape, np.uint8))[1].tobytes())
    data[16:24] = b"\xff" * 8
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("earlier_import", [False, True])
def test_import_review_command_lists_every_bad_png_and_imports_nothing(
    review_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture, earlier_import: bool
):
    ids = sorted(p.stem for p in (review_run / "retrain" / "masks").glob("*.png"))
    good = cv2.imread(str(review_run / "retrain" / "masks" / f"{ids[0]}.png"), cv2.IMREAD_UNCHANGED)
    if earlier_import:  # a reviewed folder from an earlier import: it must stay as it was
        earlier = tmp_path / "earlier"
        earlier.mkdir()
        cv2.imwrite(str(earlier / f"{ids[0]}.png"), good)
        import_review("png", earlier, review_run)
    before = {p.name: p.read_bytes() for p in (review_run / "reviewed").rglob("*") if p.is_file()}
    folder = tmp_path / "masks"
    folder.mkdir()
    cv2.imwrite(str(folder / f"{ids[0]}.png"), good)  # fine on its own
    _corrupt_png(folder / f"{ids[1]}.png", good.shape)
    (folder / f"{ids[2]}.png").write_bytes(cv2.imencode(".png", good)[1].tobytes()[:60])  # truncated
    cv2.imwrite(str(folder / f"{ids[3]}.png"), np.zeros((*good.shape, 3), np.uint8) + (0, 0, 9))  # colour
    cv2.imwrite(str(folder / f"{ids[4]}.png"), np.zeros((good.shape[0], good.shape[1] + 2), np.uint8))  # size
    cv2.imwrite(str(folder / f"{ids[5]}.png"), np.full(good.shape, 7, np.uint8))  # label 7 of a 1-class run
    cv2.imwrite(str(folder / "no_such_image.png"), good)
    capfd.readouterr()
    r = CliRunner().invoke(cli, ["import-review", "--format", "png", str(folder), "--run", str(review_run)])
    assert r.exit_code == 1, r.output
    assert "6 problem(s)" in r.stderr and f"{folder}: nothing imported" in r.stderr
    for sid in ids[1:4]:
        assert str(folder / f"{sid}.png") in r.stderr, sid
    # a mask of another size is refused from its header, before it is decoded
    size = f"{folder / ids[4]}.png: mask: declared size {good.shape[0]}x{good.shape[1] + 2} (HxW) is not its image's"
    assert size in r.stderr and f"{folder}: {ids[5]}: values [7]" in r.stderr
    assert "not in the run's index: no_such_image" in r.stderr
    assert "libpng" not in capfd.readouterr().err and "IHDR" not in r.output  # our error is the only output
    after = {p.name: p.read_bytes() for p in (review_run / "reviewed").rglob("*") if p.is_file()}
    assert after == before and not (review_run / ".reviewed.tmp").exists()


def binary_folder(review_run: Path, tmp_path: Path) -> tuple[list[str], Path, np.ndarray]:
    """A tool's export of two images' masks as 0/255 PNGs (the same rectangle on each): ids, folder and the mask."""
    ids = sorted(p.stem for p in (review_run / "retrain" / "masks").glob("*.png"))[:2]
    shape = cv2.imread(str(review_run / "retrain" / "masks" / f"{ids[0]}.png"), cv2.IMREAD_UNCHANGED).shape
    folder = tmp_path / "binary"
    folder.mkdir()
    drawn = np.zeros(shape, np.uint8)
    drawn[4:12, 6:20] = 255
    for i in ids:
        cv2.imwrite(str(folder / f"{i}.png"), drawn)
    return ids, folder, drawn


@pytest.mark.parametrize(("mask_format", "value"), [("auto", 1), ("binary", 1), ("labels", 255)])
def test_import_review_mask_format_says_what_255_means(review_run: Path, tmp_path: Path, mask_format: str, value: int):
    ids, folder, drawn = binary_folder(review_run, tmp_path)
    args = ["import-review", "--format", "png", str(folder), "--run", str(review_run), "--mask-format", mask_format]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    back = cv2.imread(str(review_run / "reviewed" / "masks" / f"{ids[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back, np.where(drawn > 0, value, 0).astype(np.uint8))


def test_cvat_import_lists_every_bad_mask(review_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture):
    ids = sorted(p.stem for p in (review_run / "retrain" / "masks").glob("*.png"))
    shape = cv2.imread(str(review_run / "retrain" / "masks" / f"{ids[0]}.png"), cv2.IMREAD_UNCHANGED).shape
    bad_zip = tmp_path / "cvat.zip"
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("labelmap.txt", "background:0,0,0::\ndefect:250,50,83::\n")
        z.writestr(f"SegmentationClass/{ids[0]}.png", cv2.imencode(".png", np.zeros((*shape, 3), np.uint8))[1])
        _corrupt_png(tmp_path / "c.png", shape)
        z.write(tmp_path / "c.png", f"SegmentationClass/{ids[1]}.png")
        z.writestr(f"SegmentationClass/{ids[2]}.png", cv2.imencode(".png", np.full((*shape, 3), 9, np.uint8))[1])
    capfd.readouterr()
    r = CliRunner().invoke(cli, ["import-review", "--format", "cvat", str(bad_zip), "--run", str(review_run)])
    assert r.exit_code == 1 and "2 problem(s)" in r.stderr and "nothing imported" in r.stderr
    assert f"{bad_zip}:SegmentationClass/{ids[1]}.png: unreadable PNG" in r.stderr
    assert f"{bad_zip}:SegmentationClass/{ids[2]}.png: unknown label(s): colour (9, 9, 9)" in r.stderr
    assert "libpng" not in capfd.readouterr().err and not (review_run / "reviewed").exists()


def test_import_review_mask_format_is_an_option_for_png_only(review_run: Path, tmp_path: Path):
    assert "--mask-format [auto|labels|binary]" in CliRunner().invoke(cli, ["import-review", "--help"]).output
    (tmp_path / "coco.json").write_text("{}")
    args = ["import-review", "--format", "coco", str(tmp_path / "coco.json"), "--run", str(review_run)]
    r = CliRunner().invoke(cli, [*args, "--mask-format", "binary"])
    assert r.exit_code == 2 and "--mask-format binary: a coco file names its labels itself" in r.stderr
    assert not (review_run / "reviewed").exists()


def test_reviewed_masks_replace_pseudo_masks_in_training(review_run: Path, tmp_path: Path):
    from wsss.data.index import read_train_index
    from wsss.train.segmenter_data import PseudoMaskDataset

    rows = read_train_index(review_run / "prepare" / "index.csv", "train")
    human = tmp_path / "human"
    human.mkdir()
    shape = cv2.imread(str(review_run / "retrain" / "masks" / f"{rows[0].id}.png"), cv2.IMREAD_UNCHANGED).shape
    corrected = np.zeros(shape, np.uint8)
    corrected[5:20, 10:30] = 1
    cv2.imwrite(str(human / f"{rows[0].id}.png"), corrected)
    ds = PseudoMaskDataset(rows, review_run / "retrain" / "masks", ["defect"], shape, reviewed_dir=human)
    assert ds.mask_path(0) == human / f"{rows[0].id}.png" and ds[0]["reviewed"].item() == 1.0
    assert np.array_equal(ds[0]["mask"].numpy(), corrected) and ds[1]["reviewed"].item() == 0.0


def test_export_review_command_and_stage_write_the_package(full_run, tmp_path: Path):
    run_dir, _ = full_run
    r = CliRunner().invoke(
        cli, ["export", "review", "--run", str(run_dir), "--out", str(tmp_path / "pkg"), "--coco-mode", "polygon"]
    )
    assert r.exit_code == 0, r.output
    n = len(list((run_dir / "train-segmenter" / "masks").glob("*.png")))
    for name in (
        "index.html",
        "coco.json",
        "cvat.zip",
        "labelstudio.json",
        "labelstudio_config.xml",
        "masks/labelmap.txt",
    ):
        assert (tmp_path / "pkg" / name).is_file(), name
    assert len(list((tmp_path / "pkg" / "overlays").glob("*.png"))) == n
    tasks = json.loads((tmp_path / "pkg" / "labelstudio.json").read_text())
    assert len(tasks) == n and tasks[0]["data"]["image"].startswith("/data/local-files/?d=images/")
    assert (run_dir / "export" / "index.html").is_file()  # the stage, in the full pipeline
    assert json.loads((run_dir / "export" / "manifest.json").read_text())["status"] == "done"
    page = (run_dir / "export" / "index.html").read_bytes()
    for inside in (run_dir / "export", run_dir / "export" / "again", run_dir / "train-segmenter"):
        r = CliRunner().invoke(cli, ["export", "review", "--run", str(run_dir), "--out", str(inside)])
        assert r.exit_code == 2 and "inside the stage folder" in r.output, r.output
    assert (run_dir / "export" / "index.html").read_bytes() == page and not (run_dir / "export" / "again").exists()


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def browser_or_skip() -> str:
    """The system Chromium for Playwright to drive, or a skip with the reason (printed by pytest -ra)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium; apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python client is not installed (pip install -e '.[dev]')")
    return chromium


@contextlib.contextmanager
def browser_page(uri: str, profile: Path):
    """A headless Chromium page (Playwright, the system browser) loaded from ``uri``, and the list its console errors
    and page errors land in; skips when there is no browser."""
    from playwright.sync_api import sync_playwright

    chromium = browser_or_skip()
    errors: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(uri)
            page.wait_for_load_state("load")
            yield page, errors
        finally:
            context.close()


def visible_ids(page) -> list[str]:
    return page.eval_on_selector_all(".card:not(.hidden)", "cs => cs.map(c => c.dataset.id)")


def test_review_page_in_a_headless_browser(full_run, tmp_path: Path):
    """index.html from file://: no console errors, one card per image, sorting and filtering work, a click enlarges."""
    run_dir, _ = full_run
    page_file = run_dir / "export" / "index.html"
    records = json.loads(page_file.read_text().split('id="data">', 1)[1].split("</script>", 1)[0])["images"]
    with browser_page(page_file.as_uri(), tmp_path / "profile") as (page, errors):
        assert page.locator(".card").count() == len(records)
        by_conf = visible_ids(page)
        confs = {r["id"]: r["confidence"] for r in records}
        assert [confs[i] for i in by_conf] == sorted(confs[i] for i in by_conf)  # least confident first
        page.select_option("#sort", "id")
        assert visible_ids(page) == sorted(r["id"] for r in records) != by_conf
        page.select_option("#decision", "ok")
        ok = [r["id"] for r in records if (r["score"] >= 0.5) is False]
        assert sorted(visible_ids(page)) == sorted(ok) and page.inner_text("#count").startswith(f"{len(ok)} of")
        page.select_option("#decision", "all")
        page.fill("#cmin", "2")
        page.dispatch_event("#cmin", "input")
        assert visible_ids(page) == []
        page.fill("#cmin", "0")
        page.dispatch_event("#cmin", "input")
        assert page.locator("#viewer").is_hidden()
        page.locator(".card:not(.hidden)").first.click()
        assert page.locator("#viewer").is_visible() and page.locator("#vbase").get_attribute("src")
        page.keyboard.press("Escape")
        assert page.locator("#viewer").is_hidden()
        assert errors == [], errors


def test_png_import_reads_a_tools_binary_0_255_masks_as_the_defect_class(review_run: Path, tmp_path: Path, capsys):
    ids, folder, drawn = binary_folder(review_run, tmp_path)
    import_review("png", folder, review_run)
    assert "read " in capsys.readouterr().err  # the one-line note on how the folder was read
    back = cv2.imread(str(review_run / "reviewed" / "masks" / f"{ids[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back, (drawn > 0).astype(np.uint8))  # value 1 = the run's one class, not 255 = uncertain
    assert (review_run / "reviewed" / "masks" / "labelmap.txt").read_text().splitlines()[-1] == "255 uncertain"
