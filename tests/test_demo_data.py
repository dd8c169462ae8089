"""The demo's data (real texture photographs with drawn defects) and its overview picture."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsss.config import SyntheticConfig
from wsss.data.photos import PHOTOS, photograph
from wsss.data.synthetic import DEFECTS, generate, generate_sample
from wsss.evaluation.report import ImageResult
from wsss.export.overview import COLUMNS, grid_shape, pick_rows, write_overview

SIZE = 96


def test_photographs_load_from_the_installed_wheel_without_network() -> None:
    # a fresh interpreter with every socket refused: the photographs are read from scikit-image's own data folder
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "from wsss.data.photos import PHOTOS, photograph\n"
        "print([photograph(n).shape for n in PHOTOS])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str([(512, 512)] * len(PHOTOS))
    for name in PHOTOS:
        img = photograph(name)
        assert img.dtype == np.uint8 and img.std() > 10  # a real texture, not a placeholder


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticConfig]:
    cfg = SyntheticConfig(n_ok=6, n_defect=8, size=64, seed=4, textures=list(PHOTOS))
    return generate(tmp_path_factory.mktemp("demo"), cfg), cfg


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open() as f:
        return list(csv.DictReader(f))


def test_demo_set_is_deterministic_per_seed(demo_set, tmp_path: Path) -> None:
    csv_path, cfg = demo_set
    again = generate(tmp_path / "a", cfg)
    other = generate(tmp_path / "b", SyntheticConfig(**{**cfg.__dict__, "seed": cfg.seed + 1}))
    for row in _rows(csv_path):
        img = (csv_path.parent / row["path"]).read_bytes()
        assert img == (again.parent / row["path"]).read_bytes()
        assert img != (other.parent / row["path"]).read_bytes()
    assert _rows(csv_path) == _rows(again)


def test_defect_masks_lie_where_the_pixels_changed() -> None:
    for i in range(16):
        defect = DEFECTS[i % len(DEFECTS)]
        clean, mask0, labels0 = generate_sample([9, i], SIZE, None, PHOTOS)
        img, mask, labels = generate_sample([9, i], SIZE, defect, PHOTOS)
        assert labels0 == () and not mask0.any()  # OK parts: empty masks
        assert labels[0] == defect and mask.any()
        # the same seed draws the same surface; the defect (and sensor noise) differ from it
        change = np.abs(img.astype(np.int16) - clean.astype(np.int16))
        inside, outside = change[mask > 0], change[mask == 0]
        assert inside.mean() > 4 * outside.mean() + 5, (defect, inside.mean(), outside.mean())


def test_defects_on_photographs_are_drawn_to_be_seen() -> None:
    # the photographs' shading hides what the procedural surfaces show: wider scratches and stronger stains there
    from skimage.morphology import skeletonize

    from wsss.data.synthetic import TEXTURES

    def widths_and_stains(surfaces: tuple[str, ...]) -> tuple[float, float]:
        widths, stains = [], []
        for i in range(8):
            _, mask, _ = generate_sample([3, i], 128, "scratch", surfaces, second=())
            line = mask > 0
            widths.append(line.sum() / skeletonize(line).sum())  # mean width in pixels
            clean, _, _ = generate_sample([4, i], 128, None, surfaces)
            img, mask, _ = generate_sample([4, i], 128, "stain", surfaces, second=())
            change = np.abs(img.astype(np.int16) - clean.astype(np.int16))[mask > 0]
            stains.append(float(np.percentile(change, 90)))
        return min(widths), min(stains)

    photo_width, photo_stain = widths_and_stains(PHOTOS)
    assert photo_width >= 1.9 and photo_stain >= 28
    procedural_width, procedural_stain = widths_and_stains(TEXTURES)  # the tests' surfaces keep their ranges
    assert procedural_width < 1.5 and procedural_stain < 28


def test_demo_csv_labels_match_masks(demo_set) -> None:
    csv_path, _ = demo_set
    for row in _rows(csv_path):
        mask = cv2.imread(str(csv_path.parent / row["mask"]), cv2.IMREAD_GRAYSCALE)
        assert bool(row["label"]) == bool(mask.any())


def _result(sid: str, iou: float) -> ImageResult:
    return ImageResult(id=sid, labels=("defect",), score=1.0, decision=True, iou=iou, gt_area=10, pred_area=10)


def test_overview_grid_has_one_row_per_pick(demo_set, tmp_path: Path) -> None:
    from wsss.data.index import EvalRow

    csv_path, _ = demo_set
    rows, results = [], []
    for k, r in enumerate(x for x in _rows(csv_path) if x["label"]):
        sid = Path(r["path"]).stem
        path, mask = csv_path.parent / r["path"], csv_path.parent / r["mask"]
        rows.append(EvalRow(id=sid, path=path, labels=("defect",), split="test", group=sid, fold=0, mask=mask))
        results.append(_result(sid, k / 10))
    picks = pick_rows(results)
    assert [(name, r.iou) for name, r in picks] == [("best", 0.7), ("median", 0.3), ("worst", 0.0)]
    masks = csv_path.parent / "masks"  # the ground truth stands in for both predicted columns
    out = write_overview(tmp_path / "overview.png", rows, results, masks, masks)
    img = cv2.imread(str(out))
    assert img.shape == grid_shape(3) and img.shape[1] == len(COLUMNS) * (img.shape[1] // len(COLUMNS))
    assert pick_rows([_result("a", 0.5)]) == [("best", _result("a", 0.5))]  # one image: one row, not three
