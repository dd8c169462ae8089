"""A trained model's folder: ``<name>.json`` (what rebuilds the network) beside ``<name>.safetensors`` (its weights).

Every stage that trains a network saves it this way, and every loader reads it through :func:`load_model_dir`, so
a folder that cannot be rebuilt fails the same way everywhere: a StageError naming the file and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from wsss.errors import StageError
from wsss.models.state import load_trained_state

M = TypeVar("M", bound=nn.Module)
PRETRAINED_FILE = "backbone.safetensors"  # the `pretrain` stage's backbone, which `train-classifier` starts from


def load_model_dir(
    model_dir: str | Path,
    meta_file: str,
    model_file: str,
    build: Callable[[dict[str, Any]], M],
    what: str,
    fix: str,
    device: str | torch.device = "cpu",
) -> tuple[M, dict[str, Any]]:
    """The network ``build(meta)`` rebuilds from ``model_dir/meta_file``, with the weights of ``model_file`` loaded
    strictly, on ``device`` in eval mode, and its meta. ``what`` names the model in errors ("the classifier")."""
    model_dir = Path(model_dir)
    meta_path = model_dir / meta_file
    try:
        meta = json.loads(meta_path.read_text())
        model = build(meta)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StageError(meta_path, f"cannot rebuild {what}: {type(e).__name__}: {e}", fix) from e
    load_trained_state(model, model_dir / model_file, fix)
    return model.to(device).eval(), meta
