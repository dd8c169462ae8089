"""`wsss export onnx`: the trained segmenter as an ONNX file with dynamic batch and spatial size.

The graph maps the normalised, stride-padded input ``image`` (B, C, H, W) to ``mask_logits`` (B, K+1, H, W) and
``cls_logits`` (B, K): exactly what :class:`wsss.inference.TorchRunner` returns, so `wsss predict` runs either with
the same pre- and post-processing (:class:`wsss.inference.Predictor`). The segmenter's meta (classes, channels,
training size, stride, gate threshold) travels in the file's metadata under the key ``wsss``.

After export the file is checked against PyTorch on random inputs of two sizes and batch sizes with onnxruntime;
the largest absolute difference is reported, and a difference above ``tolerance`` fails the command (the file is
only moved into place once it passed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from wsss.atomic import atomic_path
from wsss.errors import ConfigError, StageError
from wsss.inference import ONNX_META_KEY, OnnxRunner, TorchRunner, segmenter_dir
from wsss.models.segmenter import Segmenter, load_segmenter

OPSET = 18
TOLERANCE = 1e-3  # max abs difference of logits between onnxruntime and PyTorch


class _Graph(nn.Module):
    """The segmenter with tuple outputs (what the exporter traces)."""

    def __init__(self, model: Segmenter):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image)
        return out.mask_logits, out.cls_logits


@dataclass
class ExportReport:
    path: Path
    max_abs_diff: float
    checked_shapes: list[tuple[int, ...]]


def _check_inputs(meta: dict, stride: int) -> list[np.ndarray]:
    """Random inputs of two batch sizes and two spatial sizes (the training size and a different multiple of
    the stride), so the check covers the dynamic axes."""
    rng = np.random.default_rng(0)
    c = int(meta["in_chans"])
    h, w = (int(v) for v in meta["input_size"])
    other = (max(stride, h + stride), max(stride, w - stride if w > stride else w + 2 * stride))
    return [
        rng.standard_normal((1, c, h, w)).astype(np.float32),
        rng.standard_normal((2, c, *other)).astype(np.float32),
    ]


def export_onnx(model_path: Path, out: Path, tolerance: float = TOLERANCE, opset: int = OPSET) -> ExportReport:
    """Export the segmenter at ``model_path`` (run folder, stage folder or .safetensors) to ``out`` and verify it."""
    # optional (the `export` extra): without it, an error that names the install
    try:
        import onnx
    except ImportError as e:
        raise ConfigError(
            "wsss export onnx", "ONNX export needs onnx, onnxscript and onnxruntime", 'pip install -e ".[export]"'
        ) from e
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(out, "the output file must end in .onnx", "e.g. --out segmenter.onnx")
    if out.is_dir():
        raise ConfigError(out, "is a folder", "give a file name, e.g. --out segmenter.onnx")
    model, meta = load_segmenter(segmenter_dir(model_path), "cpu")
    stride = max(model.backbone.reductions)
    meta = meta | {"stride": stride}
    graph = _Graph(model).eval()
    inputs = _check_inputs(meta, stride)
    dims = {0: Dim("batch", min=1), 2: Dim("height", min=stride), 3: Dim("width", min=stride)}
    with atomic_path(out) as tmp:
        onnx_tmp = tmp.with_suffix(".onnx")
        try:
            torch.onnx.export(  # the torch.export-based exporter (the TorchScript one is deprecated)
                graph,
                (torch.from_numpy(inputs[1]),),
                str(onnx_tmp),
                input_names=["image"],
                output_names=["mask_logits", "cls_logits"],
                dynamic_shapes={"image": dims},
                opset_version=opset,
                dynamo=True,
                external_data=False,  # one self-contained file (a segmenter is far below protobuf's 2 GB)
                verbose=False,
            )
            proto = onnx.load(str(onnx_tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
        finally:
            onnx_tmp.unlink(missing_ok=True)
            onnx_tmp.with_name(onnx_tmp.name + ".data").unlink(missing_ok=True)  # an exporter's external weights
        diff = max_difference(TorchRunner(model), OnnxRunner(tmp), inputs)
        if not diff <= tolerance:
            raise StageError(
                out,
                f"the ONNX model differs from PyTorch by up to {diff:.3g} (tolerance {tolerance:g})",
                f"try another opset (--opset, now {opset}) or report the backbone {meta['backbone']['name']!r}",
            )
    return ExportReport(out, diff, [tuple(x.shape) for x in inputs])


def max_difference(a: TorchRunner | OnnxRunner, b: TorchRunner | OnnxRunner, inputs: Sequence[np.ndarray]) -> float:
    """Largest absolute difference between two runners' mask and class logits over ``inputs``."""
    worst = 0.0
    for x in inputs:
        for u, v in zip(a(x), b(x), strict=True):
            if u.shape != v.shape:
                return float("inf")
            worst = max(worst, float(np.abs(u - v).max()))
    return worst
