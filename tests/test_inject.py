"""Defect injection into OK training images (`retrain.inject`, `segmenter.inject`): exact masks by construction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_segmenter import SIZE, make_data, rcfg

from wsss.artifacts.masks import CONFIDENCE_FILE, read_confidence
from wsss.config import InjectConfig, load_config
from wsss.data.index import read_train_index
from wsss.data.synthetic import DEFECTS, make_texture
from wsss.errors import ConfigError
from wsss.labels import IGNORE
from wsss.train.inject import Injector, PasteSource, paste, paste_sources, procedural
from wsss.train.segmenter import SegmenterTrainer
from wsss.train.segmenter_data import PseudoMaskDataset, SegmenterData

ON = InjectConfig(enabled=True, prob=1.0)


def surface(seed: int = 0, size: int = 48, channels: int = 1) -> np.ndarray:
    img = make_texture(np.random.default_rng(seed), size, "noise")
    return np.repeat(img[..., None], 3, axis=2) if channels == 3 else img


def source(blend: int = 2, label: int = 1) -> PasteSource:
    """A dark disc on a bright surface, cut as the dataset cuts it (its region plus a margin)."""
    img = np.full((40, 40), 200, np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (20, 20), 6, label, -1)
    img[mask > 0] = 40
    mask[(cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0) & (mask == 0)] = IGNORE  # an ignore ring, never pasted
    (src,) = paste_sources(img, mask, [label], 4, blend)
    return src


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0


def check_exact(before: np.ndarray, after: np.ndarray, target: np.ndarray, label: int, border: int) -> None:
    """The target is ``label`` where the defect is, ignore only on changed pixels next to it, 0 where unchanged."""
    changed = before != after
    changed = changed.any(axis=2) if changed.ndim == 3 else changed
    defect = target == label
    assert defect.any()
    assert set(np.unique(target)) <= {0, label, IGNORE}
    assert (target[~changed & ~defect] == 0).all()  # untouched pixels: background at full weight
    assert (target[changed & ~defect] == IGNORE).all()  # the feathered border: ignore
    assert not (changed & ~dilate(defect, border)).any()  # ... and only within the defect's dilation
    assert changed[defect].mean() > 0.9  # the defect's own pixels did change


def test_paste_sources_take_confident_defect_pixels_only():
    src = source(blend=2)
    assert src.label == 1 and src.region.sum() == (cv2.circle(np.zeros((40, 40), np.uint8), (20, 20), 6, 1, -1)).sum()
    assert src.image.shape == src.region.shape and src.image.shape[0] == 13 + 2 * 3  # bounding box + blend + 1
    assert (src.image[src.region] == 40).all()
    small = np.zeros((20, 20), np.uint8)
    small[2, 2] = 1  # one pixel: below min_area
    small[10:14, 10:14] = 2  # class 2 while the image is labelled class 1 only
    assert paste_sources(np.zeros((20, 20), np.uint8), small, [1], 4, 0) == []


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("blend", [0, 2])
def test_pasted_region_lands_inside_the_image_with_an_exact_mask(channels: int, blend: int):
    img, src = surface(1, 48, channels), source(blend, label=2)
    if channels == 3:
        src = dataclasses.replace(src, image=np.repeat(src.image[..., None], 3, axis=2))
    for seed in range(6):
        out = paste(img, src, np.random.default_rng(seed), 0.3, blend)
        assert out is not None
        new, target = out
        assert new.shape == img.shape and new.dtype == np.uint8 and target.shape == img.shape[:2]
        check_exact(img, new, target, 2, blend)
        assert 0.6**2 * src.region.sum() <= (target == 2).sum() <= 1.4**2 * src.region.sum()  # scale 0.3, rounded
        gray = new if channels == 1 else new[..., 0]
        assert gray[target == 2].mean() < img.mean() - 60  # the dark disc keeps its contrast to the surface


def test_paste_shifts_the_region_to_the_surface_brightness():
    src = source(blend=2)
    bright = np.full((48, 48), 230, np.uint8)  # the source surface was 200, its disc 160 below it
    new, target = paste(bright, src, np.random.default_rng(0), 0.0, 2)
    assert abs(float(new[target == 1].mean()) - 70.0) < 2  # 230 - 160, not the source's absolute 40
    assert (new[target == 0] == 230).all()


@pytest.mark.parametrize("kind", DEFECTS)
@pytest.mark.parametrize("shape", [(48, 48), (40, 64)])
def test_procedural_defect_has_an_exact_mask(kind: str, shape: tuple[int, int]):
    img = cv2.resize(surface(2, 64), shape[::-1])
    for seed in range(3):
        new, target = procedural(img, np.random.default_rng(seed), kind, (3.0, 5.0), label=1)
        border = max(shape) if kind == "stain" else 0  # a stain's soft tail changes pixels outside its mask
        check_exact(img, new, target, 1, border)
        diff = np.abs(new.astype(int) - img.astype(int))[target == 1]
        assert diff.max() >= 2.0 * img.std()  # contrast 3-5 x the image's own std (a scratch peaks at >= 0.7 x)


def test_injector_is_deterministic_and_respects_prob_and_modes():
    img, src = surface(3), source()
    inj = Injector(ON, [src], procedural_label=1)
    a = inj(img, np.random.default_rng([7, 0, 3, 1]))
    b = inj(img, np.random.default_rng([7, 0, 3, 1]))
    assert a is not None and b is not None and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    never = Injector(dataclasses.replace(ON, prob=0.0), [src], 1)
    assert never(img, np.random.default_rng(0)) is None
    # multi-class: no procedural defects; without sources nothing is injectable
    assert not Injector(ON, [], procedural_label=None).active
    paste_only = Injector(dataclasses.replace(ON, procedural_weight=5.0), [src], procedural_label=None)
    for seed in range(10):
        _, target = paste_only(img, np.random.default_rng(seed))
        assert (target == 1).sum() == src.region.sum() or abs((target == 1).sum() / src.region.sum() - 1) < 0.5


def make_set(tmp_path: Path, **inject) -> tuple[PseudoMaskDataset, list]:
    rows, masks, _ = make_data(tmp_path, n_defect=4, n_ok=4)
    ok = cv2.imread(str(masks / f"{rows[-1].id}.png"), cv2.IMREAD_UNCHANGED)
    ok[2:6, 2:6] = 1  # an OK image with a (wrong) defect blob in its pseudo-mask: the DFC called it defective
    cv2.imwrite(str(masks / f"{rows[-1].id}.png"), ok)
    confidence = {r.id: 0.9 if i % 2 else 0.5 for i, r in enumerate(rows)}
    cfg = dataclasses.replace(ON, **inject)
    return PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), inject=cfg, confidence=confidence, seed=3), rows


def test_dataset_injects_into_ok_images_only_and_deterministically(tmp_path: Path):
    ds, rows = make_set(tmp_path, prob=0.5)
    ok = [i for i, r in enumerate(rows) if not r.labels]
    assert ds.injector is not None and len(ds.injector.sources) == 2  # the confident defective images' rectangles
    seen = {"injected": 0, "plain": 0}
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(rows)):
            item, again = ds[i], ds[i]
            assert torch.equal(item["image"], again["image"]) and torch.equal(item["mask"], again["mask"])
            if i not in ok:
                assert item["injected"] == 0  # defective images keep their pseudo-masks
                continue
            if item["injected"]:
                seen["injected"] += 1
                assert (item["mask"] == 1).any() and item["target"].tolist() == [1.0]
            else:
                seen["plain"] += 1
                assert (item["mask"] == 0).all() and item["target"].tolist() == [0.0]  # OK: all background
    assert seen["injected"] > 0 and seen["plain"] > 0
    off, _ = make_set(tmp_path / "off", enabled=False)
    assert off.injector is None and (off[len(rows) - 1]["mask"] == 1).any()  # unchanged when off


def test_ok_background_alone_clears_the_ok_images_blobs_and_injects_nothing(tmp_path: Path):
    rows, masks, _ = make_data(tmp_path, n_defect=4, n_ok=4)
    ok = cv2.imread(str(masks / f"{rows[-1].id}.png"), cv2.IMREAD_UNCHANGED)
    ok[2:6, 2:6] = 1  # an OK image with a (wrong) defect blob in its pseudo-mask: the DFC called it defective
    cv2.imwrite(str(masks / f"{rows[-1].id}.png"), ok)
    plain = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), seed=3)
    clean = PseudoMaskDataset(rows, masks, ["defect"], (SIZE, SIZE), seed=3, ok_background=True)
    assert not rows[-1].labels and (plain[len(rows) - 1]["mask"] == 1).any()  # trained as is by default
    assert (clean[len(rows) - 1]["mask"] == 0).all() and clean.injector is None
    for i, r in enumerate(rows):
        assert clean[i]["injected"] == 0
        if r.labels:  # defective images keep their pseudo-masks
            assert torch.equal(clean[i]["mask"], plain[i]["mask"])


def test_min_confidence_selects_the_paste_sources(tmp_path: Path):
    ds, _ = make_set(tmp_path, min_confidence=0.95, procedural_weight=0.0)
    assert ds.injector is not None and ds.injector.sources == [] and not ds.injector.active
    ds, _ = make_set(tmp_path / "b", max_sources=1)
    assert ds.injector is not None and len(ds.injector.sources) == 1


def test_trainer_checks_inject_settings_and_reads_the_confidence_table(tmp_path: Path):
    from wsss.artifacts.masks import CONFIDENCE_FILE as STAGE_FILE  # what the mask stages write

    assert CONFIDENCE_FILE == STAGE_FILE
    rows, masks, _ = make_data(tmp_path, n_defect=3, n_ok=3)
    (masks.parent / CONFIDENCE_FILE).write_text("id,confidence\n" + "".join(f"{r.id},0.9\n" for r in rows))
    assert read_confidence(masks.parent / CONFIDENCE_FILE) == {r.id: 0.9 for r in rows}
    kw = {"device": "cpu", "echo": lambda *_: None}
    bad = rcfg(inject=dataclasses.replace(ON, paste_weight=0.0, procedural_weight=0.0))
    with pytest.raises(ConfigError, match="retrain.inject.paste_weight"):
        SegmenterTrainer(bad, SegmenterData(rows, masks, ["defect"], 1), tmp_path / "out", **kw)
    bad = rcfg(inject=dataclasses.replace(ON, contrast=[5.0, 2.0]))
    with pytest.raises(ConfigError, match="retrain.inject.contrast"):
        SegmenterTrainer(bad, SegmenterData(rows, masks, ["defect"], 1), tmp_path / "out", **kw)
    nothing = rcfg(inject=dataclasses.replace(ON, min_confidence=1.0))  # no source, and two classes: nothing to inject
    with pytest.raises(ConfigError, match="retrain.inject"):
        two = [dataclasses.replace(r, labels=("a",) if r.labels else ()) for r in rows]
        SegmenterTrainer(nothing, SegmenterData(two, masks, ["a", "b"], 1), tmp_path / "out", **kw)
    trainer = SegmenterTrainer(
        rcfg(epochs=1, inject=ON), SegmenterData(rows, masks, ["defect"], 1), tmp_path / "out", **kw
    )
    assert trainer.train_set.injector is not None and len(trainer.train_set.injector.sources) == 3
    assert trainer.fit()["epochs_run"] == 1


def test_inject_config_keys_and_ranges():
    cfg = load_config(None, ["segmenter.inject.enabled=true", "retrain.inject.kinds=[scratch, stain]"])
    assert cfg.segmenter.inject.enabled and not cfg.retrain.inject.enabled
    assert cfg.retrain.inject.kinds == ["scratch", "stain"] and list(InjectConfig().kinds) == list(DEFECTS)
    for bad, key in (
        ("segmenter.inject.prob=1.5", "segmenter.inject.prob"),
        ("retrain.inject.kinds=[dent]", "retrain.inject.kinds"),
        ("retrain.inject.kinds=[]", "retrain.inject.kinds"),
        ("segmenter.inject.contrast=[0, 2]", "segmenter.inject.contrast"),
        ("segmenter.inject.scale=1", "segmenter.inject.scale"),
        ("segmenter.inject.min_confidence=-0.1", "segmenter.inject.min_confidence"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [bad])


def test_injection_on_the_tiny_run(full_run):
    """The tiny synthetic run's retrain masks as paste sources (its confidence.csv), procedural defects too."""
    run_dir, _ = full_run
    rows = [r for r in read_train_index(run_dir / "prepare" / "index.csv") if r.split == "train"]
    conf = read_confidence(run_dir / "retrain" / CONFIDENCE_FILE)
    ds = PseudoMaskDataset(rows, run_dir / "retrain" / "masks", ["defect"], (64, 64), inject=ON, confidence=conf)
    assert ds.injector is not None and ds.injector.sources
    items = [ds[i] for i, r in enumerate(rows) if not r.labels]
    assert items and all(it["injected"] == 1 and (it["mask"] == 1).any() for it in items)


def test_injected_samples_skip_both_distillation_terms(tmp_path: Path):
    from types import SimpleNamespace

    from wsss.train.segmenter_data import Teacher

    rows, masks, _ = make_data(tmp_path, n_defect=2, n_ok=2)
    trainer = SegmenterTrainer(
        rcfg(), SegmenterData(rows, masks, ["defect"], 1), tmp_path / "out", device="cpu", echo=lambda *_: None
    )
    trainer.teacher = Teacher(tmp_path, {}, bg_prior=0.4, kd_weight=1.0, temperature=2.0, score_weight=1.0)
    torch.manual_seed(0)
    out = SimpleNamespace(mask_logits=torch.randn(2, 2, 4, 4), cls_logits=torch.randn(2, 1))
    batch = {
        "mask": torch.zeros(2, 4, 4, dtype=torch.int64),
        "target": torch.zeros(2, 1),
        "reviewed": torch.zeros(2),
        "teacher": torch.softmax(torch.randn(2, 2, 4, 4), 1),
        "teacher_score": torch.full((2, 1), 0.1),
    }
    plain = trainer.losses(out, batch | {"injected": torch.zeros(2)})
    assert plain["loss_kd"] > 0 and plain["loss_score_kd"] > 0
    injected = trainer.losses(out, batch | {"injected": torch.ones(2)})
    assert injected["loss_kd"] == 0 and injected["loss_score_kd"] == 0
    assert injected["loss_seg"] == plain["loss_seg"]  # the mask loss counts injected samples in full
    half = trainer.losses(out, batch | {"injected": torch.tensor([1.0, 0.0])})
    only_second = trainer.losses(
        SimpleNamespace(mask_logits=out.mask_logits[1:], cls_logits=out.cls_logits[1:]),
        {k: v[1:] for k, v in batch.items()},
    )
    assert torch.isclose(half["loss_kd"], only_second["loss_kd"])
