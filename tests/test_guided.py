"""Guided upsampling of the segmenter's probabilities (wsss.refine.guided) and its use by predict."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from wsss.cli import cli
from wsss.config import load_config
from wsss.errors import ConfigError
from wsss.evaluation.metrics import iou
from wsss.inference import Predictor
from wsss.refine.guided import guide_image, guided_filter, guided_probs


def crack_scene(h: int = 96, w: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright noisy surface with a dark 2-px crack, its mask, and a blurred probability around it (K+1 = 2)."""
    rng = np.random.default_rng(0)
    image = np.clip(180 + rng.normal(0, 4, (h, w)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[20:76, 31:33] = True
    image[mask] = 60
    blur = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 4)  # what a network at a quarter of the size sees
    p = 0.2 + 0.6 * blur / blur.max()
    return image, mask, np.stack([1 - p, p]).astype(np.float32)


def test_a_zero_radius_returns_the_map_and_constants_stay_constant():
    image, _, probs = crack_scene()
    assert guided_filter(guide_image(image), probs, 0, 1e-4) is probs
    flat = np.full(image.shape, 0.3, np.float32)
    np.testing.assert_allclose(guided_filter(guide_image(image), flat, 5, 1e-4), 0.3, atol=1e-5)


def test_guided_probabilities_follow_the_crack_and_stay_a_distribution():
    image, mask, probs = crack_scene()
    before = iou(probs.argmax(0) > 0, mask)
    out = guided_probs(image, probs, radius=8, eps=1e-4)
    assert out.shape == probs.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    after = iou(out.argmax(0) > 0, mask)
    assert before < 0.25 and after > 0.9, (before, after)


def test_colour_guides_use_the_channel_mean_and_sizes_must_match():
    image, _, probs = crack_scene()
    rgb = np.dstack([image] * 3)
    np.testing.assert_allclose(guided_probs(rgb, probs, 4, 1e-4), guided_probs(image, probs, 4, 1e-4), atol=1e-6)
    with pytest.raises(ValueError, match="differ in size"):
        guided_filter(guide_image(image), probs[:, :10], 3, 1e-4)


class ConstRunner:
    """A runner whose mask logits are a fixed blob at stride 1 (input size) and whose image head says defective."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def __call__(self, x: np.ndarray):
        return np.repeat(self.logits[None], len(x), 0), np.full((len(x), 1), 5.0, np.float32)


def test_predictor_applies_the_meta_radius_scaled_to_the_image_and_the_override():
    image, mask, probs = crack_scene()
    small = (48, 32)  # the network sees half the size: a radius of 4 input pixels is 8 image pixels
    logits = np.log(cv2.resize(probs.transpose(1, 2, 0), small[::-1], interpolation=cv2.INTER_AREA)).transpose(2, 0, 1)
    meta = {"classes": ["defect"], "in_chans": 1, "input_size": list(small), "stride": 1}
    plain = Predictor(ConstRunner(logits), meta)([image])[0]
    guided = Predictor(ConstRunner(logits), meta | {"guided": {"radius": 4.0, "eps": 1e-4}})([image])[0]
    off = Predictor(ConstRunner(logits), meta | {"guided": {"radius": 4.0, "eps": 1e-4}}, guided_radius=0)([image])[0]
    np.testing.assert_allclose(off.probs, plain.probs)
    assert iou(guided.labels > 0, mask) > iou(plain.labels > 0, mask) + 0.4
    expected = guided_probs(image, plain.probs, 8.0, 1e-4)
    np.testing.assert_allclose(guided.probs, expected, atol=1e-5)
    # a sweep passes its own eps per call; the predictor's setting stays as loaded
    predictor = Predictor(ConstRunner(logits), meta | {"guided": {"radius": 4.0, "eps": 1e-4}})
    swept = predictor.guide(image, plain.probs, small, 4.0, eps=1e-2)
    np.testing.assert_allclose(swept, guided_probs(image, plain.probs, 8.0, 1e-2), atol=1e-5)
    assert predictor.guided_eps == 1e-4 and not np.allclose(swept, expected, atol=1e-3)


def test_a_negative_radius_is_refused_with_its_key():
    with pytest.raises(ConfigError, match=r"segmenter\.guided\.radius"):
        load_config(None, ["segmenter.guided.radius=-1"])


def test_the_trained_segmenter_records_its_setting_and_predict_can_override_it(full_run, tmp_path):
    run_dir, _ = full_run
    meta = json.loads((run_dir / "train-segmenter" / "segmenter.json").read_text())
    assert meta["guided"] == {"radius": 0.0, "eps": 0.0001}
    images = tmp_path / "images"
    images.mkdir()
    image, _, _ = crack_scene()
    cv2.imwrite(str(images / "a.png"), image)
    outs = {}
    for radius in ("0", "4"):
        r = CliRunner().invoke(
            cli,
            [
                "predict",
                "--model",
                str(run_dir),
                str(images),
                "--out",
                str(tmp_path / radius),
                "--no-overlays",
                "--guided-radius",
                radius,
            ],
        )
        assert r.exit_code == 0, r.output
        outs[radius] = cv2.imread(str(tmp_path / radius / "probs" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert outs["0"].shape == outs["4"].shape == image.shape and not np.array_equal(outs["0"], outs["4"])
    r = CliRunner().invoke(
        cli, ["predict", "--model", str(run_dir), str(images), "--out", str(tmp_path / "x"), "--guided-radius", "-2"]
    )
    assert r.exit_code == 2 and "--guided-radius" in r.output
