"""Synthetic defect data: determinism, masks, labels, contrast, sizes and detectability."""

from __future__ import annotations

import csv
import dataclasses
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsss.config import SyntheticConfig
from wsss.data.synthetic import DEFECTS, SURFACES, draw_defect, generate, generate_sample, make_texture
from wsss.errors import ConfigError

SIZE = 96


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _contrast(img: np.ndarray, mask: np.ndarray) -> float:
    """|mean inside the mask - median of a ring 3-10 px outside it|."""
    m = (mask > 0).astype(np.uint8)
    ring = cv2.dilate(m, _disk(10)).astype(bool) & ~cv2.dilate(m, _disk(3)).astype(bool)
    return abs(float(img[m > 0].mean()) - float(np.median(img[ring])))


def _auroc(pos: list[float], neg: list[float]) -> float:
    """Pairwise definition: P(score of a positive > score of a negative), ties count half."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def _deviation_score(img: np.ndarray) -> float:
    """Non-learned detector: smoothed deviation from a coarse median background, relative to its typical level."""
    f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5)
    small = cv2.medianBlur(cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA), 9)
    background = cv2.resize(small, img.shape[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)
    r = np.abs(f - background)
    return float(np.percentile(r, 99.8) / (np.median(r) + 1.0))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticConfig]:
    cfg = SyntheticConfig(n_ok=6, n_defect=10, size=64, seed=3)
    return generate(tmp_path_factory.mktemp("synthetic"), cfg), cfg


@pytest.mark.parametrize("kind", SURFACES)  # procedural and photographed
def test_texture_is_deterministic_uint8(kind: str) -> None:
    a = make_texture(np.random.default_rng(1), SIZE, kind)
    assert a.dtype == np.uint8 and a.shape == (SIZE, SIZE)
    assert np.array_equal(a, make_texture(np.random.default_rng(1), SIZE, kind))
    assert not np.array_equal(a, make_texture(np.random.default_rng(2), SIZE, kind))
    assert 3.0 < a.std() < 40.0  # textured, not flat and not saturated


def test_sample_determinism() -> None:
    for defect in (None, *DEFECTS):
        img, mask, labels = generate_sample([0, 7], SIZE, defect)
        img2, mask2, labels2 = generate_sample([0, 7], SIZE, defect)
        assert np.array_equal(img, img2) and np.array_equal(mask, mask2) and labels == labels2
        assert not np.array_equal(img, generate_sample([1, 7], SIZE, defect)[0])


def test_ok_masks_empty_defective_masks_not() -> None:
    for i in range(12):
        img, mask, labels = generate_sample([5, i], SIZE, None)
        assert labels == () and not mask.any()
        img, mask, labels = generate_sample([5, i], SIZE, DEFECTS[i % 4])
        assert labels[0] == DEFECTS[i % 4] and mask.any()
        assert set(np.unique(mask)) <= {0, 255} and mask.dtype == np.uint8 and img.dtype == np.uint8


def test_contrast_margins() -> None:
    contrast: dict[str, list[float]] = {k: [] for k in DEFECTS}
    for kind in DEFECTS:
        for i in range(16):
            img, mask, _ = generate_sample([6, i], SIZE, kind, second=())
            contrast[kind].append(_contrast(img, mask))
    for kind in ("scratch", "crack", "blob"):
        assert min(contrast[kind]) > 12.0 and np.mean(contrast[kind]) > 30.0, (kind, contrast[kind])
    assert min(contrast["stain"]) > 5.0, contrast["stain"]  # low contrast by design, but visible
    assert np.mean(contrast["stain"]) < min(np.mean(contrast[k]) for k in ("scratch", "crack", "blob"))


@pytest.mark.parametrize("kind", ["blob", "stain", "scratch"])
def test_sizes_vary(kind: str) -> None:
    areas = [int((generate_sample([7, i], 128, kind, second=())[1] > 0).sum()) for i in range(30)]
    assert max(areas) >= 10 * min(areas) if kind == "blob" else max(areas) >= 3 * min(areas)
    assert max(areas) <= 0.35 * 128 * 128


@pytest.mark.parametrize("kind", ["scratch", "crack"])
def test_thin_defects_are_thin(kind: str) -> None:
    for i in range(20):
        _, mask, _ = generate_sample([8, i], 128, kind, second=())
        width = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        # at most 3 px wide (distance 2 at the centre line); a crack's branch joining its trunk may add a pixel
        assert width.max() <= (2.0 if kind == "scratch" else 2.3)


def test_draw_defect_changes_only_near_mask() -> None:
    rng = np.random.default_rng(0)
    img = make_texture(rng, SIZE, "noise")
    out, mask = draw_defect(img, rng, "blob")
    assert mask.dtype == bool and mask.any()
    near = cv2.dilate(mask.astype(np.uint8), _disk(1)).astype(bool)
    assert np.array_equal(out[~near], img[~near])


def test_defects_are_detectable_without_learning() -> None:
    neg = [_deviation_score(generate_sample([9, 0, i], SIZE, None)[0]) for i in range(20)]
    pos = [_deviation_score(generate_sample([9, 1, i], SIZE, DEFECTS[i % 4])[0]) for i in range(20)]
    assert _auroc(pos, neg) > 0.8


def test_generate_writes_csv_images_and_masks(dataset: tuple[Path, SyntheticConfig]) -> None:
    csv_path, cfg = dataset
    assert csv_path.name == "labels.csv"
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "label", "mask"]
        rows = list(reader)
    assert len(rows) == cfg.n_ok + cfg.n_defect
    primary = Counter(r["label"].split(";")[0] for r in rows if r["label"])
    assert primary == Counter(cfg.defects[j % len(cfg.defects)] for j in range(cfg.n_defect))
    assert sum(1 for r in rows if not r["label"]) == cfg.n_ok
    for r in rows:
        img = cv2.imread(str(csv_path.parent / r["path"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(csv_path.parent / r["mask"]), cv2.IMREAD_UNCHANGED)
        assert img.shape == mask.shape == (cfg.size, cfg.size) and img.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert bool(mask.any()) == bool(r["label"])
        assert Path(r["path"]).stem.startswith("def_" if r["label"] else "ok_")


def test_generate_is_byte_identical_and_seeded(tmp_path: Path, dataset: tuple[Path, SyntheticConfig]) -> None:
    csv_path, cfg = dataset
    again = generate(tmp_path / "a", dataclasses.replace(cfg))
    files = sorted(p.relative_to(csv_path.parent) for p in csv_path.parent.rglob("*.png"))
    assert files == sorted(p.relative_to(again.parent) for p in again.parent.rglob("*.png"))
    assert csv_path.read_bytes() == again.read_bytes()
    assert all((csv_path.parent / f).read_bytes() == (again.parent / f).read_bytes() for f in files)
    other = generate(tmp_path / "b", dataclasses.replace(cfg, seed=cfg.seed + 1))
    f = files[0]
    assert (csv_path.parent / f).read_bytes() != (other.parent / f).read_bytes()


def test_generate_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate(tmp_path, SyntheticConfig(n_ok=48, n_defect=32, size=128))
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"defects": ["scratch", "dent"]}, "dataset.synthetic.defects"),
        ({"defects": []}, "dataset.synthetic.defects"),
        ({"textures": ["wood"]}, "dataset.synthetic.textures"),
        ({"n_ok": 0}, "dataset.synthetic.n_ok"),
        ({"n_defect": 0}, "dataset.synthetic.n_defect"),
        ({"size": 16}, "dataset.synthetic.size"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, change: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        generate(tmp_path, dataclasses.replace(SyntheticConfig(), **change))
    if "defects" in change and change["defects"]:
        assert "scratch, crack, blob, stain" in str(info.value)
    assert not (tmp_path / "labels.csv").exists()


def test_session_fixture_reads_back_through_the_csv_adapter(synthetic_csv: Path):
    from wsss.config import DatasetConfig
    from wsss.data.base import create_adapter

    samples = create_adapter(DatasetConfig(kind="csv", root=str(synthetic_csv)), synthetic_csv).scan()
    assert len(samples) == 24 and sum(bool(s.labels) for s in samples) == 12
    assert all(s.mask is not None and s.mask.is_file() for s in samples)
