"""The multi-task segmenter (METHOD.md sections 5 and 6): shared timm encoder, light FPN decoder, image-level head.

Mask logits have K+1 channels (0 = background, k = defect class k) at the input size, so one softmax gives a
per-pixel class distribution that is directly comparable with the pseudo-masks. The classification head on the
deepest map gives the sample-level decision (K sigmoid logits), which gates the mask at inference (METHOD.md 6).
The additional training round (section 5) and the distillation (section 6) train this same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbone import Backbone, create_backbone
from wsss.models.classifier import lse_pool
from wsss.models.config import BackboneConfig
from wsss.models.model_dir import load_model_dir

MODEL_FILE = "segmenter.safetensors"  # the trained segmenter's state_dict
META_FILE = "segmenter.json"  # what rebuilds it (segmenter_meta)
FINEST_STRIDE = 4  # the decoder fuses down to this stride; stride-2 stem maps cost much and add little
CLS_SOURCES = ("head", "mask")  # what the image logits pool: a linear head's map, or the mask's log-odds


@dataclass
class SegmenterOutput:
    mask_logits: torch.Tensor  # (B, K+1, H, W) at the input size; channel 0 = background
    cls_logits: torch.Tensor  # (B, K) sample-level logits (sigmoid -> per-class image probability)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FPNDecoder(nn.Module):
    """Top-down FPN over the encoder stages of stride >= 4 (or the deepest stage alone when none is that coarse).

    Each used stage gets a 1x1 lateral conv to ``channels``; from the deepest map down, the running map is
    upsampled bilinearly to the next stage's size (exact sizes, so odd inputs work), added to its lateral and
    smoothed by a 3x3 conv + BN + ReLU. Returns the finest fused map (B, channels, h, w).
    """

    def __init__(self, in_channels: Sequence[int], reductions: Sequence[int], channels: int):
        super().__init__()
        used = [i for i, r in enumerate(reductions) if r >= FINEST_STRIDE] or [len(reductions) - 1]
        self.used = used
        self.stride = int(reductions[used[0]])
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[i], channels, 1) for i in used)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in used)

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = [stages[i] for i in self.used]
        p = self.smooth[-1](self.lateral[-1](feats[-1]))
        for j in range(len(feats) - 2, -1, -1):
            lat = self.lateral[j](feats[j])
            p = self.smooth[j](lat + F.interpolate(p, size=lat.shape[-2:], mode="bilinear", align_corners=False))
        return p


class Segmenter(nn.Module):
    """Encoder (``Backbone.forward_stages``) + FPN decoder -> K+1 mask logits, and a pooled linear -> K image logits.

    The image head applies its linear layer at every location of the deepest map and pools the K logit maps:
    ``cls_lse_r = 0`` averages them (global average pooling, the same as a linear on the averaged features), and
    ``cls_lse_r > 0`` takes their log-sum-exp with that sharpness (:func:`~wsss.models.classifier.lse_pool`, the DFC's
    pooling), so a defect covering a few cells of the map still drives the score instead of being averaged away.

    With ``cls_source = "mask"`` the image logits are not a head of their own: they pool the mask's per-pixel log-odds
    of each class against background (``logit_k - logit_0``) the same way, so the image decision and the mask come
    from one map (as the DFC's score and CAM do) and the gate cannot switch off a mask the network is sure of; the
    image-level losses then train the mask logits too.

    Args:
        backbone: a :class:`~wsss.models.backbone.Backbone` (any timm model it supports).
        num_classes: K defect classes (1 for defect/OK).
        decoder_channels: width of the FPN decoder.
        cls_lse_r: the image head's pooling (0 = average, > 0 = LSE with this r).
        cls_source: ``head`` (a linear layer on the deepest encoder map) or ``mask`` (the mask logits).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        decoder_channels: int = 64,
        cls_lse_r: float = 0.0,
        cls_source: str = "head",
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if cls_lse_r < 0:
            raise ValueError(f"cls_lse_r must be >= 0 (0 = average pooling), got {cls_lse_r}")
        if cls_source not in CLS_SOURCES:
            raise ValueError(f"cls_source must be one of {CLS_SOURCES}, got {cls_source!r}")
        self.backbone = backbone
        self.cls_source = cls_source
        self.num_classes = num_classes
        self.cls_lse_r = float(cls_lse_r)
        self.decoder = FPNDecoder(backbone.channels, backbone.reductions, decoder_channels)
        self.mask_head = nn.Conv2d(decoder_channels, num_classes + 1, 1)
        # the mask-sourced image logits need no parameters of their own (nor could DDP train unused ones)
        self.cls_head = nn.Linear(backbone.channels[-1], num_classes) if cls_source == "head" else None

    def forward(self, x: torch.Tensor) -> SegmenterOutput:
        stages = self.backbone.forward_stages(x)
        logits = self.mask_head(self.decoder(stages))
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.cls_head is None:
            maps = logits[:, 1:] - logits[:, :1]
        else:
            maps = F.conv2d(stages[-1], self.cls_head.weight[:, :, None, None], self.cls_head.bias)
        if self.cls_lse_r > 0:
            cls = lse_pool(maps.float(), self.cls_lse_r).to(maps.dtype)
        else:
            cls = maps.mean(dim=(2, 3))
        return SegmenterOutput(mask_logits=logits, cls_logits=cls)


# --------------------------------------------------------------------------------------------- build and load
def gate_labels(probs: np.ndarray, cls_probs: np.ndarray, threshold: float) -> np.ndarray:
    """Per-pixel labels (H, W) uint8 from class probabilities (K+1, H, W), gated by the image-level decision.

    A defect class whose image probability ``cls_probs[k-1]`` is below ``threshold`` is switched off: its pixels
    become background (METHOD.md 6), so an image called OK always gets an empty mask and the mask never claims a
    class the classification head rejects.
    """
    labels = probs.argmax(axis=0).astype(np.uint8)
    off = np.concatenate([[False], np.asarray(cls_probs).reshape(-1) < threshold])
    labels[off[labels]] = 0
    return labels


def load_segmenter(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, dict[str, Any]]:
    """The trained segmenter in ``model_dir`` (``segmenter.safetensors`` + ``segmenter.json``), in eval mode."""
    meta_path = Path(model_dir) / META_FILE

    def build(meta: dict[str, Any]) -> Segmenter:
        backbone = create_backbone(BackboneConfig(**meta["backbone"]), int(meta["in_chans"]), f"{meta_path}: backbone")
        # segmenters saved before the image head's pooling was configurable averaged
        # (nor had a choice of what the image logits pool: a head of their own)
        return Segmenter(
            backbone,
            len(meta["classes"]),
            int(meta["decoder_channels"]),
            meta.get("cls_lse_r", 0.0),
            meta.get("cls_source", "head"),
        )

    fix = "re-run the stage that trained it with --force (`wsss run-stage train-segmenter --force`, or retrain)"
    return load_model_dir(model_dir, META_FILE, MODEL_FILE, build, "the segmenter", fix, device)
