"""A backbone split at its frozen stages: the prefix computed once per image, the rest trained on what it gives.

With ``backbone.freeze`` = N, the stem and the first N feature stages have no gradients and keep their BatchNorm
statistics, so they map an image to the same features in every epoch. :class:`FrozenSplit` runs that prefix alone
(:meth:`FrozenSplit.prefix`) and the rest of the backbone from its output (:meth:`FrozenSplit.suffix`), sharing every
parameter with the backbone: a trainer computes the prefix once per image and trains the suffix on the cache, and the
backbone it saves is the usual one.

The suffix is a shallow copy of the timm feature model in which the frozen top-level modules (the stem, the frozen
stages) pass their input through. That is only right where those modules form a chain, each feeding the next and
nothing else; :func:`split_frozen` checks it on a random input (suffix(prefix(x)) must equal the backbone's output)
and returns None where it does not hold, or where nothing is frozen.
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import Tensor, nn

from wsss.models.backbone import Backbone


class _Stop(Exception):
    """Raised by the hook on the last frozen stage: the prefix's output is captured, the rest need not run."""


class FrozenSplit:
    """The prefix (stem + frozen stages) and suffix (the rest) of ``backbone``; see the module docstring."""

    def __init__(self, backbone: Backbone):
        if backbone.frozen_stage is None:
            raise ValueError("the backbone has no frozen feature stage (backbone.freeze > 0)")
        self.backbone = backbone
        named = dict(backbone.model.named_modules())
        self.boundary = named[backbone.frozen_stage]
        frozen = {id(m) for m in backbone.frozen}
        # the frozen modules whose parent is not frozen: what the suffix passes through
        self.tops = [
            name
            for name, m in named.items()
            if name and id(m) in frozen and id(named[name.rpartition(".")[0]]) not in frozen
        ]
        self.suffix_model = _pass_through(backbone.model, self.tops)
        self.stride = 0  # the prefix's output stride and channels, measured by split_frozen
        self.channels = 0

    @torch.no_grad()
    def prefix(self, x: Tensor) -> Tensor:
        """The last frozen stage's output for the batch ``x`` (the backbone's normalisation applied first)."""
        out: list[Tensor] = []

        def hook(_m: nn.Module, _i: object, o: Tensor) -> None:
            out.append(o)
            raise _Stop

        handle = self.boundary.register_forward_hook(hook)
        try:
            self.backbone.forward_stages(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        return out[0]

    def digest(self) -> str:
        """sha256 of what the prefix computes with: the input normalisation and every frozen module's parameters and
        buffers (equal digests, equal features for the same images)."""
        h = hashlib.sha256()
        tensors = [("in_scale", self.backbone.in_scale), ("in_shift", self.backbone.in_shift)]
        for m in self.backbone.frozen:
            tensors += [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
        for name, t in tensors:
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
        return h.hexdigest()

    def suffix(self, f: Tensor) -> Tensor:
        """The backbone's output (its deepest map) computed from prefix features ``f``."""
        maps = self.suffix_model(f)
        last = maps[-1]
        return last.permute(0, 3, 1, 2) if self.backbone.nhwc else last


def split_frozen(backbone: Backbone, in_chans: int, size: tuple[int, int] = (64, 64)) -> FrozenSplit | None:
    """A :class:`FrozenSplit` of ``backbone``, or None when nothing is frozen or its frozen modules are no chain."""
    if backbone.frozen_stage is None or not backbone.frozen:
        return None
    try:
        split = FrozenSplit(backbone)
    except (ValueError, KeyError):
        return None
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            x = torch.randn(2, in_chans, *size, generator=torch.Generator().manual_seed(0))
            x = x.to(next(backbone.parameters()).device)
            whole = backbone(x)
            try:
                f = split.prefix(x)
                parts = split.suffix(f)
            except (RuntimeError, TypeError, IndexError):  # the frozen modules did not form a chain
                return None
            split.stride, split.channels = size[0] // int(f.shape[-2]), int(f.shape[1])
            ok = parts.shape == whole.shape and torch.allclose(parts, whole, rtol=1e-4, atol=1e-4)
    finally:
        backbone.train(was_training)
    return split if ok else None


def _pass_through(model: nn.Module, names: list[str]) -> nn.Module:
    """A shallow copy of ``model`` whose modules ``names`` are replaced by ``nn.Identity`` (the containers on their
    paths copied too); every other module, and so every parameter, is shared with ``model``."""
    copies: set[int] = set()  # the containers copied already (two frozen stages share their parent)

    def own(module: nn.Module) -> nn.Module:
        if id(module) in copies:
            return module
        new = copy.copy(module)
        new._modules = dict(module._modules)
        copies.add(id(new))
        return new

    root = own(model)
    for name in names:
        *path, last = name.split(".")
        node = root
        for part in path:
            node._modules[part] = node = own(node._modules[part])
        node._modules[last] = nn.Identity()
    return root
