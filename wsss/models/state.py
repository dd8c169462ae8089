"""A network's weights in and out of files: state_dicts read from safetensors or ``weights_only`` torch files, a
backbone's matched key by key against the plain timm model (a 3-channel first convolution adapted to other channel
counts), a trained stage's weights loaded strictly and hashed first, and state_dicts written atomically."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import safetensors.torch
import timm
import torch
from timm.models import adapt_input_conv
from torch import Tensor, nn

from wsss.atomic import atomic_path
from wsss.errors import ConfigError, StageError
from wsss.hashing import file_changed, recorded_by

_HEAD_NAMES = frozenset({"fc", "head", "head_dist", "heads", "classifier", "last_linear"})
_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _candidates(key: str) -> Iterator[str]:
    """Names a features-model key may have in a plain timm state_dict."""
    yield key
    for prefix in ("model.", "body."):  # FeatureGetterNet / our wrapper, FeatureHookNet
        if key.startswith(prefix):
            yield from _candidates(key[len(prefix) :])
    first, dot, rest = key.partition(".")
    for i, c in enumerate(first):  # FeatureListNet flattens Sequential children: "stages.0" -> "stages_0"
        if c == "_":
            yield f"{first[:i]}.{first[i + 1 :]}{dot}{rest}"


def _architecture_keys(name: str, chans: int) -> set[str]:
    """State-dict keys of the plain model (stages a features model pruned, head), built on the meta device."""
    try:
        with torch.device("meta"):
            return set(timm.create_model(name, pretrained=False, in_chans=chans).state_dict())
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # an init the meta device cannot run
        return set(timm.create_model(name, pretrained=False, in_chans=chans).state_dict())


def _listing(label: str, keys: list[str]) -> str:
    return f"{len(keys)} {label}: {', '.join(keys[:10])}{', ...' if len(keys) > 10 else ''}" if keys else ""


def load_backbone_weights(backbone: nn.Module, path: str | Path, where: str = "weights") -> None:
    """Load a local state_dict file into ``backbone``; a 3-channel first conv is summed for 1-channel input.

    Head keys are ignored; any other missing, unexpected or mismatched key is a ConfigError listing them.
    """
    load_backbone_state(backbone, load_state_dict_file(path, where), str(path), where)


def load_backbone_state(backbone: nn.Module, sd: dict[str, Tensor], source: str, where: str) -> None:
    """Load state_dict ``sd`` (read from ``source``) into ``backbone``, as :func:`load_backbone_weights` describes."""
    for prefix in ("module.", "backbone.", "model."):  # DDP; a model holding a .backbone (DFC); a Backbone
        if any(k.startswith(prefix) for k in sd) and (prefix == "backbone." or all(k.startswith(prefix) for k in sd)):
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    first = backbone.model.pretrained_cfg.get("first_conv") or ()
    first = {first} if isinstance(first, str) else set(first)
    new, missing, mismatched, used = {}, [], [], set()
    for key, t in backbone.model.state_dict().items():
        src = next((c for c in _candidates(key) if c in sd), None)
        if src is None:
            if key.endswith("num_batches_tracked"):
                new[key] = t
            else:
                missing.append(key)
            continue
        used.add(src)
        w = sd[src]
        if w.shape != t.shape and src.removesuffix(".weight") in first and w.ndim == 4 and w.shape[2:] == t.shape[2:]:
            with contextlib.suppress(NotImplementedError):  # in_chans differs: sum (3 -> 1) or repeat, as timm does
                w = adapt_input_conv(t.shape[1], w, base_chans=w.shape[1])
        if w.shape != t.shape:
            mismatched.append(f"{src} {tuple(w.shape)} != {tuple(t.shape)}")
        new[key] = w
    arch = _architecture_keys(backbone.name, backbone.in_chans)
    unexpected = [k for k in sd if k not in used and k not in arch and k.split(".")[0] not in _HEAD_NAMES]
    if missing or unexpected or mismatched:
        parts = [_listing("missing", missing), _listing("unexpected", unexpected), _listing("mismatched", mismatched)]
        what = f"{source} does not fit {backbone.name}: " + "; ".join(p for p in parts if p)
        raise ConfigError(where, what, f"the file must hold a state_dict of {backbone.name} (head keys are ignored)")
    backbone.model.load_state_dict(new)


def load_state_dict_file(path: str | Path, where: str | None = None) -> dict[str, Tensor]:
    """Read a state_dict from ``.safetensors`` or ``.pth``/``.pt``/``.bin`` (``weights_only=True``: no pickled code).

    A torch checkpoint wrapping it under a ``state_dict`` or ``model`` key is unwrapped. Raises ConfigError (at
    ``where``, default the path) when the file is missing, unreadable or holds no state_dict.
    """
    path, where = Path(path), where or str(path)
    if not path.is_file():
        raise ConfigError(where, f"weights file not found: {path}", "give a local file; weights are never downloaded")
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError(where, f"unsupported weights file {path}", f"use one of {', '.join(_SUFFIXES)}")
    try:
        if path.suffix.lower() == ".safetensors":
            sd = safetensors.torch.load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle, zip and OS errors alike mean an unreadable file
        reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
        raise ConfigError(where, f"cannot read {path}: {reason}", "save a state_dict with safetensors or torch") from e
    sd = next((sd[k] for k in ("state_dict", "model") if isinstance(sd, dict) and isinstance(sd.get(k), dict)), sd)
    if not (isinstance(sd, dict) and sd and all(isinstance(v, Tensor) for v in sd.values())):
        raise ConfigError(where, f"{path} holds no state_dict (names -> tensors)", "save model.state_dict()")
    return {str(k): v for k, v in sd.items()}


def load_trained_state(model: nn.Module, path: str | Path, fix: str) -> None:
    """Load a stage's own saved state_dict into the model rebuilt from its metadata, strictly.

    Any missing, unexpected or differently shaped key (a checkpoint from another config: class count, backbone) is a
    StageError naming the file and the keys, instead of torch's RuntimeError.
    """

    found = recorded_by(Path(path))
    if found is not None:  # a finished stage's own file: it must still be the one its manifest recorded
        folder, manifest, record = found
        why = file_changed(Path(path), record, full=True)
        if why:
            stage = manifest.get("stage", folder.name)
            raise StageError(
                path,
                f"changed after the stage {stage!r} wrote it: {why}",
                f"re-run that stage: `wsss run-stage {stage} --force`, or `wsss run` (redoes it)",
            )
    try:
        state = load_state_dict_file(path, str(path))
    except ConfigError as e:  # a stage's own file: the fix is the caller's (re-run the stage), not a new format
        raise StageError(path, e.what, fix) from e
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        found = (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
        parts = [f"{n} {keys[:4]}" for n, keys in found if keys]
        raise StageError(path, "weights do not match the model's metadata: " + "; ".join(parts), fix)
    model.load_state_dict(state)


def save_state_dict(module: nn.Module | Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a state_dict atomically (temp file + ``os.replace``): safetensors for ``.safetensors``, else torch."""
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported suffix; use one of {', '.join(_SUFFIXES)}")
    sd = module.state_dict() if isinstance(module, nn.Module) else module
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}  # clone: safetensors refuses shared storage
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".safetensors":
            safetensors.torch.save_file(sd, tmp)
        else:
            torch.save(sd, tmp)
    return path
