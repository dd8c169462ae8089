"""Dense CRF and the pseudo-labelling rule (wsss.refine), its process pool, and the `pseudo-labels` stage."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsss.cam.io import cam_path, write_cam
from wsss.config import PseudoConfig, load_config
from wsss.errors import ConfigError, DataError, StageError
from wsss.labels import IGNORE
from wsss.refine import pseudo
from wsss.refine.pseudo import LabelTask, label_all, label_image

YY, XX = np.mgrid[:64, :64]


def disc(cy: int, cx: int, r: int) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r**2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def bright_on_noise(shape: np.ndarray, seed: int = 0) -> np.ndarray:
    """A bright shape on a dark, noisy background: uint8 (64, 64)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(50, 8, shape.shape) + 150 * shape, 0, 255).astype(np.uint8)


def blurry_cam(region: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """What a CAM looks like: a blurred blob, peak 1, as (1, H, W)."""
    cam = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigma)
    return (cam / cam.max())[None]


def hard(method: str = "crf", **kw) -> PseudoConfig:
    """The rule without ignore pixels, to compare plain labels."""
    return PseudoConfig(method=method, confidence=0.0, ignore_band=0, **kw)


def test_crf_snaps_to_edges_better_than_thresholding():
    true = disc(32, 30, 11)
    image = bright_on_noise(true)
    cam = blurry_cam(disc(35, 34, 15))  # shifted by (3, 4) px and 4 px too large, blurred
    thr = label_image(image, cam, hard("threshold"), called_defective=True)
    crf = label_image(image, cam, hard("crf"), called_defective=True)
    assert iou(crf.mask == 1, true) > iou(thr.mask == 1, true) + 0.2
    assert iou(crf.mask == 1, true) > 0.85
    assert crf.confidence > thr.confidence  # the CRF is surer, and says so
    rgb = label_image(np.repeat(image[:, :, None], 3, axis=2), cam, hard("crf"), called_defective=True)
    np.testing.assert_array_equal(rgb.mask, crf.mask)  # gray is repeated to 3 channels


def test_ignore_where_uncertain_and_around_boundaries():
    cam = np.zeros((1, 64, 64), np.float32)
    cam[0, 10:30, 10:30] = 1.0  # confident defect: P = 1 / 1.4 > 0.7
    cam[0, 40:56, 40:56] = 0.4  # exactly the background prior: P = 0.5 for both
    image = np.full((64, 64), 80, np.uint8)
    res = label_image(image, cam, PseudoConfig(method="threshold", confidence=0.7, ignore_band=2), True)
    m = res.mask
    assert (m[40:56, 40:56] == IGNORE).all()  # uncertain
    assert (m[10:30, 10:30] == 1).all()  # the confident defect keeps every pixel
    for row in (8, 9, 30, 31):  # a 2 px band outside its top and bottom edges
        assert (m[row, 15:25] == IGNORE).all(), row
    assert (m[7, 15:25] == 0).all() and (m[32, 15:25] == 0).all()
    assert (m[:5] == 0).all() and (m[:, 58:] == 0).all()  # confident background
    assert set(np.unique(m)) == {0, 1, IGNORE}
    assert res.ignore_fraction == pytest.approx((m == IGNORE).mean())
    assert res.defect_fraction == pytest.approx((m == 1).mean())

    thin = np.zeros((1, 64, 64), np.float32)
    thin[0, 5:60, 30:32] = 1.0  # a 2 px scratch survives the band
    t = label_image(image, thin, PseudoConfig(method="threshold", confidence=0.7, ignore_band=2), True).mask
    assert (t[5:60, 30:32] == 1).all() and (t[5:60, 28:30] == IGNORE).all()

    no_band = label_image(image, cam, PseudoConfig(method="threshold", confidence=0.7, ignore_band=0), True).mask
    assert (no_band[10:30, 10:30] == 1).all() and (no_band[:10] == 0).all()
    square = np.zeros((64, 64), bool)
    square[10:30, 10:30] = True
    crf = label_image(bright_on_noise(square), cam, PseudoConfig(), True).mask  # the default rule: CRF, then band
    assert crf[20, 20] == 1 and (crf == IGNORE).any()
    touching = cv2.dilate((crf == 1).astype(np.uint8), np.ones((3, 3), np.uint8)) & (crf == 0)
    assert not touching.any()  # defect never meets background directly: the band lies between them


def test_margin_grows_defects_into_the_background_before_the_band():
    image = np.full((64, 64), 80, np.uint8)
    cam = np.full((1, 64, 64), 0.4, np.float32)  # the background prior everywhere: P = 0.5, uncertain
    cam[0, 20:30, 20:30] = 1.0  # a confident defect inside the uncertain field
    rule = PseudoConfig(method="threshold", confidence=0.7, ignore_band=2)
    plain = label_image(image, cam, rule, True).mask
    grown = label_image(image, cam, replace(rule, margin=3), True).mask
    square = np.zeros((64, 64), np.uint8)
    square[20:30, 20:30] = 1
    reach = cv2.dilate(square, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
    assert ((grown == 1) == reach).all()  # exactly the square grown by a 3 px disc, although its ring was uncertain
    assert ((plain == 1) == (square > 0)).all() and (plain[reach & (square == 0)] == IGNORE).all()
    band = (cv2.dilate(reach.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0) & ~reach
    assert (grown[band] == IGNORE).all()  # the band is drawn around the grown region
    np.testing.assert_array_equal(label_image(image, cam, replace(rule, margin=0), True).mask, plain)

    two = np.zeros((2, 64, 64), np.float32)
    two[0, 10:20, 10:20] = 1.0
    two[1, 10:20, 22:32] = 1.0  # 2 px of background between the classes, within reach of both
    m = label_image(image, two, PseudoConfig(method="threshold", ignore_band=0, margin=2), True).mask
    assert (m[10:20, 10:20] == 1).all() and (m[10:20, 22:32] == 2).all()  # defect pixels keep their class
    assert (m[15, 20:22] == 1).all()  # the contested gap goes to the lower class
    assert (m[15, 32:34] == 2).all() and m[15, 34] == 0 and (m[8:10, 15] == 1).all() and m[7, 15] == 0
    with pytest.raises(ConfigError, match=r"pseudo.margin"):
        load_config(None, ["pseudo.margin=-1"])


def test_margin_ignored_gives_back_the_refined_region_and_frees_the_ring():
    from wsss.refine.pseudo import grow, margin_ignored

    labels = np.zeros((64, 64), np.uint8)
    labels[10:50, 30] = 1  # a 1 px crack
    labels[0:6, 0:6] = 2  # a spot in the corner
    for m in (1, 3):
        grown = grow(labels, 2, m)
        freed = margin_ignored(grown, m)
        assert ((freed == IGNORE) == ((grown > 0) & (labels == 0) & (freed != labels))).all()
        assert (freed[labels == 1] == 1).all()  # the crack survives: eroding what was grown keeps it
        assert (freed[labels == 2] == 2).all()  # the corner spot keeps its pixels along the image border
        assert (freed[(grown == 0)] == 0).all() and (freed[labels == 0] != 1).all() and (freed[labels == 0] != 2).all()
    cam = blurry_cam(disc(32, 32, 6))
    banded = label_image(np.full((64, 64), 80, np.uint8), cam, PseudoConfig(method="threshold", margin=2), True)
    freed = margin_ignored(banded.mask, 2)
    assert (freed[banded.mask == IGNORE] == IGNORE).all()  # the band stays ignore
    assert (freed == 1).any() and (freed == 1).sum() < (banded.mask == 1).sum()
    np.testing.assert_array_equal(margin_ignored(banded.mask, 0), banded.mask)
    assert not margin_ignored(np.zeros((8, 8), np.uint8), 2).any()


def test_confidence_ranks_hesitant_masks_low():
    image = np.full((64, 64), 80, np.uint8)
    sure = np.where(disc(32, 32, 10), 1.0, 0.0).astype(np.float32)[None]
    hesitant = np.where(disc(32, 32, 10), 0.6, 0.0).astype(np.float32)[None]
    cfg = PseudoConfig(method="threshold")
    c_sure = label_image(image, sure, cfg, True).confidence
    c_hes = label_image(image, hesitant, cfg, True).confidence
    assert 0 < c_hes < c_sure <= 1
    weak = np.full((1, 64, 64), 0.1, np.float32)  # called defective, but nothing beats the background
    res = label_image(image, weak, cfg, True)
    assert not (res.mask == 1).any() and res.confidence == pytest.approx(0.4 / 0.5)


@pytest.mark.parametrize("method", ["threshold", "crf"])
def test_fallback_keeps_the_core_of_a_weak_cam_the_refinement_erased(method: str):
    true = disc(32, 30, 8)
    image = bright_on_noise(true)
    weak = 0.3 * blurry_cam(disc(32, 30, 6))  # peak 0.3 < bg_prior 0.4: nothing beats the background
    cam = np.concatenate([np.zeros_like(weak), weak])  # two classes, the second one found
    empty = label_image(image, cam, PseudoConfig(method=method), True)
    assert not ((empty.mask > 0) & (empty.mask != IGNORE)).any()
    res = label_image(image, cam, PseudoConfig(method=method, fallback=0.5), True)
    core = weak[0] >= 0.15
    assert (res.mask[core] == 2).all() and not (res.mask == 1).any()  # the core, as its strongest class
    assert ((res.mask == 2) == core).all()  # nothing outside it
    assert iou(res.mask == 2, true) > 0.3
    assert res.confidence < 0.5 < empty.confidence  # ranked first for review
    assert res.defect_fraction == pytest.approx(core.mean())
    strong = blurry_cam(true)
    a = label_image(image, strong, PseudoConfig(method=method), True)
    b = label_image(image, strong, PseudoConfig(method=method, fallback=0.5), True)
    np.testing.assert_array_equal(a.mask, b.mask)  # only an emptied image changes
    assert a.confidence == b.confidence
    ok = label_image(image, cam, PseudoConfig(method=method, fallback=0.5), called_defective=False)
    assert not ok.mask.any()  # an image called OK stays empty
    with pytest.raises(ConfigError, match=r"pseudo.fallback.*\[0, 1\)"):
        load_config(None, ["pseudo.fallback=1.5"])


def test_ok_images_and_empty_cams_give_all_zero_masks():
    image = bright_on_noise(disc(32, 32, 10))
    cam = blurry_cam(disc(32, 32, 10))
    for c, called in ((cam, False), (np.zeros_like(cam), True)):
        res = label_image(image, c, PseudoConfig(), called_defective=called)
        assert res.mask.dtype == np.uint8 and res.mask.shape == (64, 64)
        assert not res.mask.any()
        assert (res.confidence, res.defect_fraction, res.ignore_fraction) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("method", ["threshold", "crf"])
def test_multi_class_labels(method: str):
    a, b = disc(20, 18, 9), disc(44, 46, 9)
    image = bright_on_noise(a | b)
    cam = np.concatenate([blurry_cam(a, 2.0), blurry_cam(b, 2.0)])
    m = label_image(image, cam, hard(method), called_defective=True).mask
    assert set(np.unique(m)) == {0, 1, 2}
    assert iou(m == 1, a) > 0.6 and iou(m == 2, b) > 0.6
    assert not (m[b] == 1).any() and not (m[a] == 2).any()


# --------------------------------------------------------------------------------------------------------
# files and the process pool


def make_tasks(tmp: Path, n: int = 6, cfg: PseudoConfig | None = None, out: str = "out") -> list[LabelTask]:
    """``n`` small images with blurry CAMs on disk (every third one called OK)."""
    cfg = cfg or PseudoConfig(crf=replace(PseudoConfig().crf, iterations=5))
    tasks = []
    for i in range(n):
        shape = disc(20 + 4 * i, 30, 8 + i)
        img_path, cam_file = tmp / "images" / f"s{i}.png", cam_path(tmp / "cam", f"s{i}")
        img_path.parent.mkdir(parents=True, exist_ok=True)
        if not img_path.exists():
            cv2.imwrite(str(img_path), bright_on_noise(shape, seed=i))
            write_cam(cam_file, blurry_cam(disc(22 + 4 * i, 32, 10 + i)))
        tasks.append(LabelTask(f"s{i}", img_path, cam_file, tmp / out / f"s{i}.png", i % 3 != 2, 1, cfg))
    return tasks


def test_pool_matches_in_process(tmp_path: Path):
    one = label_all(make_tasks(tmp_path, out="one"), 1, print)
    seen: list[str] = []
    two = label_all(make_tasks(tmp_path, out="two"), 2, print, on_done=lambda r: seen.append(r["id"]))
    assert one == two and [r["id"] for r in two] == [f"s{i}" for i in range(6)]
    assert sorted(seen) == [r["id"] for r in two]
    for i in range(6):
        assert (tmp_path / "one" / f"s{i}.png").read_bytes() == (tmp_path / "two" / f"s{i}.png").read_bytes()
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "two").iterdir())
    masks = [cv2.imread(str(tmp_path / "one" / f"s{i}.png"), cv2.IMREAD_UNCHANGED) for i in range(6)]
    assert all(m.dtype == np.uint8 and m.shape == (64, 64) for m in masks)
    assert not masks[2].any() and (masks[0] == 1).any()  # s2 is called OK
    assert label_all([], 2, print) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_cam_files_name_the_file(tmp_path: Path, workers: int):
    tasks = make_tasks(tmp_path, n=3)
    tasks[1].cam.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"s1\.npz: corrupt CAM file"):
        label_all(tasks, workers, print)
    tasks[1].cam.unlink()
    with pytest.raises(DataError, match=r"s1\.npz: CAM file missing"):
        label_all(tasks, workers, print)


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_exception_names_the_image(tmp_path: Path, workers: int):
    tasks = make_tasks(tmp_path, n=3)
    tasks[1] = replace(tasks[1], cfg=replace(tasks[1].cfg, crf=None))  # a bug: dense_crf gets no parameters
    with pytest.raises(StageError, match=r"image 's1' \(.*s1\.png\): labelling failed.*AttributeError") as e:
        label_all(tasks, workers, print)
    assert "NoneType" in str(e.value)


class DyingConfig(PseudoConfig):
    """Kills the worker process that reads it (stands in for a segfault or the OOM killer)."""

    def __getattribute__(self, name: str):
        if name == "bg_prior":
            os._exit(3)
        return super().__getattribute__(name)


def test_dead_worker_is_reported_not_hung(tmp_path: Path):
    tasks = make_tasks(tmp_path, n=3)
    tasks[0] = replace(tasks[0], cfg=DyingConfig())
    with pytest.raises(StageError, match=r"a worker process died .*s0"):
        label_all(tasks, 2, print)


# --------------------------------------------------------------------------------------------------------
# the stage


def fake_cam_stage(prepared_run: Path, tmp: Path) -> Path:
    """A cam stage output for the prepared tiny set: blobs for defective images, zeros for OK ones."""
    from wsss.data.images import read_image
    from wsss.data.index import read_train_index

    cam_dir = tmp / "cam"
    lines = ["id,score,iem_rounds,peak"]
    for r in read_train_index(prepared_run / "prepare" / "index.csv"):
        h, w = read_image(r.path).shape[:2]
        cam = np.zeros((1, h, w), np.float32)
        if r.defective:
            cam = blurry_cam(disc(h // 2, w // 2, h // 5)[:h, :w])
        write_cam(cam_path(cam_dir, r.id), cam)
        lines.append(f"{r.id},{0.9 if r.defective else 0.1},1,{cam.max():.3f}")
    (cam_dir / "scores.csv").write_text("\n".join(lines) + "\n")
    (cam_dir / "cam.json").write_text(json.dumps({"classes": ["defect"], "score_threshold": 0.5}))
    return cam_dir


def test_stage_writes_masks_confidence_and_resumes(prepared_run: Path, tmp_path: Path, monkeypatch, capsys):
    from wsss.data.index import read_train_index
    from wsss.stages.pseudo_labels import run

    cfg = load_config(None, ["pseudo.method=threshold", "pseudo.workers=1"])
    inputs = {"prepare": prepared_run / "prepare", "cam": fake_cam_stage(prepared_run, tmp_path)}
    out = tmp_path / "pseudo"
    outputs = run(cfg, inputs, out)
    index = read_train_index(prepared_run / "prepare" / "index.csv")
    assert outputs == {"masks": out / "masks", "confidence": out / "confidence.csv", "scores": out / "scores.csv"}
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == sorted(r.id for r in index)
    with open(out / "confidence.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [r.id for r in index]
    assert list(rows[0]) == ["id", "score", "confidence", "defect_fraction", "ignore_fraction"]
    for r, row in zip(index, rows):
        mask = cv2.imread(str(out / "masks" / f"{r.id}.png"), cv2.IMREAD_UNCHANGED)
        assert (mask == 1).any() == r.defective, r.id
        assert float(row["confidence"]) == 1.0 or r.defective
    assert (out / "scores.csv").read_text() == (inputs["cam"] / "scores.csv").read_text()
    assert not (out / "rows.jsonl").exists()
    assert "24 images, 12 called defective" in capsys.readouterr().out

    # a killed attempt: 20 images logged (the last line torn), one of them without its PNG, a stray temp file
    kept = [{k: (v if k == "id" else float(v)) for k, v in row.items() if k != "score"} for row in rows[:20]]
    log = "".join(json.dumps(r) + "\n" for r in kept) + '{"id": "tor'
    (out / "rows.jsonl").write_text(log)
    (out / "masks" / f"{rows[0]['id']}.png").unlink()
    (out / "masks" / ".x.png.abc.tmp").write_bytes(b"")
    (out / "confidence.csv").unlink()
    labelled: list[str] = []
    real = pseudo.label_one
    monkeypatch.setattr(pseudo, "label_one", lambda t: labelled.append(t.id) or real(t))
    run(cfg, inputs, out)
    assert labelled == [rows[0]["id"]] + [r["id"] for r in rows[20:]]
    with open(out / "confidence.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows
    assert not (out / "rows.jsonl").exists() and not list((out / "masks").glob(".*.tmp"))


def test_stage_errors(prepared_run: Path, tmp_path: Path):
    from wsss.stages.pseudo_labels import run

    cfg = load_config(None, ["pseudo.workers=1"])
    cam_dir = fake_cam_stage(prepared_run, tmp_path)
    inputs = {"prepare": prepared_run / "prepare", "cam": cam_dir}
    lines = (cam_dir / "scores.csv").read_text().splitlines()
    (cam_dir / "scores.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(StageError, match=r"scores\.csv: no sample score for 1 indexed image"):
        run(cfg, inputs, tmp_path / "out")
    (cam_dir / "cam.json").write_text(json.dumps({"classes": ["defect"]}))
    with pytest.raises(DataError, match=r"cam\.json: missing or invalid"):
        run(cfg, inputs, tmp_path / "out")
