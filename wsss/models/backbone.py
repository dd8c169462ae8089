"""Backbone factory over timm: one feature map at a chosen output stride; weights from a package or a local file.

Output stride (METHOD.md 1: CAM resolution matters for slender defects). timm's ``output_stride=`` (dilation) is used
where the model supports it: ResNets, EfficientNets, MobileNetV3/V4, ConvNeXt, RegNet, MobileViT, NFNet, byobnet...
Where it does not (timm raises: GhostNet, MambaOut, MaxViT, FastViT, PVTv2, ViTs; or it silently ignores it), we select
the deepest stage whose reduction (``feature_info``) is <= the requested stride: a finer but shallower map. Where no
stage is that fine (a ViT's patch grid is already 16), the finest stage is used with a warning. ``Backbone.stride`` is
always the stride actually obtained. Models without ``features_only`` support fall back to ``forward_features``
(token outputs are reshaped to the patch grid).

Weights are never downloaded: ``create_model`` always gets ``pretrained=False`` (timm's
``pretrained_cfg_overlay=dict(file=...)`` route is not used: it goes through ``load_pretrained``). ``BackboneConfig.weights``
is either a registered name (``imagenet``: a file an installed package carries, checked by sha256, see
:mod:`wsss.models.weights`) or a local file holding the plain timm model's state_dict (classifier head keys ignored), a
``Backbone``'s, or that of a model holding one as ``.backbone`` (a trained DFC: only its ``backbone.*`` keys are used).

Input normalisation. The data side always feeds ``(x / 255 - 0.5) / 0.25`` (``wsss.data.transforms``); a backbone whose
weights expect other statistics (ImageNet's mean and std) converts inside its forward, so every path (training, CAMs,
``predict``, the ONNX graph) sees what the weights were trained on. A 1-channel backbone with 3-channel weights gets the
summed first convolution (timm's ``adapt_input_conv``) and the channel means of mean and std.

Freezing. ``BackboneConfig.freeze`` keeps the first N feature stages (from the stem) fixed: no gradients, and their
BatchNorm statistics frozen (those modules stay in eval mode when the model trains), so a small in-domain training set
cannot wash out the pretrained features and backward passes skip the high-resolution layers.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import warnings
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from wsss.data.transforms import MEAN, STD
from wsss.errors import ConfigError
from wsss.models.config import BackboneConfig
from wsss.models.state import _SUFFIXES, load_backbone_state, load_backbone_weights
from wsss.models.weights import IMAGENET_MEAN, IMAGENET_STD, is_weights_name, load_named, unknown_name

STRIDES = (8, 16, 32)


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
        self.input_norm = "fixed"
        self.frozen: list[nn.Module] = []  # modules kept in eval mode with no gradients (freeze_stages)
        self.frozen_stage: str | None = None  # the last frozen feature stage's module name (freeze_stages, n > 0)
        # x -> x * scale + shift turns the data side's normalisation into the weights' own; not saved in state_dicts
        self.register_buffer("in_scale", torch.ones(1, in_chans, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.zeros(1, in_chans, 1, 1), persistent=False)

    def set_input_norm(self, norm: str) -> None:
        """``fixed``: the data side's statistics as they are; ``imagenet``: converted to ImageNet's mean and std."""
        self.input_norm = norm
        if norm == "fixed":
            self.in_scale.fill_(1.0)
            self.in_shift.fill_(0.0)
            return
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if self.in_chans != 3:  # gray input, summed first conv: one statistic for the channels it stands for
            mean, std = mean.mean().expand(self.in_chans), std.mean().expand(self.in_chans)
        self.in_scale.copy_((STD / std).view(1, -1, 1, 1))
        self.in_shift.copy_(((MEAN - mean) / std).view(1, -1, 1, 1))

    def freeze_stages(self, n: int) -> None:
        """Freeze the stem and the first ``n`` of the feature stages (``forward_stages``' maps); -1 = everything."""
        if n == 0:
            return
        named = list(self.model.named_modules())[1:]
        if n < 0:
            self.frozen = [m for _, m in named]
        else:
            info = getattr(self.model, "feature_info", None)
            stages = [str(m) for m in info.module_name()] if hasattr(info, "module_name") else []
            if n > len(stages):
                what = f"{self.name} has {len(stages)} feature stages, cannot freeze {n}"
                raise ConfigError("backbone.freeze", what, f"use 0 to {len(stages)}, or -1 for the whole backbone")
            names = [name for name, _ in named]
            target = next((c for c in (stages[n - 1], stages[n - 1].replace(".", "_")) if c in names), None)
            if target is None:
                raise ConfigError("backbone.freeze", f"no module {stages[n - 1]!r} in {self.name}", "use 0 or -1")
            last = max(i for i, name in enumerate(names) if name == target or name.startswith(target + "."))
            ancestors = {name for name in names if target.startswith(name + ".")}
            self.frozen = [m for name, m in named[: last + 1] if name not in ancestors]
            self.frozen_stage = target
        for m in self.frozen:
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
            m.eval()

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        if self.input_norm != "fixed":
            x = x * self.in_scale + self.in_shift
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

    Random init unless ``cfg.weights`` names registered weights or a local file. Raises ConfigError (keys under
    ``section``) for an unknown name, a stride other than 8/16/32, or weights that are missing, corrupted, unreadable or
    do not fit the model.
    """
    chans = cfg.in_chans if cfg.in_chans > 0 else in_chans
    _check_name(cfg.name, f"{section}.name")
    if cfg.output_stride not in STRIDES:
        raise ConfigError(f"{section}.output_stride", f"unsupported value {cfg.output_stride}", "use 8, 16 or 32")
    if chans < 1:
        raise ConfigError(f"{section}.in_chans", f"invalid channel count {chans}", "use 1 (grayscale) or 3 (RGB)")
    kw = {"pretrained": False, "in_chans": chans}
    try:
        backbone = _features_backbone(cfg.name, cfg.output_stride, kw, cfg.stages)
    except (RuntimeError, AssertionError, NotImplementedError):  # no features_only support in this model
        backbone = _forward_features_backbone(cfg.name, kw, f"{section}.name")
    set_padding_mode(backbone, cfg.padding)
    if is_weights_name(cfg.weights):
        sd, _ = load_named(cfg.weights, cfg.name, f"{section}.weights")
        load_backbone_state(backbone, sd, f"weights {cfg.weights!r}", f"{section}.weights")
    elif cfg.weights:
        if Path(cfg.weights).suffix.lower() not in _SUFFIXES and not Path(cfg.weights).exists():
            raise unknown_name(Path(cfg.weights).name, f"{section}.weights")
        load_backbone_weights(backbone, cfg.weights, f"{section}.weights")
    backbone.set_input_norm(resolve_input_norm(cfg))
    backbone.freeze_stages(cfg.freeze)
    return backbone


def resolve_input_norm(cfg: BackboneConfig) -> str:
    """``auto`` -> ``imagenet`` for registered (ImageNet) weights, else ``fixed``; explicit values as they are."""
    if cfg.input_norm != "auto":
        return cfg.input_norm
    return "imagenet" if is_weights_name(cfg.weights) else "fixed"


def backbone_meta(cfg: BackboneConfig, in_chans: int) -> dict:
    """What rebuilds a trained backbone from its own state_dict: weights dropped, normalisation made explicit."""
    return dataclasses.asdict(cfg) | {"weights": None, "in_chans": in_chans, "input_norm": resolve_input_norm(cfg)}


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


def _features_backbone(name: str, stride: int, kw: dict, stages: int = 0) -> Backbone:
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
    if stages > 0:  # the network cut after its stages-th feature stage
        if stages > len(take):
            what = f"{name} has {len(take)} feature stages at output stride {stride}, not {stages}"
            raise ConfigError("backbone.stages", what, f"use 0 (all) to {len(take)}")
        take = take[:stages]
    if take != default:
        fm = timm.create_model(name, features_only=True, out_indices=tuple(take), **kw)
    _drop_unused_blocks(fm)
    return Backbone(fm, fm.feature_info.channels(), fm.feature_info.reduction(), name, kw["in_chans"])


def _drop_unused_blocks(fm: nn.Module) -> None:
    """Remove the blocks after the deepest returned stage where timm keeps and runs them (EfficientNet-style
    ``blocks``), so a cut network also costs less; timm's FeatureListNet models are already pruned."""
    blocks = getattr(fm, "blocks", None)
    module = str(fm.feature_info.module_name()[-1])
    if isinstance(blocks, nn.Sequential) and re.fullmatch(r"blocks\.\d+", module):
        fm.blocks = blocks[: int(module.split(".")[1]) + 1]


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
