"""CAM methods: how a batch of images at one scale becomes class maps and sample probabilities.

A method is a :class:`CamMethod` registered by name (``cam.method``), as review formats and dataset adapters are.
:class:`wsss.cam.extract.CamExtractor` does the rest the same way for every method: the scales, the flipped views
(flipped back), the tiles and their pasting, the ``relu``; the `cam` stage then normalises and gates the maps and
IEM extends them. A map is in any units (the stage divides by a dataset-level scale), at the network's output
stride, one channel per class.

Built in:

- ``score-map`` (the default, METHOD.md 2): the DFC's CAM head applied at every position is the class activation
  map itself, so one forward pass gives the maps (and the LSE-pooled scores).
- ``grad-cam`` (Selvaraju et al. 2017): each class's map is the backbone's last feature maps weighted by the spatial
  mean of the class score's gradient with respect to them. With a linear head and average pooling it equals the
  score map up to a constant; with the DFC's LSE pooling the weights follow where the score comes from. One
  backward pass per class and image chunk: slower, for comparison and for heads that are not linear.

To add one: subclass :class:`CamMethod`, give it a ``name``, implement :meth:`CamMethod.__call__`, decorate it with
:func:`register_cam_method` in a module listed in :data:`CAM_METHODS`' modules (docs/contributing.md).
"""

from __future__ import annotations

import torch

from wsss.models.chunked import forward_chunked
from wsss.models.classifier import DFC, lse_pool
from wsss.registry import Registry


class CamMethod:
    """Base of the CAM methods: ``name`` and ``__call__(model, net, x) -> (maps (B, K, h, w), probs (B, K))``."""

    name = ""

    def __call__(self, model: DFC, net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class maps and sample probabilities of the batch ``x`` (on the model's device). ``net`` is ``model`` or
        its compiled wrapper (``cam.compile``), for methods that only run forward passes."""
        raise NotImplementedError


CAM_METHODS: Registry[CamMethod] = Registry("CAM method", "CAM methods", ["wsss.cam.methods"])


def register_cam_method(cls: type[CamMethod]) -> type[CamMethod]:
    CAM_METHODS.register(cls.name, cls())
    return cls


def get_cam_method(name: str) -> CamMethod:
    return CAM_METHODS.lookup(name, "cam.method")


@register_cam_method
class ScoreMap(CamMethod):
    name = "score-map"

    @torch.no_grad()
    def __call__(self, model: DFC, net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = forward_chunked(net, x)
        return out.cams.float(), torch.sigmoid(out.logits.float())


@register_cam_method
class GradCam(CamMethod):
    name = "grad-cam"

    def __call__(self, model: DFC, net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, probs = [], []
        for chunk in x.split(1):  # one image at a time: the gradients need the activations kept
            with torch.no_grad():
                features = model.backbone(chunk).float()
            with torch.enable_grad():
                f = features.detach().requires_grad_(True)
                logits = lse_pool(model.cam_head(f).float(), model.lse_r)
                per_class = []
                for k in range(logits.shape[1]):
                    (grad,) = torch.autograd.grad(logits[:, k].sum(), f, retain_graph=k + 1 < logits.shape[1])
                    per_class.append((grad.mean((2, 3), keepdim=True) * f).sum(1))
            maps.append(torch.stack(per_class, 1).detach())
            probs.append(torch.sigmoid(logits.detach()))
        return torch.cat(maps), torch.cat(probs)
