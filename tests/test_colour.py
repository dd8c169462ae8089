"""Colour datasets end to end: every image mode read as documented, the CRF on decoded (read-only) colour images with
either backend, and a folder of mixed colour and gray images through the real CLI up to `predict` and the review."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsss.cli import cli
from wsss.config import CRFConfig
from wsss.data.images import probe_image, read_image
from wsss.data.synthetic import generate_sample
from wsss.refine.crf import dense_crf
from wsss.refine.pseudo import class_probs

# how each file of the folder below is stored: the mode written, its suffix, and the channels it is read with
MODES = [("RGB", ".png"), ("RGBA", ".png"), ("P", ".png"), ("LA", ".png"), ("L", ".png"), ("Pt", ".png")]
MODES += [("CMYK", ".jpg"), ("RGB", ".bmp")]


def colour_part(seed: int, defect: str | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A tinted synthetic texture (H, W, 3) uint8 and its 0/255 mask; a defect is a green stain on it."""
    gray, mask, _ = generate_sample([5, seed], 64, defect)
    gray, mask = cv2.resize(gray, size[::-1]), cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST)
    rgb = gray[..., None] * np.array([1.0, 0.8, 0.6] if seed % 2 else [0.6, 0.85, 1.0])
    rgb[mask > 0] *= (0.35, 1.0, 0.35)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def save(rgb: np.ndarray, path: Path, mode: str) -> None:
    """Write ``rgb`` in ``mode`` (``Pt``: a palette image with a transparent entry; LA and L: its gray)."""
    im = Image.fromarray(rgb)
    if mode in ("LA", "L"):
        im = Image.fromarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)).convert(mode)
    elif mode in ("P", "Pt"):
        im = im.quantize(64)
    elif mode != "RGB":
        im = im.convert(mode)
    im.save(path, **({"transparency": 0} if mode == "Pt" else {}))


@pytest.mark.parametrize(
    "mode, suffix, shape, converted",
    [
        ("RGB", ".png", (20, 24, 3), None),
        ("RGBA", ".png", (20, 24, 3), "RGBA -> RGB (alpha dropped)"),
        ("P", ".png", (20, 24, 3), "palette -> RGB"),
        ("Pt", ".png", (20, 24, 3), "palette -> RGB (transparency dropped)"),
        ("LA", ".png", (20, 24), "LA -> L (alpha dropped)"),
        ("L", ".png", (20, 24), None),
        ("CMYK", ".jpg", (20, 24, 3), "CMYK -> RGB"),
        ("CMYK", ".tif", (20, 24, 3), "CMYK -> RGB"),
    ],
)
def test_every_mode_is_read_to_the_documented_shape(tmp_path: Path, mode, suffix, shape, converted):
    rgb, _ = colour_part(1, None, (20, 24))
    save(rgb, tmp_path / f"x{suffix}", mode)
    a = read_image(tmp_path / f"x{suffix}")
    assert a.shape == shape and a.dtype == np.uint8
    assert a.flags.c_contiguous and a.flags.writeable  # never PIL's read-only buffer
    info = probe_image(tmp_path / f"x{suffix}")
    assert (info.channels, info.converted) == (1 if len(shape) == 2 else 3, converted)
    if mode in ("RGB", "RGBA") or suffix == ".tif":
        assert np.abs(a.astype(int) - rgb).max() <= 1  # RGB order and values kept (CMYK round trip: +-1)


def test_a_palette_image_with_a_gray_palette_and_transparency_is_gray(tmp_path: Path):
    im = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(tmp_path / "g.png", transparency=3)
    assert read_image(tmp_path / "g.png").shape == (8, 8)
    assert probe_image(tmp_path / "g.png").converted == "palette -> RGB (transparency dropped), gray -> grayscale"


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_dense_crf_takes_a_decoded_read_only_colour_image(backend: str, scale: float):
    rgb, mask = colour_part(3, "blob", (64, 64))
    image = np.asarray(Image.fromarray(rgb))  # what np.asarray of a PIL image gives: read-only
    assert not image.flags.writeable
    cam = cv2.GaussianBlur(np.roll(mask, 3, axis=1).astype(np.float32) / 255, (0, 0), 3)
    probs = class_probs((cam / cam.max())[None], 0.4)
    q = dense_crf(image, probs, CRFConfig(backend=backend, scale=scale, bilateral_sxy=6.4))
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)
    gt, before, after = mask > 0, probs.argmax(0) > 0, q.argmax(0) > 0
    assert (after & gt).sum() / (after | gt).sum() >= (before & gt).sum() / (before | gt).sum()


def hue_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A striped colour part with a disc as bright as its surroundings but of another hue; its mask and a shifted,
    blurred CAM as (2, H, W) probabilities."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    gt = (yy - 30) ** 2 + (xx - 38) ** 2 <= 14**2
    level = np.clip(rng.normal(140, 6, gt.shape) + 30 * np.sin(yy / 6.0), 0, 255)
    rgb = np.stack([level, level * 0.6, level * 0.5], -1)
    rgb[gt] = np.stack([level[gt] * 0.5, level[gt] * 0.9, level[gt] * 0.7], -1)  # same channel sum: hue only
    cam = cv2.GaussianBlur(np.roll(gt, 4, axis=1).astype(np.float32), (0, 0), 4)
    return np.clip(rgb, 0, 255).astype(np.uint8), gt, class_probs((cam / cam.max())[None], 0.4)


def test_the_torch_crf_sees_an_edge_of_hue_alone():
    """The torch backend's grid keeps the principal colour axes, so it snaps to an edge of hue alone like
    pydensecrf2 does, where the channel mean would see no edge at all."""
    image, gt, probs = hue_case()
    ref = dense_crf(image, probs, CRFConfig(bilateral_sxy=8)).argmax(0) > 0
    fast = dense_crf(image, probs, CRFConfig(backend="torch", bilateral_sxy=8)).argmax(0) > 0
    before = probs.argmax(0) > 0
    assert (ref & fast).sum() / (ref | fast).sum() >= 0.95
    assert (fast & gt).sum() / (fast | gt).sum() > (before & gt).sum() / (before | gt).sum() + 0.05


@pytest.mark.gpu
def test_the_torch_crf_on_colour_on_cuda_matches_the_cpu():
    image, _, probs = hue_case()  # two colour axes: the 4-D grid, blurred by shifted slices on the GPU too
    cpu = dense_crf(image, probs, CRFConfig(backend="torch", bilateral_sxy=8))
    gpu = dense_crf(image, probs, CRFConfig(backend="torch", bilateral_sxy=8, device="cuda"))
    assert np.abs(cpu - gpu).max() < 1e-3


# --- the CLI on a folder of colour and gray parts --------------------------------------------------------------

RECIPE = """\
run: {{name: colour, device: cpu}}
dataset: {{kind: folder, root: {root}}}
prepare:
  split: {{mode: ratios, train: 0.6, val: 0.2, test: 0.2, seed: 0}}
classifier:
  backbone: {{name: test_resnet, weights: null}}
  input_size: [64, 64]
  epochs: 4
  batch_size: 8
  clm: {{dim: 16, hidden: 32}}
cam: {{scales: [1.0], score_threshold: 0.3, norm_percentile: 90, iem: {{rounds: 1}}}}
pseudo:
  workers: 2
  crf: {{iterations: 3}}
segmenter:
  backbone: {{name: test_resnet, weights: null}}
  input_size: [64, 64]
  decoder_channels: 16
  epochs: 1
  batch_size: 8
  masks: pseudo-labels
"""


def invoke(*args) -> object:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 OK + 12 defective parts of two sizes, stored in every mode of MODES (RGB, RGBA, palette, palette with
    transparency, CMYK, and gray as LA and L); the folder's recipe is ``recipe.yaml`` beside it."""
    base = tmp_path_factory.mktemp("colour")
    root = base / "parts"
    for cls, defect in (("ok", None), ("stain", "blob")):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            rgb, _ = colour_part(i + 100 * bool(defect), defect, (64, 64) if i % 3 else (56, 72))
            mode, suffix = MODES[i % len(MODES)]
            save(rgb, root / cls / f"{i:02d}{suffix}", mode)
    (base / "recipe.yaml").write_text(RECIPE.format(root=root))
    return root


@pytest.fixture(scope="module")
def colour_run(colour_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder run through `pseudo-labels` by `wsss run`, then `train-segmenter` on those pseudo-masks."""
    run_dir = tmp_path_factory.mktemp("colour_run")
    recipe = colour_folder.parent / "recipe.yaml"
    invoke("run", "--config", recipe, "--run-dir", run_dir, "--to", "pseudo-labels")
    invoke("run-stage", "train-segmenter", "--config", recipe, "--run-dir", run_dir)
    return run_dir


def image_shapes(root: Path) -> dict[str, tuple[int, ...]]:
    return {f"{p.parent.name}__{p.stem}": read_image(p).shape for p in sorted(root.glob("*/*.*"))}


def test_a_mixed_colour_folder_gets_pseudo_masks_of_every_image(colour_folder: Path, colour_run: Path):
    import json

    dataset = json.loads((colour_run / "prepare" / "dataset.json").read_text())
    assert dataset["channels"] == 3  # any colour image makes the set colour; gray ones are repeated
    assert json.loads((colour_run / "train-classifier" / "dfc.json").read_text())["in_chans"] == 3
    shapes = image_shapes(colour_folder)
    assert {len(s) for s in shapes.values()} == {2, 3}
    for sid, shape in shapes.items():
        for stage in ("pseudo-labels", "train-segmenter"):
            mask = cv2.imread(str(colour_run / stage / "masks" / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
            assert mask is not None and mask.shape == shape[:2], (stage, sid)
    with open(colour_run / "pseudo-labels" / "confidence.csv") as f:
        assert len(list(csv.DictReader(f))) == len(shapes)


def test_predict_and_the_review_package_on_colour_images(colour_folder: Path, colour_run: Path, tmp_path: Path):
    out = tmp_path / "pred"
    invoke("predict", "--model", colour_run, colour_folder, "--out", out)
    with open(out / "predictions.csv") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    assert len(names) == 24
    for name in names:
        src = next(colour_folder.glob(f"{name}.*"))
        shape = read_image(src).shape[:2]
        assert cv2.imread(str(out / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED).shape == shape
        assert cv2.imread(str(out / "overlays" / f"{name}.png")).shape == (*shape, 3)
    review = tmp_path / "review"
    invoke("export", "review", "--run", colour_run, "--out", review, "--formats", "png,coco")
    images = {p.stem: p for p in (review / "images").iterdir()}
    assert len(images) == 24 and (review / "index.html").is_file()
    for sid in ("ok__01", "ok__05", "ok__06"):  # RGBA, palette with transparency, CMYK: shown as read, as PNG
        assert images[sid].suffix == ".png" and Image.open(images[sid]).mode == "RGB"
    assert images["ok__00"].suffix == ".png" and images["ok__07"].suffix == ".bmp"  # stored as shown: copied
