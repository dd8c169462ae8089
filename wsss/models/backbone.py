"""Backbone factory over timm: one feature map at a chosen output stride; weights only from a local file.

Output stride (METHOD.md 1: CAM resolution matters for slender defects). timm's ``output_stride=`` (dilation) is used
where the model supports it: ResNets, EfficientNets, MobileNetV3/V4, ConvNeXt, RegNet, MobileViT, NFNet, byobnet...
Where it does not (timm raises: GhostNet, MambaOut, MaxViT, FastViT, PVTv2, ViTs; or it silently ignores it), we select
the deepest stage whose reduction (``feature_info``) is <= the requested stride: a finer but shallower map. Where no
stage is that fine (a ViT's patch grid is already 16), the finest stage is used with a warning. ``Backbone.stride`` is
always the stride actually obtained. Models without ``features_only`` support fall back to ``forward_features``
(token outputs are reshaped to the patch grid).

Weights are never downloaded: ``create_model`` always gets ``pretrained=False`` (timm's
``pretrained_cfg_overlay=dict(file=...)`` route is not used: it goes through ``load_pretrained``). The one route is a
local file in ``BackboneConfig.weights`` holding the plain timm model's state_dict (classifier head keys ignored), a
``Backbone``'s, or that of a model holding one as ``.backbone`` (a trained DFC: only its ``backbone.*`` keys are used).
"""

from __future__ import annotations

import contextlib
import difflib
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import safetensors.torch
import timm
import torch
from timm.models import adapt_input_conv
from torch import Tensor, nn

from wsss.atomic import atomic_path
from wsss.config import BackboneConfig
from wsss.errors import ConfigError

STRIDES = (8, 16, 32)
_HEAD_NAMES = frozenset({"fc", "head", "head_dist", "heads", "classifier", "last_linear"})
_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class Backbone(nn.Module):
    """A timm feature extractor; :meth:`forward` returns the deepest selected stage, (B, C, h, w).

    Attributes:
        model: the timm features model (or a ``forward_features`` wrapper) returning a list of maps.
        out_channels: C of the deepest map.
        stride: its actual output stride (input side / map side), which may differ from the requested one.
        channels, reductions: channels and stride of each map of :meth:`forward_stages`, shallow to deep.
    """

    def __init__(self, model: nn.Module, channels: list[int], reductions: list[int], name: str, in_chans: int):
        super().__init__()
        self.model, self.name, self.in_chans = model, name, in_chans
        self.channels, self.reductions = [int(c) for c in channels], [int(r) for r in reductions]
        self.out_channels, self.stride = self.channels[-1], self.reductions[-1]
        self.nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"  # Swin, MambaOut, ... give channels-last maps

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        return [f.permute(0, 3, 1, 2) if self.nhwc else f for f in self.model(x)]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[-1]


class _ForwardFeatures(nn.Module):
    """A model without ``features_only`` support as a one-stage feature list; tokens (B, N, C) -> (B, C, H/p, W/p)."""

    def __init__(self, model: nn.Module, patch: int | None):
        super().__init__()
        self.model, self.patch = model, patch
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: Tensor) -> list[Tensor]:
        f = self.model.forward_features(x)
        if f.ndim == 4 and getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            f = f.permute(0, 3, 1, 2)
        if f.ndim == 3 and self.patch:
            h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
            if f.shape[1] - self.prefix_tokens == h * w:
                f = f[:, self.prefix_tokens :].transpose(1, 2).reshape(f.shape[0], -1, h, w)
        return [f]


def create_backbone(cfg: BackboneConfig, in_chans: int, section: str = "classifier.backbone") -> Backbone:
    """Build ``cfg.name`` from timm for ``in_chans``-channel images (``cfg.in_chans`` > 0 overrides it).

    Random init unless ``cfg.weights`` names a local file. Raises ConfigError (keys under ``section``) for an unknown
    name, a stride other than 8/16/32, or a weights file that is missing, unreadable or does not fit the model.
    """
    chans = cfg.in_chans if cfg.in_chans > 0 else in_chans
    _check_name(cfg.name, f"{section}.name")
    if cfg.output_stride not in STRIDES:
        raise ConfigError(f"{section}.output_stride", f"unsupported value {cfg.output_stride}", "use 8, 16 or 32")
    if chans < 1:
        raise ConfigError(f"{section}.in_chans", f"invalid channel count {chans}", "use 1 (grayscale) or 3 (RGB)")
    kw = {"pretrained": False, "in_chans": chans}
    try:
        backbone = _features_backbone(cfg.name, cfg.output_stride, kw)
    except (RuntimeError, AssertionError, NotImplementedError):  # no features_only support in this model
        backbone = _forward_features_backbone(cfg.name, kw, f"{section}.name")
    set_padding_mode(backbone, cfg.padding)
    if cfg.weights:
        load_backbone_weights(backbone, cfg.weights, f"{section}.weights")
    return backbone


def set_padding_mode(module: nn.Module, mode: str) -> int:
    """Make every ``nn.Conv2d`` in ``module`` that pads use ``mode`` (zeros, reflect, replicate, circular).

    The weights are untouched (pretrained weights load the same), only how the border is filled changes. Convs that
    pad dynamically (timm's ``Conv2dSame``) keep zeros. Returns the number of convs changed.
    """
    n = 0
    for m in module.modules():
        pads = isinstance(m, nn.Conv2d) and not isinstance(m.padding, str) and any(p > 0 for p in m.padding)
        if pads and m.padding_mode != mode:
            m.padding_mode = mode
            n += 1
    return n


def _check_name(name: str, where: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    pattern = re.split(r"[_\d]", name, maxsplit=1)[0] + "*"
    close = close or timm.list_models(pattern)[:5]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(where, f"unknown timm model {name!r}", f"{hint}see timm.list_models({pattern!r})")


def _features_backbone(name: str, stride: int, kw: dict) -> Backbone:
    try:  # dilation, where the model supports it
        fm = timm.create_model(name, features_only=True, output_stride=stride, **kw)
        kw = {**kw, "output_stride": stride}
    except (TypeError, AssertionError, ValueError):  # no output_stride argument, or no dilation: select a stage
        fm = timm.create_model(name, features_only=True, **kw)
    info = fm.feature_info
    red = [int(i["reduction"]) for i in info.info]
    default = sorted({i % len(red) for i in info.out_indices})
    fine = [i for i, r in enumerate(red) if r <= stride]
    last = max(fine) if fine else max(i for i, r in enumerate(red) if r == min(red))
    if not fine:
        warnings.warn(f"{name}: no stage has output stride <= {stride}; using its finest, {red[last]}", stacklevel=3)
    take = [i for i in default if i < last] + [last]
    if take != default:
        fm = timm.create_model(name, features_only=True, out_indices=tuple(take), **kw)
    return Backbone(fm, fm.feature_info.channels(), fm.feature_info.reduction(), name, kw["in_chans"])


def _forward_features_backbone(name: str, kw: dict, where: str) -> Backbone:
    try:
        model = timm.create_model(name, num_classes=0, **kw)
    except (RuntimeError, TypeError, ValueError, AssertionError, NotImplementedError) as e:
        raise ConfigError(where, f"timm cannot build {name!r}: {e}", "choose another model") from e
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if isinstance(patch, (tuple, list)):
        patch = patch[0] if len(set(patch)) == 1 else None
    wrapper = _ForwardFeatures(model, patch if isinstance(patch, int) else None)
    size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224))[-2:])
    training = wrapper.training
    with torch.no_grad():
        f = wrapper.eval()(torch.zeros(1, kw["in_chans"], *size))[0]
    wrapper.train(training)
    if f.ndim != 4:
        what = f"{name} has no features_only and its forward_features gives {tuple(f.shape)}, not a (B, C, h, w) map"
        raise ConfigError(where, what, "choose a CNN backbone, e.g. resnet18 or efficientnet_b0")
    info = getattr(model, "feature_info", None)  # the stride timm declares; else measured on the probe
    stride = info[-1]["reduction"] if isinstance(info, list) and info else round(size[0] / f.shape[2])
    return Backbone(wrapper, [f.shape[1]], [stride], name, kw["in_chans"])


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


def load_backbone_weights(backbone: Backbone, path: str | Path, where: str = "weights") -> None:
    """Load a local state_dict file into ``backbone``; a 3-channel first conv is summed for 1-channel input.

    Head keys are ignored; any other missing, unexpected or mismatched key is a ConfigError listing them.
    """
    sd = load_state_dict_file(path, where)
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
        what = f"{path} does not fit {backbone.name}: " + "; ".join(p for p in parts if p)
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
    from wsss.errors import StageError

    state = load_state_dict_file(path, str(path))
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
