"""How a network runs fast: the optional ``torch.compile`` switch (``classifier.compile``, ``retrain.compile``,
``segmenter.compile``, ``cam.compile``) and the channels-last memory format (``*.channels_last``).

:func:`maybe_compile` returns the module to call for forward passes. Callers keep the eager module for everything
else: state_dicts (a compiled module's keys carry an ``_orig_mod.`` prefix, so checkpoints and ``.safetensors``
files are always saved from the eager module), parameters for the optimizer, ``no_sync`` and buffer broadcasts.
Under DDP the trainers compile the DDP-wrapped module, so TorchDynamo's DDP optimizer splits the graph at the
gradient buckets and communication still overlaps the backward pass.

When ``torch.compile`` is missing or refuses the module, the switch warns once per config key and training runs
eagerly; compiling is off by default because on the CPU its start-up cost rarely pays back.

For inference, :func:`fold_batchnorm` folds each BatchNorm into the convolution before it (a copy of the model; the
CAM stage checks the copy against the model on a random batch and keeps the model where they differ).

Channels-last (NHWC) lets oneDNN's CPU kernels and cuDNN's tensor-core kernels run the convolutions without
reordering: on 2 CPU cores an EfficientNet-Lite0 forward pass takes 0.55x the time, a training step 0.7-0.8x
(docs/benchmarks.md), with the same results up to float rounding. It is on by default everywhere.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

_warned: set[str] = set()


def to_channels_last(model: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """``model`` with its 4-D parameters and buffers in the channels-last memory format (in place) when ``enabled``."""
    return model.to(memory_format=torch.channels_last) if enabled else model


def channels_last_input(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """A 4-D batch in the channels-last memory format when ``enabled`` (other tensors as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


def maybe_compile(model: torch.nn.Module, enabled: bool, where: str, backend: str | None = None) -> torch.nn.Module:
    """``model`` compiled with ``torch.compile`` when ``enabled``, else ``model`` itself (the same object).

    Args:
        model: the module whose forward passes to compile (the DDP wrapper under DDP).
        enabled: the config switch.
        where: the config key, named in the warning when compiling is impossible (e.g. ``"classifier.compile"``).
        backend: a ``torch.compile`` backend (``"eager"`` in tests: no code generation); None = torch's default.
    """
    if not enabled:
        return model
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        _warn_once(where, f"this torch ({torch.__version__}) has no torch.compile")
        return model
    try:
        return compile_fn(model) if backend is None else compile_fn(model, backend=backend)
    except Exception as e:  # torch raises several types (unsupported Python, missing backend, bad options)
        _warn_once(where, f"torch.compile failed ({type(e).__name__}: {e})")
        return model


def _warn_once(where: str, why: str) -> None:
    if where in _warned:
        return
    _warned.add(where)
    warnings.warn(f"{where}: {why}; running eagerly (set {where}=false to silence this)", stacklevel=3)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with every BatchNorm that directly follows a convolution (consecutive children of
    one module, in registration order, as timm's blocks hold them) folded into that convolution's weights and bias;
    the BatchNorm's activation (timm's ``BatchNormAct2d``) stays. Eval mode only: the folded statistics are the
    running ones. The caller checks the copy against ``model`` (the registration order is not always the forward's).
    """
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[a], parent._modules[b]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or conv.out_channels != bn.num_features:  # no running statistics to fold
                continue
            _fold_into(conv, bn)
            rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            parent._modules[b] = nn.Sequential(*rest) if rest else nn.Identity()
    return folded


@torch.no_grad()
def folded_if_equal(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """:func:`fold_batchnorm`'s copy of ``model`` (eval mode) when its outputs on ``example`` equal the model's up to
    float rounding, else ``model`` itself: a network whose children are registered out of their forward order, or
    whose BatchNorm feeds more than its convolution, keeps its own layers."""
    model = model.eval()
    folded = fold_batchnorm(model)
    try:
        a, b = output_tensors(model(example)), output_tensors(folded(example))
    except RuntimeError:
        return model
    same = len(a) == len(b) and all(
        x.shape == y.shape
        and torch.allclose(x.float(), y.float(), rtol=1e-3, atol=1e-4 * max(1.0, float(x.abs().max())))
        for x, y in zip(a, b, strict=True)
    )
    return folded if same else model


def output_tensors(out: object) -> list[torch.Tensor]:
    """The tensors of a network's output: a tensor, a tuple or list, or a dataclass of them (DFC, segmenter)."""
    if isinstance(out, torch.Tensor):
        return [out]
    values = vars(out).values() if hasattr(out, "__dict__") else out
    return [v for v in values if isinstance(v, torch.Tensor)]  # type: ignore[union-attr]


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
    new_bias = (bias - bn.running_mean) * scale + shift
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
