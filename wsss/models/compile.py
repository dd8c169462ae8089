"""How a network runs fast: the optional ``torch.compile`` switch (``classifier.compile``, ``retrain.compile``,
``segmenter.compile``, ``cam.compile``) and the channels-last memory format (``*.channels_last``).

:func:`maybe_compile` returns the module to call for forward passes. Callers keep the eager module for everything
else: state_dicts (a compiled module's keys carry an ``_orig_mod.`` prefix, so checkpoints and ``.safetensors``
files are always saved from the eager module), parameters for the optimizer, ``no_sync`` and buffer broadcasts.
Under DDP the trainers compile the DDP-wrapped module, so TorchDynamo's DDP optimizer splits the graph at the
gradient buckets and communication still overlaps the backward pass.

When ``torch.compile`` is missing or refuses the module, the switch warns once per config key and training runs
eagerly; compiling is off by default because on the CPU its start-up cost rarely pays back.

Channels-last (NHWC) lets oneDNN's CPU kernels and cuDNN's tensor-core kernels run the convolutions without
reordering: on 2 CPU cores an EfficientNet-Lite0 forward pass takes 0.55x the time, a training step 0.7-0.8x
(docs/benchmarks.md), with the same results up to float rounding. It is on by default everywhere.
"""

from __future__ import annotations

import warnings

import torch

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
