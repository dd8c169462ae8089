"""`wsss predict` and `wsss export onnx` on the tiny full run's segmenter: sizes, gating, bad input, ONNX parity."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from wsss.cli import cli
from wsss.data.images import read_image
from wsss.data.index import read_train_index
from wsss.evaluation.metrics import PROB_HALF


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def odd_images(full_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic images resized to odd sizes (one RGB), in a folder with a sub-folder."""
    run_dir, _ = full_run
    rows = read_train_index(run_dir / "prepare" / "index.csv")
    folder = tmp_path_factory.mktemp("odd")
    (folder / "sub").mkdir()
    for (h, w), row, name in zip(
        [(37, 53), (101, 67), (64, 64), (45, 130)], rows, ["a.png", "b.png", "sub/c.png", "d.jpg"], strict=False
    ):
        img = cv2.resize(read_image(row.path), (w, h))
        if name == "b.png":
            img = np.dstack([img, img // 2, img])
        cv2.imwrite(str(folder / name), img)
    return folder


def read_predictions(out: Path) -> dict[str, dict]:
    with open(out / "predictions.csv") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("size", ["model", "native", "48x80"])
def test_predict_returns_masks_of_each_input_size(full_run, odd_images: Path, tmp_path: Path, size: str):
    run_dir, _ = full_run
    r = invoke("predict", "--model", run_dir, odd_images, "--out", tmp_path / "out", "--size", size, "--batch", "3")
    assert r.exit_code == 0, r.output
    preds = read_predictions(tmp_path / "out")
    assert set(preds) == {"a", "b", "sub/c", "d"}
    for name, row in preds.items():
        src = next(odd_images.glob(f"{name}.*"))
        shape = read_image(src).shape[:2]
        mask = cv2.imread(str(tmp_path / "out" / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(tmp_path / "out" / "overlays" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        prob = cv2.imread(str(tmp_path / "out" / "probs" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and overlay.shape == (*shape, 3) and prob.shape == shape and prob.dtype == np.uint16
        assert set(np.unique(mask)) <= {0, 1}
        assert not (mask.astype(bool) & (prob < PROB_HALF)).any()  # one class: a mask pixel has P(defect) >= 1/2
        assert (row["decision"] == "ok") == (float(row["score"]) < 0.5) and (row["decision"] == "ok") <= (
            not mask.any()
        )
    assert (tmp_path / "out" / "labelmap.txt").read_text() == "0 background\n1 defect\n"


def test_a_threshold_of_one_gates_every_mask_off(full_run, odd_images: Path, tmp_path: Path):
    run_dir, _ = full_run
    r = invoke("predict", "--model", run_dir, odd_images, "--out", tmp_path, "--threshold", "1.0", "--no-overlays")
    assert r.exit_code == 0, r.output
    assert all(p["decision"] == "ok" for p in read_predictions(tmp_path).values())
    assert not any(cv2.imread(str(m), cv2.IMREAD_UNCHANGED).any() for m in (tmp_path / "masks").rglob("*.png"))
    assert not list((tmp_path / "overlays").iterdir())
    # the probability maps are not gated: the same whatever the threshold; --no-probs writes none
    r = invoke("predict", "--model", run_dir, odd_images, "--out", tmp_path / "half", "--no-overlays")
    assert r.exit_code == 0, r.output
    for name in ("a", "b", "sub/c", "d"):
        assert (tmp_path / "probs" / f"{name}.png").read_bytes() == (
            tmp_path / "half" / "probs" / f"{name}.png"
        ).read_bytes()
    r = invoke("predict", "--model", run_dir, odd_images, "--out", tmp_path / "none", "--no-overlays", "--no-probs")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "none" / "masks").rglob("*.png"))) == 4 and not list(
        (tmp_path / "none" / "probs").rglob("*")
    )


def test_unreadable_oversized_or_misnamed_images_are_all_listed_and_nothing_is_written(
    full_run, odd_images: Path, tmp_path: Path
):
    run_dir, _ = full_run
    mixed = tmp_path / "mixed"
    shutil.copytree(odd_images, mixed)
    (mixed / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (mixed / "sub" / "empty.jpg").write_bytes(b"")
    big = mixed / "big.png"
    cv2.imwrite(str(big), np.zeros((3000, 4000), np.uint8))  # 12 megapixels of black: a small file
    bad_name = os.fsencode(mixed) + b"/part\xff.png"
    with open(bad_name, "wb") as f:
        f.write((mixed / "a.png").read_bytes())
    r = invoke("predict", "--model", run_dir, mixed, "--out", tmp_path / "out", "--max-megapixels", "10")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "4 image(s) cannot be segmented; nothing was written" in r.output
    assert "broken.png" in r.output and "empty.jpg" in r.output and "not valid UTF-8" in r.output
    assert "big.png: 4000x3000 is 12.0 megapixels, over --max-megapixels 10" in r.output
    assert not (tmp_path / "out").exists()


def test_an_image_whose_pixels_are_truncated_is_skipped_and_listed_at_the_end(
    full_run, odd_images: Path, tmp_path: Path
):
    run_dir, _ = full_run
    mixed = tmp_path / "mixed"
    shutil.copytree(odd_images, mixed)
    whole = cv2.imencode(".png", np.full((40, 60), 90, np.uint8))[1].tobytes()
    (mixed / "cut.png").write_bytes(whole[: len(whole) // 2])  # its header reads, its pixels do not
    r = invoke("predict", "--model", run_dir, mixed, "--out", tmp_path / "out")
    assert r.exit_code == 1 and "1 image(s) could not be read" in r.output and "cut.png" in r.output
    assert set(read_predictions(tmp_path / "out")) == {"a", "b", "sub/c", "d"}


def test_images_with_other_channels_than_the_model_are_counted_in_a_warning(full_run, odd_images: Path, tmp_path: Path):
    run_dir, _ = full_run  # a gray model; b.png is colour
    r = CliRunner().invoke(cli, ["predict", "--model", str(run_dir), str(odd_images), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "warning: 1 colour image(s)" in r.stderr and "b.png" in r.stderr and "gray (1 channel) model" in r.stderr


def test_exif_orientation_is_applied_once_everywhere(tmp_path: Path):
    from PIL import Image

    from wsss.data.images import image_size, read_image

    pixels = np.zeros((20, 50, 3), np.uint8)
    pixels[:5, :10] = (200, 40, 40)  # a red block in the stored top-left corner
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    im.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    arr = read_image(tmp_path / "turned.jpg")
    assert arr.shape[:2] == (50, 20) and image_size(tmp_path / "turned.jpg") == (50, 20)
    assert arr[:10, -5:, 0].mean() > 150  # clockwise: the stored top-left corner is now the top-right


def test_predicting_into_a_folder_inside_the_input_skips_its_own_output(full_run, odd_images: Path, tmp_path: Path):
    run_dir, _ = full_run
    folder = tmp_path / "parts"
    shutil.copytree(odd_images, folder)
    for _ in range(2):  # the second run finds the first one's masks and overlays under its input: skipped
        r = invoke("predict", "--model", run_dir, folder, "--out", folder / "pred")
        assert r.exit_code == 0, r.output
        assert set(read_predictions(folder / "pred")) == {"a", "b", "sub/c", "d"}
    assert not (folder / "pred" / "masks" / "pred").exists()
    same = tmp_path / "same"
    shutil.copytree(odd_images, same)
    for _ in range(2):  # --out is the input folder itself: its images are still inputs, its masks/ never
        r = invoke("predict", "--model", run_dir, same, "--out", same)
        assert r.exit_code == 0, r.output
        assert set(read_predictions(same)) == {"a", "b", "sub/c", "d"}


def test_16_bit_images_are_refused_with_an_option_predict_has(full_run, odd_images: Path, tmp_path: Path):
    run_dir, _ = full_run
    folder = tmp_path / "deep"
    folder.mkdir()
    img = read_image(odd_images / "a.png").astype(np.uint16) * 257
    cv2.imwrite(str(folder / "deep.png"), img)
    r = invoke("predict", "--model", run_dir, folder, "--out", tmp_path / "refused")
    assert r.exit_code == 1 and "16-bit image" in r.output
    assert "pass --high-bit-depth scale" in r.output and "dataset.high_bit_depth" not in r.output
    r = invoke("predict", "--model", run_dir, folder, "--out", tmp_path / "scaled", "--high-bit-depth", "scale")
    assert r.exit_code == 0, r.output
    mask = cv2.imread(str(tmp_path / "scaled" / "masks" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == img.shape
    r = invoke("predict", "--model", run_dir, folder, "--out", tmp_path / "x", "--high-bit-depth", "clip")
    assert r.exit_code == 2 and "--high-bit-depth" in r.output


def test_bad_model_and_output_paths_are_clear_errors(full_run, odd_images: Path, tmp_path: Path):
    run_dir, _ = full_run
    (tmp_path / "file").write_text("x")
    r = invoke("predict", "--model", run_dir, odd_images, "--out", tmp_path / "file")
    assert r.exit_code == 2 and "exists and is not a folder" in r.output
    r = invoke("predict", "--model", tmp_path, odd_images, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no trained segmenter here" in r.output
    other = tmp_path / "other"
    shutil.copytree(run_dir / "train-segmenter", other, ignore=shutil.ignore_patterns("masks"))
    meta = json.loads((other / "segmenter.json").read_text())
    meta["backbone"]["name"] = "resnet10t"  # a checkpoint that belongs to another architecture
    (other / "segmenter.json").write_text(json.dumps(meta))
    r = invoke("predict", "--model", other, odd_images, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "segmenter.safetensors" in r.output and "do not match" in r.output
    assert not (tmp_path / "o").exists()
    r = invoke("predict", "--model", run_dir, tmp_path / "missing", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no such file or folder" in r.output


def test_onnx_export_matches_pytorch_and_predicts_the_same_masks(full_run, odd_images: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxscript, onnxruntime) is not installed")
    run_dir, _ = full_run
    r = invoke("export", "onnx", "--model", run_dir, "--out", tmp_path / "seg.onnx")
    assert r.exit_code == 0, r.output
    diff = float(r.output.rsplit("max abs diff ", 1)[1])
    assert diff < 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.onnx"]  # one self-contained file, no leftovers
    for model, out in ((run_dir, "torch"), (tmp_path / "seg.onnx", "onnx")):
        r = invoke("predict", "--model", model, odd_images, "--out", tmp_path / out, "--size", "native")
        assert r.exit_code == 0, r.output
    a, b = read_predictions(tmp_path / "torch"), read_predictions(tmp_path / "onnx")
    for name in a:
        assert float(a[name]["score"]) == pytest.approx(float(b[name]["score"]), abs=1e-4)
        ma = cv2.imread(str(tmp_path / "torch" / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        mb = cv2.imread(str(tmp_path / "onnx" / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert (ma != mb).mean() < 0.001  # identical up to pixels where the two classes tie within float error
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    r = invoke("predict", "--model", tmp_path / "junk.onnx", odd_images, "--out", tmp_path / "j")
    assert r.exit_code == 1 and "junk.onnx" in r.output
    r = invoke("export", "onnx", "--model", run_dir, "--out", tmp_path / "seg.txt")
    assert r.exit_code == 2 and "must end in .onnx" in r.output


def test_onnx_export_matches_pytorch_for_either_image_head_pooling(full_run, tmp_path: Path):
    """The run's segmenter pools its image head by LSE (the default, exported in the test above); a segmenter from
    before that default averages: both export with the same class logits as PyTorch, at every checked size."""
    pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxscript, onnxruntime) is not installed")
    import torch

    from wsss.models.segmenter import META_FILE, load_segmenter

    run_dir, _ = full_run
    lse, meta = load_segmenter(run_dir / "train-segmenter")
    assert meta["cls_lse_r"] == lse.cls_lse_r == 5.0
    seg = tmp_path / "average"
    shutil.copytree(run_dir / "train-segmenter", seg, ignore=shutil.ignore_patterns("masks"))
    (seg / META_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "cls_lse_r"}))  # an older meta
    average, _ = load_segmenter(seg)
    assert average.cls_lse_r == 0.0
    with torch.no_grad():
        x = torch.randn(1, average.backbone.in_chans, 64, 64)
        assert not torch.allclose(average(x).cls_logits, lse(x).cls_logits)
    for model, name in ((seg, "average.onnx"), (run_dir, "lse.onnx")):
        r = invoke("export", "onnx", "--model", model, "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        assert float(r.output.rsplit("max abs diff ", 1)[1]) < 1e-3  # class logits are among the compared outputs


class PositionRunner:
    """A runner that is not flip-equivariant: its defect logit grows with the column and with the input's mean in
    the top-left quarter, so each flipped view says something else; its image logit is that quarter's mean."""

    def __call__(self, x: np.ndarray):
        b, _, h, w = x.shape
        corner = x[:, 0, : h // 2, : w // 2].mean(axis=(1, 2))
        defect = np.linspace(-2, 2, w, dtype=np.float32)[None, None, :] + corner[:, None, None]
        logits = np.stack([np.zeros((b, h, w), np.float32), np.broadcast_to(defect, (b, h, w))], axis=1)
        return logits, corner[:, None].astype(np.float32)


def test_flipped_views_average_the_flipped_back_logits_and_keep_the_padding_on_its_side():
    from wsss.errors import ConfigError
    from wsss.inference import Predictor

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 45), dtype=np.uint8)  # not a multiple of the stride: padded bottom and right
    meta = {"classes": ["defect"], "in_chans": 1, "input_size": [30, 45], "stride": 8}
    plain = Predictor(PositionRunner(), meta)
    x = plain._input(image)[None]
    views = [PositionRunner()(v) for v in (x, x[..., ::-1], x[..., ::-1, :])]
    expected_mask = (views[0][0] + views[1][0][..., ::-1] + views[2][0][..., ::-1, :]) / 3
    expected_cls = (views[0][1] + views[1][1] + views[2][1]) / 3
    flipped = Predictor(PositionRunner(), meta | {"flips": True})
    mask, cls = flipped._run(x)
    np.testing.assert_allclose(mask, expected_mask, atol=1e-6)
    np.testing.assert_allclose(cls, expected_cls, atol=1e-6)
    # the left-right view's column ramp cancels the plain one's: the mean map is flat along the row
    assert np.ptp(mask[0, 1, 0, :45]) < np.ptp(plain._run(x)[0][0, 1, 0, :45]) / 2
    p_plain, p_flip = plain([image])[0], flipped([image])[0]
    assert p_plain.probs.shape == p_flip.probs.shape == (2, 30, 45) and not np.allclose(p_plain.probs, p_flip.probs)
    # the constructor's override wins over the meta, both ways
    np.testing.assert_allclose(Predictor(PositionRunner(), meta | {"flips": True}, flips=False)([image])[0].probs,
                               p_plain.probs)  # fmt: skip
    np.testing.assert_allclose(Predictor(PositionRunner(), meta, flips=True)([image])[0].probs, p_flip.probs)
    with pytest.raises(ConfigError, match="flips must be true or false"):
        Predictor(PositionRunner(), meta | {"flips": "yes"})


def test_the_segmenter_records_flips_and_predict_can_switch_them(full_run, odd_images: Path, tmp_path: Path):
    run_dir, _ = full_run
    meta = json.loads((run_dir / "train-segmenter" / "segmenter.json").read_text())
    assert meta["flips"] is False
    probs = {}
    for flag in ("--no-flips", "--flips"):  # the folder holds gray and RGB images of odd sizes
        r = invoke("predict", "--model", run_dir, odd_images, "--out", tmp_path / flag, "--no-overlays", flag)
        assert r.exit_code == 0, r.output
        probs[flag] = {
            name: cv2.imread(str(tmp_path / flag / "probs" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            for name in ("a", "b", "sub/c", "d")
        }
    for name, size in (("a", (37, 53)), ("b", (101, 67)), ("sub/c", (64, 64)), ("d", (45, 130))):
        assert probs["--flips"][name].shape == probs["--no-flips"][name].shape == size
        assert not np.array_equal(probs["--flips"][name], probs["--no-flips"][name])
