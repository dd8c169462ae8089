"""CAM extraction (TTA, tiling), IEM and the `cam` stage on tiny synthetic data."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, TINY_CLASSIFIER
from torch import nn

from wsss.cam.extract import CamExtractor, windows
from wsss.cam.iem import extend_cams
from wsss.cam.io import read_cam, write_cam
from wsss.config import CamConfig, IEMConfig, load_config
from wsss.data.images import read_image
from wsss.data.index import read_train_index
from wsss.errors import ConfigError, DataError, StageError
from wsss.mask_format import read_mask_png
from wsss.runs import Run
from wsss.stages import get_stage
from wsss.stages.cam import run as cam_stage


class DarknessDFC(nn.Module):
    """A hand-made, non-local "classifier": its CAM is local darkness minus 60% of the image's darkest response.

    Like a trained CNN whose evidence competes across the image, it lights up only the darkest part of a defect;
    the score says whether anything is clearly darker than the texture.
    """

    num_classes = 1

    def __init__(self):
        super().__init__()
        self.backbone = SimpleNamespace(stride=4)

    def forward(self, x: torch.Tensor):
        d = F.avg_pool2d(torch.relu(-x), 4)  # darkness (to_tensor maps mid-gray to 0)
        peak = d.amax(dim=(2, 3), keepdim=True)
        cams = 8 * (d - 0.6 * peak)
        logits = 20 * (peak.flatten(1) - 0.2)
        return SimpleNamespace(cams=cams, logits=logits)


def _scratch_image(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Mid-gray noisy texture with a long horizontal scratch whose darkness fades along its length."""
    rng = np.random.default_rng(0)
    img = np.clip(128 + rng.normal(0, 3, (size, size)), 0, 255)
    mask = np.zeros((size, size), bool)
    for x in range(8, size - 8):
        depth = 110 - 70 * (x - 8) / (size - 16)  # 110 levels darker at the left end, 40 at the right
        img[46:50, x] -= depth
        mask[46:50, x] = True
    return np.clip(img, 0, 255).astype(np.uint8), mask


def test_windows_cover_the_image_without_leaving_it():
    for shape, tile in [((100, 260), (64, 64)), ((50, 50), (0, 0)), ((64, 30), (64, 64)), ((130, 70), (40, 0))]:
        wins = windows(shape, tile, 0.25)
        cover = np.zeros(shape, int)
        for w in wins:
            assert 0 <= w.y0 < w.y1 <= shape[0] and 0 <= w.x0 < w.x1 <= shape[1]
            cover[w.y0 : w.y1, w.x0 : w.x1] += 1
        assert cover.min() >= 1
    assert len(windows((100, 260), (64, 64), 0.25)) > 1
    assert windows((50, 50), (0, 0), 0.25) == windows((50, 50), (80, 80), 0.25)


def test_extractor_returns_maps_at_original_size_and_flip_averages():
    img, mask = _scratch_image()
    ext = CamExtractor(DarknessDFC(), (64, 64), 1, CamConfig(scales=[1.0, 1.5]), "cpu")
    cams, scores = ext([img, img[:80, :50]])
    assert cams[0].shape == (1, 96, 96) and cams[1].shape == (1, 80, 50)
    assert scores.shape == (2, 1) and np.all((scores >= 0) & (scores <= 1))
    assert cams[0].min() >= 0 and cams[0][0][mask].mean() > 5 * cams[0][0][~mask].mean()
    # a horizontally mirrored image gives the mirrored CAM (flip TTA is symmetric)
    mirrored, _ = ext([img[:, ::-1].copy()])
    np.testing.assert_allclose(mirrored[0][0], cams[0][0][:, ::-1], atol=1e-4)
    # tiling with windows as large as the image changes nothing
    tiled = CamExtractor(DarknessDFC(), (64, 64), 1, CamConfig(scales=[1.0, 1.5], tile_size=[96, 96]), "cpu")
    np.testing.assert_allclose(tiled([img])[0][0], cams[0], atol=1e-5)
    # real tiles: still full size, the scratch still found
    tiled = CamExtractor(DarknessDFC(), (32, 32), 1, CamConfig(scales=[1.0], tile_size=[48, 48]), "cpu")
    cam = tiled([img])[0][0][0]
    assert cam.shape == (96, 96) and cam[mask].mean() > 3 * cam[~mask].mean()


def test_flipped_views_only_for_windows_that_may_be_defective():
    """cam.flip_floor: a window scored under it keeps its unflipped view alone (map and score, as flips=false gives);
    the others get the three views' average, as a floor of 0 gives for every window."""
    img, _ = _scratch_image()
    ok = np.clip(128 + np.random.default_rng(1).normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    seen: list[int] = []

    class Counting(DarknessDFC):
        def forward(self, x):
            seen.append(len(x))
            return super().forward(x)

    def extract(**kw):
        ext = CamExtractor(Counting(), (64, 64), 1, CamConfig(scales=[1.0], **kw), "cpu")
        seen.clear()  # after the extractor's own check of its network
        return (*ext([img, ok]), list(seen))

    all_cams, all_scores, all_seen = extract(flip_floor=0.0)
    one_cams, one_scores, one_seen = extract(flips=False)
    cams, scores, seen_floor = extract(flip_floor=0.25)
    assert one_scores[1, 0] < 0.25 <= one_scores[0, 0]  # the scratch may be defective, the texture is not
    assert sum(all_seen) == 6 and sum(one_seen) == 2 and sum(seen_floor) == 4  # 3 + 1 views, not 3 + 3
    np.testing.assert_allclose(cams[0], all_cams[0], atol=1e-6)
    np.testing.assert_allclose(scores[0], all_scores[0], atol=1e-6)
    np.testing.assert_array_equal(cams[1], one_cams[1])
    np.testing.assert_array_equal(scores[1], one_scores[1])
    # channels-last forward passes give the same maps up to float rounding
    cl_cams, cl_scores, _ = extract(flip_floor=0.25, channels_last=False)
    np.testing.assert_allclose(cl_cams[0], cams[0], atol=1e-5)


def test_iem_grows_coverage_of_a_long_scratch():
    img, mask = _scratch_image()
    ext = CamExtractor(DarknessDFC(), (96, 96), 1, CamConfig(scales=[1.0], flips=False), "cpu")
    cams, scores = ext([img])
    assert scores[0, 0] > 0.5
    level = 0.5 * cams[0].max()
    plain = (cams[0][0] >= level)[mask].mean()
    cfg = IEMConfig(rounds=4, theta_peak=0.5, dilation=0.03, tau_stop=0.5)
    extended, rounds = extend_cams(ext, [img], cams, [True], cfg)
    grown = (extended[0][0] >= level)[mask].mean()
    assert rounds[0] >= 1
    assert grown > plain + 0.15, (plain, grown)
    assert np.all(extended[0] >= cams[0] - 1e-6)  # IEM only adds
    # an image that is not active is left alone
    same, none = extend_cams(ext, [img], cams, [False], cfg)
    assert none == [0] and np.array_equal(same[0], cams[0])


def test_iem_stops_when_the_defect_is_gone():
    img = np.full((96, 96), 128, np.uint8)
    img[40:52, 40:52] = 20  # one compact pit: round 1 erases all of it
    ext = CamExtractor(DarknessDFC(), (96, 96), 1, CamConfig(scales=[1.0], flips=False), "cpu")
    cams, scores = ext([img])
    assert scores[0, 0] > 0.9
    _, rounds = extend_cams(ext, [img], cams, [True], IEMConfig(rounds=5, theta_peak=0.5, dilation=0.05))
    assert rounds == [0]


def _iem_batch() -> list[np.ndarray]:
    """Scratches of several sizes, a compact pit and plain texture (called OK), so images leave at different rounds."""
    images = [_scratch_image(size)[0] for size in (96, 80, 112, 64, 72)]
    pit = np.full((96, 96), 128, np.uint8)
    pit[40:52, 40:52] = 20
    return [*images[:2], pit, *images[2:], np.full((64, 64), 128, np.uint8)]


@pytest.mark.parametrize("tile", [[0, 0], [48, 48]])
def test_iem_on_inpainting_threads_equals_the_serial_run(tile: list[int]):
    images = _iem_batch()
    ext = CamExtractor(DarknessDFC(), (64, 64), 1, CamConfig(scales=[1.0], batch_size=2, tile_size=tile), "cpu")
    cams, scores = ext(images)
    active = [bool(s.max() >= 0.5) for s in scores]
    active[1] = False  # an inactive image in the middle keeps its place
    cfg = IEMConfig(rounds=3, dilation=0.05, workers=1)
    serial, serial_rounds = extend_cams(ext, images, cams, active, cfg)
    assert serial_rounds[1] == 0 and max(serial_rounds) == 2 and min(serial_rounds[i] for i in (0, 2, 3, 4, 5)) < 2
    for workers in (3, 0):
        threaded, rounds = extend_cams(ext, images, cams, active, dataclasses.replace(cfg, workers=workers))
        assert rounds == serial_rounds
        assert all(np.array_equal(a, b) for a, b in zip(threaded, serial, strict=True))
    if tile == [0, 0]:  # chunks of batch_size images give the same CAMs as one call over the whole round
        whole = CamExtractor(DarknessDFC(), (64, 64), 1, CamConfig(scales=[1.0], batch_size=64), "cpu")
        one_call, rounds = extend_cams(whole, images, cams, active, cfg)
        assert rounds == serial_rounds
        assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(one_call, serial, strict=True))


def test_iem_looks_at_the_first_chunk_while_later_images_are_inpainted(monkeypatch: pytest.MonkeyPatch):
    """The last image's inpainting waits (up to 10 s) for the extractor's first call, which needs only chunk 1."""
    import threading

    import wsss.cam.iem as iem

    images = _iem_batch()
    ext = CamExtractor(DarknessDFC(), (64, 64), 1, CamConfig(scales=[1.0], batch_size=2), "cpu")
    cams, scores = ext(images)
    first_call, overlapped, last = threading.Event(), [], id(images[-2])  # the last active image
    inpaint = iem._inpaint

    def waits_for_the_extractor(image, region, cfg):
        if id(image) == last:  # finishes only after the extractor has started (a serial round would hang here)
            overlapped.append(first_call.wait(timeout=10))
        return inpaint(image, region, cfg)

    class Spy:
        cfg = ext.cfg

        def __call__(self, batch):
            first_call.set()
            return ext(batch)

    monkeypatch.setattr(iem, "_inpaint", waits_for_the_extractor)
    work = [np.ascontiguousarray(img) for img in images]
    extend_cams(Spy(), work, cams, [True] * len(images), IEMConfig(rounds=1, workers=2))
    assert overlapped == [True]


def test_cam_files_roundtrip_and_bad_files_name_themselves(tmp_path: Path):
    cam = np.random.default_rng(0).random((2, 7, 5)).astype(np.float32)
    path = write_cam(tmp_path / "a.npz", cam)
    np.testing.assert_allclose(read_cam(path, (7, 5), 2), cam, atol=1e-3)
    with pytest.raises(DataError, match="b.npz.*missing"):
        read_cam(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="c.npz.*corrupt"):
        read_cam(tmp_path / "c.npz")
    with pytest.raises(DataError, match="a.npz.*image is"):
        read_cam(path, (8, 5))
    with pytest.raises(DataError, match="a.npz.*2 class maps, expected 1"):
        read_cam(path, classes=1)


TINY_DFC = [*TINY_CLASSIFIER, "cam.iem.rounds=2", "cam.iem.tau_stop=0.3"]


@pytest.fixture(scope="module")
def cam_run(prepared_run: Path, tmp_path_factory) -> tuple[Path, object]:
    """A tiny DFC trained for 3 epochs on the shared prepared run (a copy of it), and its `cam` stage."""
    run_dir = tmp_path_factory.mktemp("camrun")
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    cfg = load_config(None, [*[f"dataset.synthetic.{k}={v}" for k, v in TINY.items()], *TINY_DFC])
    run = Run(run_dir, cfg, echo=lambda *_: None)
    run.run_stage("train-classifier")
    run.run_stage("cam")
    return run_dir, cfg


def test_cam_stage_outputs(cam_run):
    run_dir, cfg = cam_run
    out = run_dir / "cam"
    meta = json.loads((out / "cam.json").read_text())
    assert meta["classes"] == ["defect"] and meta["scale"] > 0
    rows = read_train_index(run_dir / "prepare" / "index.csv")
    with open(out / "scores.csv") as f:
        scores = {r["id"]: r for r in csv.DictReader(f)}
    assert set(scores) == {r.id for r in rows}
    assert set(next(iter(scores.values()))) == {"id", "score", "iem_rounds", "peak", "called"}
    assert meta["gate"] == "score"
    assert not (out / "raw").exists() and not (out / "rows.jsonl").exists()
    peaks_at_one = 0
    for r in rows:
        cam = read_cam(out / "cams" / f"{r.id}.npz", read_image(r.path).shape[:2], 1)
        assert cam.min() >= 0 and cam.max() <= 1
        s = float(scores[r.id]["score"])
        assert scores[r.id]["called"] == str(int(s >= cfg.cam.score_threshold))  # the score gates every image
        if s < cfg.cam.score_threshold:
            assert cam.max() == 0 and scores[r.id]["iem_rounds"] == "0"  # called OK: empty, no IEM
        peaks_at_one += bool(np.isclose(cam.max(), 1.0, atol=1e-3))
    assert peaks_at_one < len(rows)  # a dataset-level scale, not per-image min-max
    assert cam.dtype == np.float32 and np.load(out / "cams" / f"{r.id}.npz")["cam"].dtype == np.float16


def test_label_gate_keeps_the_cams_the_image_labels_name(cam_run, tmp_path: Path):
    """cam.gate=labels: on the training and validation images the image label decides (the score may say
    otherwise), on the test images the score; pseudo-labels and read_calls follow the stage's calls."""
    from wsss.cam.gate import read_calls
    from wsss.stages.pseudo_labels import run as pseudo_stage

    run_dir, cfg = cam_run
    # a gate no image's score reaches, so the labels alone can call an image defective
    gated = dataclasses.replace(cfg, cam=dataclasses.replace(cfg.cam, gate="labels", score_threshold=1.0))
    inputs = {"prepare": run_dir / "prepare", "train-classifier": run_dir / "train-classifier"}
    cam_stage(gated, inputs, tmp_path / "cam")
    assert json.loads((tmp_path / "cam" / "cam.json").read_text())["gate"] == "labels"
    calls = read_calls(tmp_path / "cam")
    rows = read_train_index(run_dir / "prepare" / "index.csv")
    with open(tmp_path / "cam" / "scores.csv") as f:
        iem = {r["id"]: int(r["iem_rounds"]) for r in csv.DictReader(f)}
    assert {r.split for r in rows} >= {"train", "val", "test"}
    for r in rows:
        cam = read_cam(tmp_path / "cam" / "cams" / f"{r.id}.npz")
        labelled = r.split in ("train", "val")
        assert calls[r.id] == (labelled and r.defective)  # test images: the score, which never reaches 1.0
        assert cam.any() == calls[r.id] and (calls[r.id] or iem[r.id] == 0)  # CAM and IEM for the calls only
    pseudo_stage(gated, {"prepare": run_dir / "prepare", "cam": tmp_path / "cam"}, tmp_path / "pl")
    for r in rows:
        if not calls[r.id]:
            assert not read_mask_png(tmp_path / "pl" / "masks" / f"{r.id}.png").any()
    assert any(read_mask_png(tmp_path / "pl" / "masks" / f"{r.id}.png").any() for r in rows if calls[r.id])


def test_present_classes_and_calls_of_an_older_table(tmp_path: Path):
    from wsss.cam.gate import present_classes, read_calls, score_errors_line
    from wsss.data.index import TrainRow

    def row(labels, split):
        return TrainRow("a", tmp_path / "a.png", labels, split, "a", -1)

    scores = [0.9, 0.1]
    both = ["scratch", "pit"]
    assert present_classes(row((), "train"), scores, both, 0.5).tolist() == [True, False]  # the score
    assert present_classes(row(("pit",), "train"), scores, both, 0.5, "labels").tolist() == [False, True]
    assert present_classes(row(("pit",), "val"), scores, both, 0.5, "labels").tolist() == [False, True]
    assert present_classes(row(("pit",), "test"), scores, both, 0.5, "labels").tolist() == [True, False]
    assert present_classes(row(("pit",), "train"), [0.2], ["defect"], 0.5, "labels").tolist() == [True]  # binary
    # a scores.csv from before the gate was recorded: the score against cam.json's threshold
    (tmp_path / "scores.csv").write_text("id,score,iem_rounds,peak\na,0.7,1,2.0\nb,0.3,0,1.0\n")
    (tmp_path / "cam.json").write_text(json.dumps({"classes": ["defect"], "score_threshold": 0.5}))
    assert read_calls(tmp_path) == {"a": True, "b": False}
    rows = [row((), "train"), row(("pit",), "train"), row((), "test")]
    rows = [dataclasses.replace(r, id=i) for r, i in zip(rows, "abc", strict=True)]
    line = score_errors_line(rows, {"a": 0.7, "b": 0.3, "c": 0.9}, 0.5, "score")
    assert "calls 1 of 1 OK training images defective and 1 of 1 defective ones OK" in line  # test images not counted
    assert "`cam.gate: labels` lets" in line and "their labels decide (" in score_errors_line(
        rows, {"a": 0.7, "b": 0.3, "c": 0.9}, 0.5, "labels"
    )
    (tmp_path / "cam.json").write_text(json.dumps({"classes": ["defect"]}))
    with pytest.raises(DataError, match="cam.json.*score_threshold"):
        read_calls(tmp_path)


def test_cam_stage_refuses_a_classifier_of_another_config(cam_run, tmp_path: Path):
    run_dir, cfg = cam_run
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    meta_path = bad / "train-classifier" / "dfc.json"
    meta = json.loads(meta_path.read_text())
    meta["classes"] = ["a", "b", "c"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StageError, match="dfc"):
        cam_stage(cfg, {"prepare": bad / "prepare", "train-classifier": bad / "train-classifier"}, tmp_path / "o")
    meta["classes"], meta["backbone"]["name"] = ["defect"], "resnet10t"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StageError, match="dfc.safetensors.*do not match"):
        cam_stage(cfg, {"prepare": bad / "prepare", "train-classifier": bad / "train-classifier"}, tmp_path / "o")


def test_cam_output_stride_dilates_the_trained_classifier_for_finer_maps(cam_run, tmp_path: Path):
    """``cam.output_stride`` rebuilds the DFC as trained (stride 16) at stride 8: the same weights, maps of twice the
    side; the stage runs with it and is stale against the run's own `cam`."""
    from wsss.models.classifier import load_dfc

    run_dir, cfg = cam_run
    (trained, meta), (fine, fine_meta) = (load_dfc(run_dir / "train-classifier", "cpu", s) for s in (0, 8))
    assert meta["stride"] == 16 and fine_meta["stride"] == 8 and fine.backbone.stride == 8
    for a, b in zip(trained.state_dict().values(), fine.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        coarse_map, fine_map = trained(x).cams, fine(x).cams
    assert coarse_map.shape[-2:] == (4, 4) and fine_map.shape[-2:] == (8, 8)
    out = tmp_path / "cam"
    inputs = {"prepare": run_dir / "prepare", "train-classifier": run_dir / "train-classifier"}
    cam_stage(dataclasses.replace(cfg, cam=dataclasses.replace(cfg.cam, output_stride=8)), inputs, out)
    assert len(list((out / "cams").glob("*.npz"))) == len(read_train_index(run_dir / "prepare" / "index.csv"))
    fine_cfg = load_config(None, [*[f"dataset.synthetic.{k}={v}" for k, v in TINY.items()], *TINY_DFC,
                                  "cam.output_stride=8"])  # fmt: skip
    run = Run(run_dir, fine_cfg, echo=lambda *_: None)
    assert run.status(get_stage("cam")) == "stale" and run.status(get_stage("train-classifier")) == "done"
    with pytest.raises(ConfigError, match="cam.output_stride"):
        load_config(None, ["cam.output_stride=4"])


def test_cam_stage_resumes_after_a_kill(cam_run, tmp_path: Path):
    """A partial pass 1 (rows.jsonl + raw files of some images) is continued, and gives the same CAMs."""
    run_dir, cfg = cam_run
    inputs = {"prepare": run_dir / "prepare", "train-classifier": run_dir / "train-classifier"}
    full = tmp_path / "full"
    cam_stage(cfg, inputs, full)
    part = tmp_path / "part"
    (part / "raw").mkdir(parents=True)
    ids = [r.id for r in read_train_index(run_dir / "prepare" / "index.csv")][:5]
    # what a killed run leaves: finished rows (and a half-written last line) with their raw CAMs
    lines = []
    for sid in ids:
        with np.load(full / "cams" / f"{sid}.npz") as z:
            np.save(part / "raw" / f"{sid}.npy", np.full_like(z["cam"], 7.0))  # marker values: must be reused
    with open(full / "scores.csv") as f:
        for r in csv.DictReader(f):
            if r["id"] in ids:
                lines.append(
                    json.dumps(
                        {
                            "id": r["id"],
                            "score": float(r["score"]),
                            "scores": [float(r["score"])],
                            "iem_rounds": int(r["iem_rounds"]),
                            "peak": 7.0,
                        }
                    )
                )
    (part / "rows.jsonl").write_text("\n".join(lines) + '\n{"id": "trunc')
    cam_stage(cfg, inputs, part)
    for sid in ids:
        cam = read_cam(part / "cams" / f"{sid}.npz")
        assert cam.max() == 0 or np.allclose(cam[cam > 0], cam.max())  # built from the marker raw file


def test_lift_raises_weak_cams_of_called_defects_only():
    from wsss.cam.extract import normalise_cam

    raw = np.zeros((2, 4, 4), np.float32)
    raw[0, 1, 1], raw[0, 2, 2] = 2.0, 1.0  # class 0: weak (peak 2 under the dataset scale 10), called present
    raw[1, 0, 0] = 20.0  # class 1: strong, called absent
    present = np.array([True, False])  # class 0 called present, class 1 absent
    plain = normalise_cam(raw, present, scale=10.0)
    assert plain[0].max() == pytest.approx(0.2) and not plain[1].any()  # the dataset scale: stays under bg_prior
    lifted = normalise_cam(raw, present, scale=10.0, lift_floor=0.5)
    assert lifted[0, 1, 1] == 1.0 and lifted[0, 2, 2] == pytest.approx(0.5)  # by its own peak, shape kept
    assert not lifted[1].any()  # the gate still empties a class called absent
    floor = normalise_cam(raw, present, scale=10.0, lift_floor=4.0)
    assert floor[0].max() == pytest.approx(0.5)  # never divided by less than the OK images' peaks
    strong = normalise_cam(raw * 10, np.array([True, True]), scale=10.0, lift_floor=0.5)
    assert strong[1, 0, 0] == 1.0 and strong[0, 2, 2] == pytest.approx(1.0)  # peaks >= the scale: unchanged rule


def test_cam_methods_are_registered_and_grad_cam_is_the_score_map_under_mean_pooling():
    """With a linear CAM head and (near-)average pooling, Grad-CAM's map is the score map less its bias, divided by
    the map's area: two registered methods that must agree where theory says they do."""
    from wsss.cam.methods import CAM_METHODS, get_cam_method
    from wsss.models.classifier import DFC

    assert {"score-map", "grad-cam"} <= set(CAM_METHODS.names())
    with pytest.raises(ConfigError, match=r"cam\.method.*available CAM methods: .*grad-cam"):
        get_cam_method("gradcam++")
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 6, 3, stride=4, padding=1))
    backbone.out_channels, backbone.stride = 6, 4
    model = DFC(backbone, num_classes=2, lse_r=1e-4).eval()  # LSE with r -> 0 is the mean
    x = torch.randn(3, 1, 32, 40)
    score, p1 = get_cam_method("score-map")(model, model, x)
    grad, p2 = get_cam_method("grad-cam")(model, model, x)
    area = score.shape[-2] * score.shape[-1]
    bias = model.cam_head.bias.detach().view(1, -1, 1, 1)
    assert grad.shape == score.shape == (3, 2, 8, 10) and torch.allclose(p1, p2, atol=1e-6)
    assert torch.allclose(grad * area, score - bias, atol=1e-3)
    ext = CamExtractor(model, (32, 40), 1, CamConfig(scales=[1.0], method="grad-cam"), "cpu")
    cams, scores = ext([np.random.default_rng(0).integers(0, 255, (32, 40), dtype=np.uint8)])
    assert cams[0].shape == (2, 32, 40) and (cams[0] >= 0).all() and scores.shape == (1, 2)


def test_a_seed_ensemble_trains_its_members_once_and_averages_their_cams(
    prepared_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """classifier.ensemble=2: two DFCs of different seeds; a stage killed in the second member resumes it without
    training the first again; the CAMs are the members' mean, view by view."""
    from wsss.models.classifier import ensemble_size, load_dfc, load_dfcs
    from wsss.train.classifier import ClassifierTrainer

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    overrides = [*[f"dataset.synthetic.{k}={v}" for k, v in TINY.items()], *TINY_DFC, "classifier.epochs=1"]
    cfg = load_config(None, [*overrides, "classifier.ensemble=2"])
    seeds: list[int] = []
    fit = ClassifierTrainer.fit

    def dies_in_member_two(self):
        seeds.append(self.seed)
        if len(seeds) == 2:
            raise KeyboardInterrupt  # killed while the second member trains
        return fit(self)

    monkeypatch.setattr(ClassifierTrainer, "fit", dies_in_member_two)
    with pytest.raises(KeyboardInterrupt):
        Run(run_dir, cfg, echo=lambda *_: None).run_stage("train-classifier")
    monkeypatch.setattr(ClassifierTrainer, "fit", lambda self: seeds.append(self.seed) or fit(self))
    Run(run_dir, cfg, echo=lambda *_: None).run_stage("train-classifier")
    assert seeds == [0, 10007, 10007]  # member 0 once, member 1 again after the kill
    out = run_dir / "train-classifier"
    assert ensemble_size(out) == 2 and not list(out.rglob("checkpoints"))
    (m0, _), (m1, _) = load_dfc(out), load_dfc(out / "members" / "1")
    assert not torch.equal(m0.cam_head.weight, m1.cam_head.weight)

    img, _ = _scratch_image(64)
    ccfg = CamConfig(scales=[1.0], flip_floor=0.0)
    cams, scores = CamExtractor(load_dfcs(out)[0], (64, 64), 1, ccfg, "cpu")([img])
    (c0, s0), (c1, s1) = (CamExtractor(m, (64, 64), 1, ccfg, "cpu")([img]) for m in (m0, m1))
    np.testing.assert_allclose(scores, (s0 + s1) / 2, atol=1e-6)
    # the maps are averaged before the relu, view by view: the ensemble's view is the members' mean
    x = torch.randn(3, 1, 64, 64)
    ens, one, two = (CamExtractor(m, (64, 64), 1, ccfg, "cpu") for m in (load_dfcs(out)[0], m0, m1))
    (me, pe), (ma, pa), (mb, pb) = ens.views(x), one.views(x), two.views(x)
    torch.testing.assert_close(me, (ma + mb) / 2)
    torch.testing.assert_close(pe, (pa + pb) / 2)
    assert cams[0].shape == c0[0].shape == c1[0].shape
    Run(run_dir, cfg, echo=lambda *_: None).run_stage("cam")
    assert (run_dir / "cam" / "scores.csv").is_file()


def _shifting_dfc(shift: int) -> nn.Module:
    """A DFC whose class map is its input moved ``shift`` pixels right and down (a delta kernel off its centre)."""
    from wsss.models.classifier import DFC

    conv = nn.Conv2d(1, 1, 9, padding=4, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 4 - shift, 4 - shift] = 1.0
    conv.out_channels, conv.stride = 1, 1
    model = DFC(conv, num_classes=1, lse_r=5.0).eval()
    with torch.no_grad():
        model.cam_head.weight.fill_(1.0)
        model.cam_head.bias.zero_()
    return model


def test_flip_consistency_is_one_for_a_map_on_the_defect_and_falls_as_the_map_moves_beside_it():
    """A class map that sits on the defect does not move under flips (consistency 1); one moved beside it lands on
    the other side once flipped back, and the further it moves the lower the score; an empty map counts 0."""
    from wsss.cam.consistency import flip_consistency

    img, _ = _scratch_image(64)
    ink = 255 - img  # the scratch bright on a dark surface: the map is the defect
    images = [ink, np.ascontiguousarray(ink.T)]
    cfg = CamConfig(channels_last=False)
    on, near, far = (flip_consistency(_shifting_dfc(s), images, (64, 64), 1, cfg) for s in (0, 1, 4))
    assert on == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > near > far
    assert flip_consistency(_shifting_dfc(0), [np.zeros((64, 64), np.uint8)], (64, 64), 1, cfg) == 0.0
    with pytest.raises(ValueError, match="at least one image"):
        flip_consistency(_shifting_dfc(0), [], (64, 64), 1, cfg)


def test_a_flip_consistent_ensemble_keeps_its_most_consistent_member(prepared_run: Path, tmp_path: Path):
    """classifier.ensemble_pick=flip-consistent: the stage records each member's flip consistency and keeps the
    highest; the cam stage and the anomaly stage's classifier then take that member alone; back to the mean, the
    record goes."""
    from wsss.cam.consistency import member_consistency
    from wsss.models.classifier import ENSEMBLE_FILE, load_dfc, load_dfcs, main_member

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    overrides = [*[f"dataset.synthetic.{k}={v}" for k, v in TINY.items()], *TINY_DFC, "classifier.epochs=1"]
    cfg = load_config(None, [*overrides, "classifier.ensemble=2", "classifier.ensemble_pick=flip-consistent"])
    Run(run_dir, cfg, echo=lambda *_: None).run_stage("train-classifier")
    out = run_dir / "train-classifier"
    record = json.loads((out / ENSEMBLE_FILE).read_text())
    scores = record["consistency"]
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    assert record["kept"] == int(np.argmax(scores))
    kept_dir = out if record["kept"] == 0 else out / "members" / "1"
    assert main_member(out) == kept_dir
    # the score is the member's own: recomputed on the same images
    rows = [r for r in read_train_index(run_dir / "prepare" / "index.csv", "train") if r.labels]
    model, _ = load_dfc(kept_dir)
    again = member_consistency(kept_dir, [read_image(r.path) for r in rows])
    assert again == pytest.approx(max(scores), abs=1e-4)
    models, _ = load_dfcs(out)
    assert len(models) == 1 and torch.equal(models[0].cam_head.weight, model.cam_head.weight)
    Run(run_dir, cfg, echo=lambda *_: None).run_stage("cam")
    assert (run_dir / "cam" / "scores.csv").is_file()
    # a record that names no member of the folder is refused with the fix
    (out / ENSEMBLE_FILE).write_text(json.dumps(record | {"kept": 5}))
    with pytest.raises(StageError, match=r"ensemble\.json.*kept member 5.*train-classifier --force"):
        load_dfcs(out)
    # the mean again: every member counts and the record is gone
    mean = load_config(None, [*overrides, "classifier.ensemble=2"])
    Run(run_dir, mean, echo=lambda *_: None).run_stage("train-classifier")
    assert not (run_dir / "train-classifier" / ENSEMBLE_FILE).exists()
    assert len(load_dfcs(run_dir / "train-classifier")[0]) == 2
