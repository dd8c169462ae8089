"""The PyTorch dense CRF against pydensecrf2, the reference: same masks on constructed cases."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from wsss.config import CRFConfig, PseudoConfig
from wsss.labels import IGNORE
from wsss.refine.crf import dense_crf
from wsss.refine.pseudo import class_probs, label_image
from wsss.refine.torch_crf import dense_crf_torch


def case(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured gray image with one darker defect, its true mask, and a CAM-like map: blurred and shifted."""
    rng = np.random.default_rng(seed)
    h, w = 96, 128
    img = np.clip(rng.normal(150, 8, (h, w)) + 6 * np.sin(np.arange(w) / 3.0)[None], 0, 255)
    gt = np.zeros((h, w), np.uint8)
    if kind == "rect":
        gt[30:60, 40:90] = 1
    elif kind == "disc":
        cv2.circle(gt, (64, 48), 18, 1, -1)
    elif kind == "scratch":
        cv2.line(gt, (15, 20), (110, 75), 1, 3)
    else:  # two blobs
        cv2.circle(gt, (35, 40), 12, 1, -1)
        cv2.rectangle(gt, (75, 55), (105, 80), 1, -1)
    img = np.where(gt > 0, img - 70, img).astype(np.uint8)
    cam = cv2.GaussianBlur(np.roll(gt.astype(np.float32), 3, axis=1), (0, 0), 4)
    return img, gt.astype(bool), cam / cam.max()


KINDS = ["rect", "disc", "scratch", "blobs"]


@pytest.mark.parametrize("kind", KINDS)
def test_fast_crf_agrees_with_pydensecrf2(kind: str):
    img, gt, cam = case(kind, KINDS.index(kind))
    probs = class_probs(cam[None], 0.4)
    ref = dense_crf(img, probs, CRFConfig()).argmax(0) > 0
    fast = dense_crf(img, probs, CRFConfig(backend="torch")).argmax(0) > 0
    agreement = (ref & fast).sum() / (ref | fast).sum()
    assert agreement >= 0.95, agreement
    iou = lambda m: (m & gt).sum() / (m | gt).sum()  # noqa: E731
    assert iou(fast) >= iou(probs.argmax(0) > 0)  # and it snaps to the edges like the reference does


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_downsampled_crf_keeps_the_masks(backend: str):
    """pseudo.crf.scale: the mean-field at half the size (kernels scaled with it), upsampled: probabilities at the
    full size that still sum to 1, the same masks as at full resolution on blob-like defects, and edges kept."""
    for kind in ("rect", "disc", "blobs"):
        img, gt, cam = case(kind, KINDS.index(kind))
        probs = class_probs(cam[None], 0.4)
        full = dense_crf(img, probs, CRFConfig(backend=backend))
        half = dense_crf(img, probs, CRFConfig(backend=backend, scale=0.5))
        assert half.shape == probs.shape and half.dtype == np.float32
        np.testing.assert_allclose(half.sum(0), 1.0, atol=1e-5)
        a, b = full.argmax(0) > 0, half.argmax(0) > 0
        assert (a & b).sum() / (a | b).sum() >= 0.9, kind
        assert (b & gt).sum() / (b | gt).sum() >= ((probs.argmax(0) > 0) & gt).sum() / (
            (probs.argmax(0) > 0) | gt
        ).sum()


def test_crf_scale_is_validated():
    from wsss.config import load_config
    from wsss.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pseudo\.crf\.scale"):
        load_config(None, ["pseudo.crf.scale=0"])


def test_batched_equals_one_by_one():
    imgs, probs = zip(
        *[(case(k, i)[0], class_probs(case(k, i)[2][None], 0.4)) for i, k in enumerate(KINDS[:2])], strict=True
    )
    batch = dense_crf_torch(torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(probs)), CRFConfig())
    for i in range(2):
        one = dense_crf_torch(torch.from_numpy(imgs[i])[None], torch.from_numpy(probs[i])[None], CRFConfig())
        assert torch.allclose(batch[i], one[0], atol=1e-5)
        assert torch.allclose(batch[i].sum(0), torch.ones(batch.shape[-2:]), atol=1e-5)


def test_the_torch_backend_ignores_only_what_the_config_says():
    img, _, cam = case("disc", 1)
    cfg = PseudoConfig(crf=CRFConfig(backend="torch"), confidence=0.0, ignore_band=0)
    assert not (label_image(img, cam[None], cfg, True).mask == IGNORE).any()
    strict = dataclasses.replace(cfg, confidence=0.9, ignore_band=2)
    mask = label_image(img, cam[None], strict, True).mask
    p = dense_crf(img, class_probs(cam[None], 0.4), cfg.crf)
    allowed = p.max(0) < 0.9
    labels = p.argmax(0)
    allowed |= (cv2.dilate((labels > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0) & (
        labels == 0
    )
    assert (mask == IGNORE).any() and not ((mask == IGNORE) & ~allowed).any()


@pytest.mark.gpu
def test_fast_crf_on_cuda_matches_the_cpu():
    img, _, cam = case("scratch", 2)
    probs = class_probs(cam[None], 0.4)
    cpu = dense_crf(img, probs, CRFConfig(backend="torch"))
    gpu = dense_crf(img, probs, CRFConfig(backend="torch", device="cuda"))
    assert np.abs(cpu - gpu).max() < 1e-3
