"""`wsss init`: look at a dataset once and write a recipe for it that `wsss run --config` accepts as is.

It scans and validates the data exactly as `prepare` will (every image decoded, every mask read), prints what it
found (images per class, OK against defective, sizes, channels, masks, warnings) and writes a commented YAML recipe:
the dataset section, the split, and the training settings measured on a 2-core CPU, with every size-dependent
setting left at ``auto`` and the value it resolves to for this data written beside it (:mod:`wsss.auto`). A dataset
with problems gets all of them listed, a non-zero exit, and no recipe.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wsss.atomic import atomic_write_text
from wsss.auto import resolve_auto, resolved_lines
from wsss.config.tree import Config, apply_override, load_config
from wsss.data.base import create_adapter
from wsss.data.splits import assign_splits
from wsss.data.stats import SizeStats
from wsss.data.validate import validate_samples, warning_lines
from wsss.errors import ConfigError
from wsss.estimate import Counts, lines, stage_seconds, unit_seconds

# What a recipe starts from: the settings measured on KSDD on a 2-core CPU (configs/ksdd.yaml, README results): the
# pretrained Lite0 cut after stride 16 with its stem to stride 8 frozen, few epochs, single-scale CAMs, KSDD's
# pseudo-labelling settings and its per-image Dice. Sizes stay auto.
TRAINING = """\
classifier:
  # ImageNet EfficientNet-Lite0, cut after stride 16 (CAMs on small defects), stem to stride 8 frozen (speed)
  backbone: {{stages: 4, freeze: 3}}
  input_size: auto  # -> {classifier.input_size}
  epochs: 6
  batch_size: 8
  warmup_epochs: 1
  patience: 3
  gcm: {{enabled: false}}
  # three classifiers of different seeds, the one whose CAMs move least when the defective training images are
  # flipped kept (labels only): a classifier can call every image right with its CAM beside the defects. Validation
  # pseudo-masks, one classifier -> the pick of 3 (every 3 of 4-10 seeds): KSDD 32.81% -> 37.55% (3-fold mean), MTD
  # 10.13% -> 11.78%, the demo 75.80% -> 78.26%; 3x the classifier's time (docs/benchmarks.md, the classifier's seed)
  ensemble: 3
  ensemble_pick: flip-consistent
cam:
  scales: [1.0]
  tile_size: auto  # -> {cam.tile_size}
  lift: true  # a weak CAM of an image called defective reaches the level of a strong one
  # the image labels, not the classifier's score, decide which training and validation images keep a CAM (test images:
  # the score). Validation segmenter mIoU_def, score -> labels: generated strips 24.04% -> 33.86%, squares 17.34% ->
  # 24.38%, faint stains 13.03% -> 36.42% (their classifiers call 14-36 of 36 OK parts defective); KSDD 41.95% ->
  # 44.17% (3 folds, 0-2 images change), MTD 9.65% -> 8.90% (81 change), the demo 80.79% -> 81.16% (docs/benchmarks.md)
  gate: labels
pseudo:
  # chosen on KSDD's validation split (configs/ksdd.yaml, docs/lab-notes/benchmarks-log.md), confirmed on the demo's: a lower
  # background prior, the CAM's core kept where the CRF empties an image called defective, a stronger appearance kernel
  bg_prior: 0.3
  fallback: 0.3
  crf: {{bilateral_sxy: auto, bilateral_compat: 40}}  # -> bilateral_sxy {pseudo.crf.bilateral_sxy}
retrain:
  backbone: {{freeze: 3}}
  input_size: auto  # -> {retrain.input_size}
  epochs: 8
  batch_size: 8
segmenter:
  backbone: {{freeze: 3}}
  # the part segmented at twice the side the pixel budget allows, trained on windows of that budget: thin defects
  # stay visible (KSDD 31.9% -> 44.6% segmenter mIoU_def at 896 x 384 from 448 x 192, the demo 256 from 128 px)
  zoom: 2
  input_size: auto  # -> {segmenter.input_size}
  crop: auto  # -> {segmenter.crop}
  epochs: 10
  # at least 250 steps: 72 training images make 9 an epoch at batch 8, and on generated strips, square textures and
  # faint stains validation mIoU_def went 19.67 / 12.57 / 2.39% -> 24.04 / 17.34 / 13.03% (test 14.67 / 13.37 /
  # 5.55% -> 20.78 / 11.01 / 12.13%); KSDD (270-280 steps), MTD and the demo train more already: nothing changes there
  min_steps: 250
  batch_size: 8
  patience: 4
  dice_over: image  # each defect weighs the same in the Dice: won on KSDD's three validation splits and the demo's
"""


@dataclass
class DatasetSummary:
    """What `wsss init` found: counts, sizes, channels, masks, and the warnings of validation."""

    kind: str
    root: Path
    n_images: int
    class_counts: dict[str, int]
    n_defective: int
    n_with_mask: int
    sizes: SizeStats
    channels: int
    warnings: list[str]
    split_counts: dict[str, int] = field(default_factory=dict)  # images per split: train, val, test

    def lines(self) -> list[str]:
        h0, w0 = self.sizes.min
        h1, w1 = self.sizes.max
        hm, wm = self.sizes.median
        out = [
            f"{self.root} (kind {self.kind}): {self.n_images} images, {self.n_images - self.n_defective} OK, "
            f"{self.n_defective} defective",
            "classes: " + ", ".join(f"{c} {n}" for c, n in sorted(self.class_counts.items())),
            f"sizes (HxW): median {hm}x{wm}, {h0}x{w0} .. {h1}x{w1}; channels: {self.channels}",
            f"ground-truth masks: {self.n_with_mask} (for evaluation only)",
        ]
        return out + warning_lines(self.warnings)


def _config(kind: str, root: Path) -> Config:
    if kind == "synthetic":
        raise ConfigError("--kind synthetic", "the demo set needs no recipe", "run `wsss demo`")
    sets = [f"dataset.kind={kind}", f"dataset.root={yaml_scalar(str(Path(root).resolve()))}"]  # quoted: any path
    if kind == "ksdd":  # 3-fold cross-validation, as the literature reports it
        sets += ["prepare.split.mode=kfold", "prepare.split.folds=3", "prepare.split.val=0.15"]
    return load_config(None, sets)


def scan(kind: str, root: Path) -> tuple[Config, DatasetSummary]:
    """Scan and validate ``root`` as `prepare` will; raises every problem at once (ManyErrors / DataError)."""

    cfg = _config(kind, root)
    if not Path(root).exists():
        raise ConfigError(root, "dataset root not found", "pass the dataset folder (kind csv: the CSV file)")
    adapter = create_adapter(cfg.dataset, Path(cfg.dataset.root))
    samples = adapter.scan()
    if samples and all(s.split in ("train", "val", "test") for s in samples) and kind == "csv":
        cfg.prepare.split.mode = "official"  # the CSV's split column is the team's own split
    report = validate_samples(samples, adapter, max_megapixels=cfg.prepare.max_megapixels)
    split = assign_splits(samples, cfg.prepare.split, kind=kind)
    summary = DatasetSummary(
        kind=kind,
        root=Path(cfg.dataset.root),
        n_images=report.n_images,
        class_counts=report.class_counts,
        n_defective=report.n_defective,
        n_with_mask=report.n_with_mask,
        sizes=SizeStats.of_train((split[s.id].split, report.sizes[s.id]) for s in samples),
        channels=report.channels,
        warnings=report.warnings,
        split_counts=dict(Counter(split[s.id].split for s in samples)),
    )
    return cfg, summary


def yaml_scalar(value: str) -> str:
    """``value`` as one double-quoted YAML scalar: any path or name (``#``, ``: ``, quotes, line breaks) reads back
    as itself."""
    return yaml.safe_dump(str(value), default_style='"', width=float("inf"), allow_unicode=True).rstrip("\n")


def comment(text: str) -> str:
    """One comment line: characters YAML reads as a line break (or that do not print) are escaped, so a name in a
    comment cannot start a line of settings."""
    return "# " + "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def with_training(cfg: Config) -> Config:
    """``cfg`` with the :data:`TRAINING` settings applied, so that what ``auto`` resolves to is computed for the
    recipe as written (the segmenter's zoom and windows), not for the defaults."""
    data = yaml.safe_load(TRAINING.replace("{{", "{").replace("}}", "}"))  # the placeholders are in comments only
    out = copy.deepcopy(cfg)

    def apply(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                apply(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            apply_override(out, f"{prefix}={json.dumps(node)}")  # JSON is YAML: lists, numbers, "auto"

    apply("", data)
    return out


def recipe_text(cfg: Config, summary: DatasetSummary, out: Path) -> str:
    """The commented recipe for ``summary``'s dataset, to be saved as ``out`` (its stem names the run)."""
    lines = resolved_lines(with_training(cfg), summary.sizes)  # as the recipe will resolve: its zoom, its crops
    resolved = {key: value for key, value, _ in lines}
    why = {key: reason for key, _, reason in lines}
    split = cfg.prepare.split
    if split.mode == "kfold":
        split_line = (
            f"{{mode: kfold, folds: {split.folds}, fold: 0, val: {split.val:g}, seed: 0}}  # change fold for the others"
        )
    elif split.mode == "official":
        split_line = f"{{mode: official, val: {split.val:g}, seed: 0}}  # the dataset's own split (val: if it has none)"
    else:
        split_line = (
            f"{{mode: {split.mode}, train: {split.train:g}, val: {split.val:g}, test: {split.test:g}, seed: 0}}"
        )
    head = [
        comment(f"wsss recipe for {summary.root}, written by `wsss init` on {datetime.date.today().isoformat()}."),
        *(comment(line) for line in summary.lines()),
        "# `auto` settings are resolved from the training images at prepare; `wsss show-config` shows them:",
        *(f"#   {key}: {resolved[key]} ({why[key]})" for key in resolved),
        comment(f"Run it with: wsss run --config {out}"),
        "run:",
        f"  name: {yaml_scalar(Path(out).stem)}",
        "  pipeline: full",
        "dataset:",
        f"  kind: {summary.kind}",
        f"  root: {yaml_scalar(str(summary.root))}",
        "prepare:",
        f"  split: {split_line}",
    ]
    body = TRAINING
    for key, value in resolved.items():
        body = body.replace("{" + key + "}", str(value))
    return "\n".join(head) + "\n" + body.replace("{{", "{").replace("}}", "}")


def write_recipe(
    kind: str, root: Path, out: Path, force: bool = False, estimate: bool = False
) -> tuple[Path, DatasetSummary, list[str]]:
    """Scan ``root`` and write its recipe to ``out`` (atomically; an existing file only with ``force``); with
    ``estimate``, also the lines of its expected wall time on this machine (:mod:`wsss.estimate`)."""
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(out, "recipe file exists", "pass --force to replace it, or another --out")
    cfg, summary = scan(kind, root)
    atomic_write_text(out, recipe_text(cfg, summary, out))
    return out, summary, (expected_time(out, summary) if estimate else [])


def expected_time(recipe: Path, summary: DatasetSummary) -> list[str]:
    """The recipe's expected wall time per stage on this machine, from its timed units and the data's counts."""

    cfg = resolve_auto(load_config(recipe), summary.sizes)
    n = summary.split_counts
    counts = Counts(n.get("train", 0), n.get("val", 0), n.get("test", 0), summary.n_defective / summary.n_images)
    classes = max(1, len([c for c in summary.class_counts if c not in cfg.dataset.ok_names]))
    median = tuple(summary.sizes.median)
    units = unit_seconds(cfg, summary.channels, median, classes)
    return lines(stage_seconds(cfg, counts, units, median))
