"""The `dataset` and `prepare` sections: where the images are, how to read them, how to split them; and the training
augmentations (`classifier.augment`, `retrain.augment`, `segmenter.augment`), which the data side applies.

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsss.fields import (
    FRACTION,
    ONE,
    PROBABILITY,
    SEED,
    choices,
    num,
    path_field,
)


@dataclass
class AugmentConfig:
    """Training augmentations suited to textures (applied on the fly, never to validation images)."""

    flips: bool = True
    rot90: bool = True  # only when the input is square
    affine_degrees: float = num(10.0, ge=0, le=180, fix="degrees in [0, 180] (0 = no rotation)")
    affine_scale: float = num(0.1, ge=0, lt=1, fix="a fraction in [0, 1) (0 = no scaling)")  # scale in [1 - s, 1 + s]
    # fraction of the size
    affine_translate: float = num(0.05, ge=0, le=1, fix="a fraction of the size in [0, 1] (0 = no shift)")
    brightness: float = num(0.15, ge=0, le=1, fix="a fraction of the range in [0, 1] (0 = off)")
    contrast: float = num(0.15, ge=0, le=1, fix="a fraction in [0, 1] (0 = off)")
    gamma: float = num(0.15, ge=0, fix="a log-gamma range >= 0 (0 = off)")
    blur_prob: float = num(0.1, ge=0, le=1, fix=PROBABILITY + " (0 = off)")


@dataclass
class SyntheticConfig:
    """Generated demo/test data (kind: synthetic): surfaces with drawn defects whose masks are exact."""

    n_ok: int = num(48, ge=1, fix=ONE)
    n_defect: int = num(32, ge=1, fix=ONE)
    size: int = num(128, ge=32, fix="pixels >= 32")  # square images of size x size pixels
    seed: int = num(0, ge=0, fix=SEED)
    defects: list[str] = field(default_factory=lambda: ["scratch", "crack", "blob", "stain"])
    # surfaces: procedural (noise, stripes, brushed: the tests') or photographs (brick, gravel, grass: the demo's)
    textures: list[str] = field(default_factory=lambda: ["noise", "stripes", "brushed"])


@dataclass
class DatasetConfig:
    """Where the images are and how to read them (see docs/datasets.md)."""

    kind: str = "synthetic"  # folder, csv, mtd, ksdd, ksdd2, dagm, mvtec, neu, synthetic
    root: str | None = path_field()  # dataset folder (kind csv: the CSV file)
    ok_names: list[str] = field(default_factory=lambda: ["ok", "good"])  # folder names meaning defect-free
    binary: bool = False  # collapse all defect classes into one class "defect"
    # gt pixel is defect iff value >= this; None: the adapter's default
    mask_threshold: int | None = num(None, ge=1, le=255, fix="a mask value in [1, 255], or null (the adapter's)")
    categories: list[str] = field(default_factory=list)  # mvtec categories / dagm classes (empty: all)
    extensions: list[str] = field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"])
    high_bit_depth: str = choices("refuse", "scale", default="refuse")  # 16-bit images: refuse or scale to 8
    # how an image meets a network's input size (classifier, CAM, retrain, segmenter, predict): stretch = resized to
    # it; pad = scaled to fit inside, keeping its aspect ratio, centred on a flat fill of its mean (parts far from the
    # median aspect ratio keep their defects' shapes; the padding is no training target)
    fit: str = choices("stretch", "pad", default="stretch")
    encoding: str = "utf-8"  # kind csv: the CSV's text encoding (e.g. latin-1, cp1252 for files saved by Excel)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class SplitConfig:
    """Deterministic grouped, stratified splits."""

    mode: str = choices("ratios", "kfold", "official", default="ratios")
    train: float = num(0.6, ge=0, le=1, fix=FRACTION)
    val: float = num(0.2, ge=0, le=1, fix=FRACTION)
    test: float = num(0.2, ge=0, le=1, fix=FRACTION)
    # kfold: number of folds; test = fold `fold`, val carved from the rest by `val` ratio
    folds: int = num(3, ge=2, fix="at least 2")
    fold: int = num(0, ge=0, fix="a fold index >= 0 (below folds)")
    seed: int = num(0, fix="any whole number")


@dataclass
class PrepareConfig:
    """`prepare`: index the dataset, validate every file, split."""

    split: SplitConfig = field(default_factory=SplitConfig)
    # threads used to validate images; 0 = number of CPU cores
    workers: int = num(0, ge=0, fix="0 (every core) or a thread count")
    # images above this many megapixels are refused (every stage holds whole images; the CRF alone would take
    # minutes per image): crop or tile them into parts first, or raise this
    max_megapixels: float = num(20.0, gt=0, fix="a size in megapixels > 0, e.g. 20")
