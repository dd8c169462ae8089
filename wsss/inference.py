"""Running a trained segmenter on images of any size: one path for PyTorch and ONNX models.

Per image: convert to the model's channels, resize to the model's training ``input_size`` (or keep the native size
with ``size=None``), pad (reflect) to a multiple of the encoder's stride, run the model, crop the padding off the
logits, upsample them bilinearly to the image's original size (logits, not probabilities: boundaries stay sharp),
softmax, with ``guided.radius`` > 0 in the model's meta let the probabilities follow the full-size image's edges
(:mod:`wsss.refine.guided`), and gate the mask by the image-level decision
(:func:`~wsss.models.segmenter.gate_labels`). Images whose
network input has the same shape share a batch.

Beside the mask, :meth:`Prediction.defect_probability` is the soft per-pixel defect probability, 1 - P(background)
(the sum over defect classes; for one class its probability), **not** gated by the image decision: the ungated soft
map is what pixel AP (AP_loc) and pixel AUROC are computed on. :func:`write_prob_png` stores it as a 16-bit PNG,
value ``round(p * 65535)``.

The model is anything with the :class:`Runner` call: :class:`TorchRunner` (a
:class:`~wsss.models.segmenter.Segmenter`) or :class:`OnnxRunner` (an exported ``.onnx`` file run by onnxruntime).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from wsss.artifacts.masks import write_mask
from wsss.artifacts.scores import SCORES_FILE, write_scores
from wsss.atomic import atomic_path
from wsss.data.images import read_image
from wsss.data.transforms import Placement, fit_image, placement, to_channels, to_tensor, unfit
from wsss.errors import ConfigError, StageError
from wsss.evaluation.metrics import quantize_probs
from wsss.mask_format import write_labelmap
from wsss.models.chunked import forward_chunked
from wsss.models.compile import channels_last_input, folded_if_equal, to_channels_last
from wsss.models.segmenter import META_FILE, MODEL_FILE, Segmenter, gate_labels, load_segmenter
from wsss.progress import progress
from wsss.refine.guided import guided_probs

ONNX_META_KEY = "wsss"  # ONNX metadata_props key holding the segmenter's meta (JSON)
FIX_META = "re-train the segmenter (`wsss run-stage train-segmenter --force`) or re-export it"


class Runner(Protocol):
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, H, W) float32 normalised input -> mask logits (B, K+1, H, W) and class logits (B, K)."""


class TorchRunner:
    """A :class:`Segmenter` in eval mode on ``device``, channels-last and with its BatchNorms folded (bf16 autocast
    on CUDA when ``amp``)."""

    def __init__(self, model: Segmenter, device: str | torch.device = "cpu", amp: bool = False):
        self.device = torch.device(device)
        example = torch.randn(1, int(model.backbone.in_chans), 64, 64, device=self.device)
        # each BatchNorm folded into its convolution where that gives the same outputs (wsss/models/compile.py)
        self.model = folded_if_equal(to_channels_last(model.eval()), channels_last_input(example))
        self.amp = amp and self.device.type == "cuda"

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = forward_chunked(self.model, channels_last_input(torch.from_numpy(x).to(self.device)))
        return out.mask_logits.float().cpu().numpy(), out.cls_logits.float().cpu().numpy()


class OnnxRunner:
    """An exported segmenter run by onnxruntime (``pip install wsss[export]``)."""

    def __init__(self, path: Path, device: str = "cpu"):
        # optional (the `export` extra): without it, an error that names the install
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError(path, "running an .onnx model needs onnxruntime", 'pip install -e ".[export]"') from e
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable/invalid files
            raise StageError(path, f"onnxruntime cannot load it: {type(e).__name__}: {e}", "re-export it") from e
        props = self.session.get_modelmeta().custom_metadata_map
        if ONNX_META_KEY not in props:
            raise StageError(path, "not an ONNX model exported by `wsss export onnx`", "export it with that command")
        self.meta = json.loads(props[ONNX_META_KEY])

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask_logits, cls_logits = self.session.run(["mask_logits", "cls_logits"], {"image": x})
        return mask_logits, cls_logits


@dataclass
class Prediction:
    labels: np.ndarray  # uint8 (H0, W0): 0 background, k class k, gated by the image decision
    probs: np.ndarray  # float32 (K+1, H0, W0) per-pixel class probabilities (before gating)
    cls_probs: np.ndarray  # float32 (K,) image-level probabilities

    def defect_probability(self) -> np.ndarray:
        """float32 (H0, W0): P(any defect class) = 1 - P(background), ungated."""
        return np.clip(self.probs[1:].sum(axis=0), 0.0, 1.0).astype(np.float32)


def write_prob_png(path: Path, prob: np.ndarray) -> None:
    """Write a probability map (H, W) in [0, 1] atomically as a 16-bit grayscale PNG, value ``round(p * 65535)``."""

    ok, buf = cv2.imencode(".png", quantize_probs(prob))
    if not ok:
        raise StageError(path, "could not encode the probability map as PNG", "check that it is a 2-D array")
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(buf.tobytes())


class Predictor:
    """Segments images of any size with a runner and the segmenter's meta (``segmenter.json`` contents).

    Args:
        runner: a :class:`Runner`.
        meta: needs ``classes``, ``in_chans``, ``input_size``, ``stride``; ``score_threshold`` defaults to 0.5.
        size: (H, W) network input; default the model's ``input_size``; None = each image's native size.
        score_threshold: overrides the meta's gate.
        guided_radius: overrides the meta's ``guided.radius`` (0 = plain bilinear upsampling).
        flips: overrides the meta's ``flips`` (also the left-right and top-bottom flipped views, logits averaged).
    """

    def __init__(
        self,
        runner: Runner,
        meta: dict[str, Any],
        size: Sequence[int] | None | str = "model",
        score_threshold: float | None = None,
        guided_radius: float | None = None,
        flips: bool | None = None,
    ):
        self.runner, self.meta = runner, meta
        self.classes = list(meta["classes"])
        self.in_chans = int(meta["in_chans"])
        self.stride = int(meta.get("stride", 32))
        self.size = tuple(meta["input_size"]) if size == "model" else (None if size is None else tuple(size))
        self.fit = str(meta.get("fit", "stretch"))  # how the segmenter's training placed its images (dataset.fit)
        self.threshold = float(meta.get("score_threshold", 0.5) if score_threshold is None else score_threshold)
        guided = meta.get("guided") or {}  # absent in segmenters trained before guided upsampling existed: off
        self.guided_radius, self.guided_eps = float(guided.get("radius", 0.0)), float(guided.get("eps", 1e-4))
        if guided_radius is not None:
            self.guided_radius = float(guided_radius)
        self.flips = meta.get("flips", False) if flips is None else flips  # absent before flips existed: off
        if not isinstance(self.flips, bool):
            raise ConfigError("segmenter meta", f"flips must be true or false, got {self.flips!r}", FIX_META)

    def _input(self, image: np.ndarray) -> np.ndarray:
        """The padded network input (C, Hp, Wp) of one image, and nothing else: sizes come from the image."""
        img = to_channels(image, self.in_chans)
        if self.size is not None:
            img = fit_image(img, self.size, self.fit)
        h, w = img.shape[:2]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            pad = ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2)
            img = np.pad(img, pad, mode="reflect" if min(h, w) > max(ph, pw) else "edge")
        return to_tensor(img).numpy()

    def _placement(self, image: np.ndarray) -> Placement:
        """Where ``image`` sits in the network input (all of it, unless padded to keep its aspect ratio)."""
        h, w = self._network_size(image)
        return placement(image.shape, (h, w), self.fit if self.size is not None else "stretch")

    def _network_size(self, image: np.ndarray) -> tuple[int, int]:
        return self.size if self.size is not None else image.shape[:2]

    def guide(
        self,
        image: np.ndarray,
        probs: np.ndarray,
        network_size: Sequence[int],
        radius: float | None = None,
        eps: float | None = None,
    ) -> np.ndarray:
        """``probs`` (K+1, H0, W0) of ``image`` after guided upsampling at ``radius`` (network-input pixels, scaled
        by the image's size over ``network_size``, the size the image had in the network's input; default the
        predictor's ``guided_radius``; 0 = unchanged) with regularisation ``eps`` (default the predictor's
        ``guided_eps``)."""
        radius = self.guided_radius if radius is None else radius
        if radius <= 0:
            return probs
        scale = (image.shape[0] / network_size[0] + image.shape[1] / network_size[1]) / 2
        return guided_probs(image, probs, radius * scale, self.guided_eps if eps is None else eps)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The runner's mask and class logits of the batch ``x``; with ``flips``, the mean over the batch as it is
        and flipped left-right and top-bottom (each view's mask logits flipped back first). The padding to the
        stride moves to the other side in a flipped view and comes back with the flip, so the crop stays right."""
        mask_logits, cls_logits = self.runner(x)
        if not self.flips:
            return mask_logits, cls_logits
        mask_logits, cls_logits = mask_logits.astype(np.float32), cls_logits.astype(np.float32)
        for axis in (-1, -2):
            m, c = self.runner(np.ascontiguousarray(np.flip(x, axis)))
            mask_logits += np.flip(m, axis)
            cls_logits += c
        return mask_logits / 3, cls_logits / 3

    def __call__(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Predictions for ``images`` (uint8, gray or RGB, any sizes), in order."""
        out: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self._network_size(im), []).append(i)
        for (h, w), idx in groups.items():
            x = np.stack([self._input(images[i]) for i in idx]).astype(np.float32)
            mask_logits, cls_logits = self._run(x)
            cls = 1.0 / (1.0 + np.exp(-cls_logits.astype(np.float32)))
            for j, i in enumerate(idx):
                logits = torch.from_numpy(np.ascontiguousarray(mask_logits[j : j + 1, :, :h, :w], np.float32))
                where = self._placement(images[i])
                up = unfit(logits, where, images[i].shape[:2])
                probs = torch.softmax(up[0], dim=0).numpy()
                probs = self.guide(images[i], probs, (where.y1 - where.y0, where.x1 - where.x0))
                out[i] = Prediction(gate_labels(probs, cls[j], self.threshold), probs, cls[j].astype(np.float32))
        return [p for p in out if p is not None]


def segmenter_dir(model: Path) -> Path:
    """The folder holding ``segmenter.json`` + ``segmenter.safetensors`` for ``--model``: that folder itself, a run
    folder (its ``train-segmenter/``, else ``retrain/``), or the ``.safetensors`` file's folder."""
    model = Path(model)
    if model.is_file() and model.suffix == ".safetensors":
        return model.parent
    if model.is_dir():
        for d in (model, model / "train-segmenter", model / "retrain"):
            if (d / META_FILE).is_file() and (d / MODEL_FILE).is_file():
                return d
    raise ConfigError(
        model,
        "no trained segmenter here",
        f"pass a run folder with a finished train-segmenter stage, a folder with {MODEL_FILE} and {META_FILE}, "
        "or an exported .onnx file",
    )


def load_predictor(
    model: Path,
    device: str = "cpu",
    size: Sequence[int] | None | str = "model",
    score_threshold: float | None = None,
    guided_radius: float | None = None,
    flips: bool | None = None,
) -> Predictor:
    """A :class:`Predictor` for ``--model``: an ``.onnx`` file, or a trained segmenter (see :func:`segmenter_dir`)."""
    model = Path(model)
    if model.suffix == ".onnx":
        if not model.is_file():
            raise ConfigError(model, "ONNX file not found", "pass the file `wsss export onnx` wrote")
        runner = OnnxRunner(model, device)
        return Predictor(runner, runner.meta, size, score_threshold, guided_radius, flips)
    seg, meta = load_segmenter(segmenter_dir(model), device)
    return torch_predictor(seg, meta, device, size, score_threshold, guided_radius, flips)


def torch_predictor(
    seg: Segmenter,
    meta: dict[str, Any],
    device: str | torch.device = "cpu",
    size: Sequence[int] | None | str = "model",
    score_threshold: float | None = None,
    guided_radius: float | None = None,
    flips: bool | None = None,
) -> Predictor:
    """A :class:`Predictor` over a loaded segmenter and its ``segmenter.json`` meta."""
    meta = meta | {"stride": max(seg.backbone.reductions)}
    return Predictor(TorchRunner(seg, device), meta, size, score_threshold, guided_radius, flips)


def segment_rows(
    predictor: Predictor,
    rows: Sequence[Any],
    out: Path,
    classes: Sequence[str],
    batch_size: int,
    high_bit_depth: str = "refuse",
) -> float:
    """Segment the index ``rows`` (anything with ``id`` and ``path``) into a stage's mask set and score table:
    ``out/masks/<id>.png`` (with its labelmap), ``out/probs/<id>.png`` (the ungated defect probability) and
    ``out/scores.csv`` (the image head's score, per class with several); returns the images per second."""

    (out / "masks").mkdir(exist_ok=True)
    (out / "probs").mkdir(exist_ok=True)
    write_labelmap(out / "masks", classes)
    score_rows, t0 = [], time.perf_counter()
    for start in progress(range(0, len(rows), batch_size), desc="predict", unit="batch"):
        batch = rows[start : start + batch_size]
        images = [read_image(r.path, high_bit_depth) for r in batch]
        for r, pred in zip(batch, predictor(images), strict=True):
            write_mask(out / "masks" / f"{r.id}.png", pred.labels)
            write_prob_png(out / "probs" / f"{r.id}.png", pred.defect_probability())
            row = {"id": r.id, "score": float(pred.cls_probs.max())}
            score_rows.append(row | {f"score_{c}": float(v) for c, v in zip(classes, pred.cls_probs, strict=True)})
    write_scores(out / SCORES_FILE, score_rows, classes, columns=("id", "score"))
    return len(rows) / max(time.perf_counter() - t0, 1e-9)
