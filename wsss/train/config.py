"""The training sections: `classifier`, `pretrain`, `retrain` and `segmenter` (with their augmentation,
CLM, GCM and defect injection).

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsss.anomaly.config import AnomalyConfig
from wsss.data.config import AugmentConfig
from wsss.fields import (
    DECAY,
    LR,
    ONE,
    PIXELS,
    PROBABILITY,
    SEED,
    SIZE,
    WEIGHT,
    Rule,
    choices,
    num,
    path_field,
)
from wsss.models.config import BackboneConfig
from wsss.refine.config import GuidedConfig


@dataclass
class CLMConfig:
    """Contrastive learning module (METHOD.md 1)."""

    enabled: bool = True
    dim: int = num(128, ge=1, fix=ONE)
    hidden: int = num(256, ge=1, fix=ONE)
    temperature: float = num(0.1, gt=0, fix="a temperature > 0")
    weight: float = num(0.1, ge=0, fix=WEIGHT)


@dataclass
class GCMConfig:
    """Guided cropping module (METHOD.md 1)."""

    enabled: bool = True
    # crop side as a fraction of the image side
    crop_frac: float = num(0.5, gt=0, le=1, fix="a fraction of the image side in (0, 1]")
    # random shift of the crop centre, as a fraction of the crop side
    jitter: float = num(0.25, ge=0, le=1, fix="a fraction of the crop side in [0, 1] (0 = on the peak)")
    consistency_weight: float = num(0.0, ge=0, fix=WEIGHT)  # lambda_gcm; 0 = no consistency loss


@dataclass
class ClassifierConfig:
    """`train-classifier`: the Defect Focus Classifier (METHOD.md 1)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # H, W the images are resized to; auto = the median training image within max_pixels (wsss/auto.py)
    input_size: list[int] | str = num("auto", gt=0, lengths=(2,), auto=True, fix=SIZE)
    # auto input_size's budget: 640 x 256, what a 2-core CPU trains in minutes per epoch
    max_pixels: int = num(163_840, ge=1024, fix=PIXELS)
    binary: bool = True  # one "defect" class; false = multi-label over the dataset's classes
    # log-sum-exp pooling sharpness (r -> 0: mean, r -> inf: max)
    lse_r: float = num(5.0, gt=0, fix="an LSE sharpness > 0, e.g. 5")
    clm: CLMConfig = field(default_factory=CLMConfig)
    gcm: GCMConfig = field(default_factory=GCMConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # weight of the flip-equivariance loss: each step also trains on the batch flipped (horizontally or vertically,
    # drawn per step), and the CAMs of a defective image's two views, flipped back, are pulled together
    # (wsss.train.losses.flip_equivariance). A CAM beside the defect moves under flips, one on it does not
    # (wsss/cam/consistency.py). 0 = off; on, a training step costs twice as much
    equivariance: float = num(0.0, ge=0, fix=WEIGHT)
    epochs: int = num(30, ge=1, fix=ONE)
    batch_size: int = num(16, ge=1, fix=ONE)
    lr: float = num(1e-3, gt=0, fix=LR)
    weight_decay: float = num(1e-4, ge=0, fix=DECAY)
    warmup_epochs: int = num(2, ge=0, fix="epochs >= 0 (0 = no warmup)")
    grad_clip: float = num(5.0, ge=0, fix="a gradient norm >= 0 (0 = off)")  # max gradient norm; 0 = off
    balance: str = choices("sampler", "pos_weight", "none", default="sampler")
    # the epoch kept and early stopping: "loss" = the lowest validation BCE; "ap" = the highest validation image AP,
    # ties broken by the loss. With a handful of defective validation images AP saturates at 1.0 on the first
    # epoch (KSDD fold 0: 5 of them, AP 1.0 with an untrained head) and "ap" keeps that epoch
    select: str = choices("loss", "ap", default="loss")
    # early stopping: epochs without a better validation score (select)
    patience: int = num(8, ge=1, fix="at least 1 epoch")
    amp: bool = False  # bf16 autocast (GPU)
    # the NHWC memory format: faster convolutions on CPUs and GPUs alike, same results up to float rounding
    channels_last: bool = True
    compile: bool = False  # torch.compile the model for training (GPU; off on the CPU by default)
    workers: int = num(0, ge=0, fix="DataLoader processes >= 0 (0 = load in the main process)")
    # keep the resized train/val images in memory when they fit in this many MiB; 0 = off
    cache_mb: int = num(2048, ge=0, fix="MiB >= 0 (0 = no cache)")
    # train this many DFCs (the k-th with the classifier's seed + 10007 k, in members/<k>/). The classifier's seed
    # moves every later stage (docs/benchmarks.md); what the cam stage takes of the K is ensemble_pick
    ensemble: int = num(1, ge=1, fix="1 (one classifier) or more")
    # "mean": every member's maps and scores averaged (k times the CAM stage's cost; members that disagree on where
    # a defect ends spread each map); "flip-consistent": the one member whose CAMs move least when the defective
    # training images are flipped (wsss/cam/consistency.py, labels only), so a classifier whose CAM sits beside the
    # defects is dropped, at k times the classifier's cost only
    ensemble_pick: str = choices("mean", "flip-consistent", default="mean")
    # compute the frozen stages' features (backbone.freeze) once per image and train the rest on them, augmented
    # geometrically in feature space (flips, rot90, the affine warp; no photometric jitter): wsss/train/feature_cache.py.
    # Needs backbone.freeze > 0, one process, and the features within cache_mb; otherwise training reads images
    cache_features: bool = False
    # this stage's seed (weights, data order, augmentation); null = run.seed. Set alone, it re-trains this stage and
    # keeps the stages before it: how a benchmark measures one stage's share of the seed spread
    seed: int | None = num(None, ge=0, fix=SEED + ", or null (run.seed)")


@dataclass
class PretrainConfig:
    """`pretrain`: anomaly-guided pretraining of the classifier's backbone (METHOD.md 7b), without labels.

    The anomaly maps that guide it come from ``anomaly.backbone`` (a randomly initialised network by default, or a
    local self-supervised weights file), never from a model that saw image labels: ``anomaly.features`` must stay
    ``backbone``. The pretrained weights seed `train-classifier` in place of ``classifier.backbone.weights``."""

    epochs: int = num(10, ge=1, fix=ONE)
    batch_size: int = num(16, ge=1, fix=ONE)
    lr: float = num(1e-3, gt=0, fix=LR)
    weight_decay: float = num(1e-4, ge=0, fix=DECAY)
    # backbone stages whose energy map is pulled (negative indices count from the last); empty = all
    stages: list[int] = num([], fix="backbone stage indices, e.g. [2, 3], or [] for all")
    anomaly: AnomalyConfig = field(default_factory=lambda: AnomalyConfig(features="backbone"))


_INJECT_KINDS = ("scratch", "crack", "blob", "stain")  # wsss.data.synthetic.DEFECTS


@dataclass
class InjectConfig:
    """Defects injected into OK training images, with masks exact by construction (:mod:`wsss.train.inject`).

    Off by default: not yet measured on real data."""

    enabled: bool = False
    # fraction of OK training samples that receive an injected defect each time they are drawn
    prob: float = num(0.5, ge=0, le=1, fix=PROBABILITY)
    # odds of pasting a confident pseudo-mask region against drawing a procedural defect (procedural only on a
    # one-class dataset: its kinds name no dataset class)
    paste_weight: float = num(1.0, ge=0, fix=WEIGHT)
    procedural_weight: float = num(1.0, ge=0, fix=WEIGHT)
    # paste sources: defective training images whose pseudo-mask confidence (the mask stage's confidence.csv) is at
    # least this; only their defect pixels are pasted, never ignore pixels
    min_confidence: float = num(0.8, ge=0, le=1, fix="a confidence in [0, 1]")
    # regions kept in memory to paste, the most confident images' first
    max_sources: int = num(256, ge=1, fix=ONE)
    # a source region smaller than this (pixels at the training input size) is not pasted
    min_area: int = num(4, ge=1, fix="pixels >= 1")
    # pasted regions fade into the OK surface over this many pixels outside their mask (those pixels are ignore)
    blend: int = num(2, ge=0, fix="pixels >= 0 (0 = hard edge)")
    # a pasted region is resized by a factor in [1 - scale, 1 + scale]
    scale: float = num(0.2, ge=0, lt=1, fix="a fraction in [0, 1) (0 = no resizing)")
    # procedural defects' peak change, as multiples of the OK image's own standard deviation: [low, high]
    contrast: list[float] = num([2.0, 5.0], gt=0, lengths=(2,), fix="[low, high] multiples of the image's std, > 0")
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
class SegTrainConfig:
    """Training a multi-task segmenter on pseudo-masks: what `retrain` and `train-segmenter` share."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(output_stride=32))
    # H, W; auto = the median training image within max_pixels
    input_size: list[int] | str = num("auto", gt=0, lengths=(2,), auto=True, fix=SIZE)
    max_pixels: int = num(86_016, ge=1024, fix=PIXELS)  # auto input_size's budget: 448 x 192
    # auto input_size and crop: the network sees the part at zoom x (per side) the size max_pixels allows, trained on
    # crops of max_pixels (the training cost of zoom 1): thin defects stay visible at the cost of inference time only
    # (KSDD: 896 x 384 from 448 x 192 windows, 31.9% -> 44.6% segmenter mIoU_def; the demo: 256 from 128 windows)
    zoom: float = num(1.0, ge=1, le=4, fix="a factor in [1, 4] (1 = the image at max_pixels, no crops)")
    # [H, W] training crops of the image at input_size ([0, 0] = the whole image): a larger input_size keeps thin
    # defects at the cost of inference time only; a crop of a defective image holds one of its mask's defect pixels.
    # Validation and inference see the whole image at input_size. auto = max_pixels' size when zoom > 1, else off
    crop: list[int] | str = num(
        [0, 0], ge=0, lengths=(2,), auto=True, fix="[H, W] >= 0, at most input_size ([0, 0] = off), or auto"
    )
    decoder_channels: int = num(64, ge=1, fix=ONE)
    epochs: int = num(15, ge=1, fix=ONE)
    # at least this many optimizer steps: where `epochs` of the training set make fewer (a set of a few dozen images
    # makes 9 steps an epoch at batch 8), the trainer runs ceil(min_steps / steps per epoch) epochs and stretches
    # `patience` by the same factor, so a small set trains as long as a large one; 0 = `epochs` as written
    min_steps: int = num(0, ge=0, fix="steps >= 0 (0 = the epochs as written)")
    batch_size: int = num(16, ge=1, fix=ONE)
    lr: float = num(1e-3, gt=0, fix=LR)
    weight_decay: float = num(1e-4, ge=0, fix=DECAY)
    warmup_epochs: int = num(1, ge=0, fix="epochs >= 0 (0 = no warmup)")
    # segmentation loss = CE + dice_weight * Dice (ignore pixels excluded)
    dice_weight: float = num(1.0, ge=0, fix=WEIGHT)
    # the Dice over the whole batch (a large defect outweighs a small one) or per image and class, averaged over the
    # images that hold that class (each defect weighs the same, as in mIoU_def)
    dice_over: str = choices("batch", "image", default="batch")
    cls_weight: float = num(0.5, ge=0, fix=WEIGHT)  # + cls_weight * image-level BCE on the classification head
    # the classification head's pooling of its per-location logits: 0 = average (GAP), > 0 = log-sum-exp with this
    # sharpness (the DFC's pooling, classifier.lse_r), so small defects are not averaged away
    cls_lse_r: float = num(0.0, ge=0, fix="0 (average pooling) or an LSE sharpness > 0, e.g. 5")
    # what the image logits pool: "head" = a linear layer on the deepest encoder map; "mask" = the mask's per-pixel
    # log-odds of each class against background, so the image decision (and the gate) comes from the mask itself
    cls_source: str = choices("head", "mask", default="head")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: bool = False
    channels_last: bool = True  # the NHWC memory format (as classifier.channels_last)
    compile: bool = False  # torch.compile the model for training (GPU; off on the CPU by default)
    workers: int = num(0, ge=0, fix="DataLoader processes >= 0 (0 = load in the main process)")
    # defects are rare: "sampler" draws half defective images per epoch, "pos_weight" weighs the image BCE instead
    balance: str = choices("sampler", "pos_weight", "none", default="none")
    # a training image labelled defective whose pseudo-mask has no pixel of a labelled class (pseudo-labelling missed
    # the defect): "background" trains on it as is; "ignore" leaves its mask out of the segmentation loss (it still
    # trains the image head and the distillation terms). Measured on KSDD (docs/lab-notes/benchmarks-log.md), ignore did not help: segmenter
    # mIoU_def 14.25% against 15.43%, retrain round 15.29% against 15.56%
    missed_defects: str = choices("background", "ignore", default="background")
    # OK training images (labelled defect-free, not reviewed) train as all background at full weight, whatever their
    # pseudo-mask says: their label makes that exact, while the pseudo-mask of an OK image the classifier called
    # defective holds CAM blobs. Always so with inject.enabled (the injection needs a clean canvas)
    ok_background: bool = False
    inject: InjectConfig = field(default_factory=InjectConfig)  # defects injected into OK training images
    # inference: the probabilities upsampled to each image's size follow its edges (guided filter)
    guided: GuidedConfig = field(default_factory=GuidedConfig)
    # inference: the image also seen flipped left-right and top-bottom (the views training's flips drew), the three
    # views' logits averaged (mask and image head): 3x the network's inference time. Recorded with the model, so
    # `wsss predict` does the same; changing it re-runs the stage
    flips: bool = False
    # start from this trained segmenter's weights (a folder with segmenter.safetensors + segmenter.json of the same
    # architecture and classes) instead of the backbone's pretrained weights: fine-tuning, e.g. after a review round
    init_from: str | None = path_field()
    # an exponential moving average of the weights (and BatchNorm statistics) over about this many epochs is what
    # validation scores and what is saved; 0 = the raw weights. In epochs, not steps, so a small and a large data
    # set average over the same share of training
    ema_epochs: float = num(0.0, ge=0, fix="epochs >= 0 (0 = off), e.g. 2")
    # the weights kept: "val" = the epoch with the best validation Seg_mIoU against the pseudo-masks (early stopping
    # after `patience`); "last" = the last epoch's, every epoch trained (validation is only logged). A handful of
    # defective validation images make "val" a draw between epochs
    select: str = choices("val", "last", default="val")
    # this stage's seed (weights, data order, augmentation, crops); null = run.seed. Set alone, it re-trains this
    # stage and keeps the stages before it: how a benchmark measures one stage's share of the seed spread
    seed: int | None = num(None, ge=0, fix=SEED + ", or null (run.seed)")


@dataclass
class RetrainConfig(SegTrainConfig):
    """`retrain`: additional training rounds (METHOD.md 5) of a segmenter on the pseudo-masks."""

    rounds: int = num(1, ge=1, fix=ONE)
    # fused map = fuse_weight * segmenter probability + (1 - fuse_weight) * extended CAM
    fuse_weight: float = num(0.5, ge=0, le=1, fix="a weight in [0, 1]")
    # the fused map's level where defect beats background in its CRF; null = pseudo.bg_prior. The fused map is half
    # segmenter probability, calibrated unlike the CAM, so the first round's prior need not suit it
    bg_prior: float | None = num(None, gt=0, lt=1, fix="a value in (0, 1), or null (pseudo.bg_prior)")
    # pixels the fused map's defect regions grow by before the band is drawn; null = pseudo.margin
    margin: int | None = num(None, ge=0, fix="pixels >= 0, or null (pseudo.margin)")
    # `wsss import-review` folder: its human masks replace those training images' pseudo-masks in the round's
    # training and are the round's masks of those images (never relabelled), so they reach the segmenter too
    reviewed: str | None = path_field()


@dataclass
class SegmenterConfig(SegTrainConfig):
    """`train-segmenter`: distillation into the fast multi-task segmenter the line runs (METHOD.md 6)."""

    epochs: int = num(30, ge=1, fix=ONE)
    # balanced, as the classifier: with rare defects an unbalanced image head stays below the gate on everything
    balance: str = choices("sampler", "pos_weight", "none", default="sampler")
    masks: str = ""  # stage whose masks/ it learns from; empty = `retrain` if the pipeline has it, else pseudo-labels
    # self-training: round k > 1 trains a fresh segmenter on round k-1's masks of the training and validation images
    # (an image labelled defective gets the ungated argmax over background and its labelled classes, an OK image
    # background everywhere); the last round is the stage's segmenter. 1 = learn from `masks` alone
    rounds: int = num(1, ge=1, fix=ONE)
    # + kd_weight * KL(teacher || student) of the per-pixel class distributions
    kd_weight: float = num(0.5, ge=0, fix=WEIGHT)
    # both distributions softened by this temperature (the loss is scaled by T^2)
    kd_temperature: float = num(2.0, gt=0, fix="a temperature > 0")
    # + score_kd_weight * BCE(classification head, the DFC's sample scores)
    score_kd_weight: float = num(0.5, ge=0, fix=WEIGHT)
    # inference: a class whose image probability is below this is gated off the mask
    score_threshold: float = num(0.5, ge=0, le=1, fix=PROBABILITY)
    # early stopping: epochs without a better validation Seg_mIoU (against pseudo-masks)
    patience: int = num(8, ge=1, fix="at least 1 epoch")
    # validate every this many epochs and after the last (1 = every epoch): on a short run validation is a large
    # share of the time, and an epoch it skips cannot be kept as the best
    val_every: int = num(1, ge=1, fix="at least 1 epoch")
    reviewed: str | None = path_field()  # `wsss import-review` folder: human masks that replace pseudo-masks
    # a reviewed image is drawn this many times as often as the others of its kind in an epoch (the epoch keeps its
    # length), so a few human masks are not drowned among hundreds of pseudo-masks
    reviewed_repeat: int = num(1, ge=1, fix="1 (drawn as often as the others) or more")
    # the image head that gates the line's masks pools by LSE, as the DFC does (docs/lab-notes/benchmarks-log.md: KSDD test image AP 0.457 with
    # average pooling, 0.707 at 5, 0.816 at 10; mIoU_def 15.43%, 13.92%, 12.94%)
    cls_lse_r: float = num(5.0, ge=0, fix="0 (average pooling) or an LSE sharpness > 0, e.g. 5")
