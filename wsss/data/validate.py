"""Validate a scanned dataset once, where it enters: every image decoded, every mask read, all problems at once.

Errors (raised together as one :class:`~wsss.errors.ManyErrors`, each naming the file and the fix): no images,
duplicate ids, unreadable / empty / truncated / unsupported images, images over ``prepare.max_megapixels``,
unreadable masks or masks of another size than their image, and a dataset with a single class. Warnings (kept in the
report): a defective image whose mask is empty at the threshold, a defect-free image whose mask is not, no
defect-free images at all, a class with fewer than :data:`FEW_IMAGES` images (it cannot reach every split; often a
mistyped label), and what is handled automatically but changes the images: image sizes whose aspect
ratios lie more than 25% apart (every image is resized to the input size, so aspect ratios far from the median are
distorted), grayscale mixed with colour (grayscale repeated to 3 channels), and images with a side under 32 px
(upscaled to the input size, which is at least 32 px a side: the deepest stride of the backbones).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss.data.base import DatasetAdapter, Sample
from wsss.data.images import ImageInfo, probe_image, read_mask
from wsss.errors import DataError, WsssError, raise_all
from wsss.parallel import pool_size
from wsss.progress import progress

OK = "ok"  # how defect-free images are counted in the report


@dataclass
class ValidationReport:
    """What the prepare stage reports about a dataset that passed validation."""

    kind: str
    n_images: int
    class_counts: dict[str, int]  # images per class; defect-free images count as "ok"
    n_defective: int
    n_with_mask: int
    size_min: tuple[int, int]  # (W, H), each the minimum over images
    size_max: tuple[int, int]
    channels: int  # 1 when every image is grayscale, else 3
    mask_threshold: int
    conversions: list[tuple[str, str]] = field(default_factory=list)  # (file, what was converted)
    warnings: list[str] = field(default_factory=list)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (H, W); not in report.json

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_images": self.n_images,
            "class_counts": dict(self.class_counts),
            "n_defective": self.n_defective,
            "n_ok": self.n_images - self.n_defective,
            "n_with_mask": self.n_with_mask,
            "size_min": list(self.size_min),
            "size_max": list(self.size_max),
            "channels": self.channels,
            "mask_threshold": self.mask_threshold,
            "conversions": [{"file": f, "what": w} for f, w in self.conversions],
            "warnings": list(self.warnings),
        }

    def to_markdown(self, max_listed: int = 20) -> str:
        (w0, h0), (w1, h1) = self.size_min, self.size_max
        lines = [
            f"# Dataset validation ({self.kind})",
            "",
            f"- images: {self.n_images} ({self.n_defective} defective, {self.n_images - self.n_defective} ok)",
            f"- with ground-truth mask: {self.n_with_mask} (pixel is defect iff value >= {self.mask_threshold})",
            f"- size (W x H): {w0}x{h0} .. {w1}x{h1}; channels: {self.channels}",
            "",
            "| class | images |",
            "|---|---|",
            *(f"| {c} | {n} |" for c, n in sorted(self.class_counts.items())),
        ]
        for title, items in (
            ("Conversions", [f"{f}: {w}" for f, w in self.conversions]),
            ("Warnings", self.warnings),
        ):
            if items:
                lines += ["", f"## {title} ({len(items)})", "", *(f"- {x}" for x in items[:max_listed])]
                if len(items) > max_listed:
                    lines.append(f"- ... and {len(items) - max_listed} more (see report.json)")
        return "\n".join(lines)


@dataclass
class _Checked:
    info: ImageInfo | None = None
    mask_defects: bool | None = None  # whether the mask has any defect pixel; None without a (readable) mask
    errors: list[WsssError] = field(default_factory=list)


def _check(sample: Sample, high_bit_depth: str, threshold: int, max_megapixels: float) -> _Checked:
    out = _Checked()
    try:
        out.info = probe_image(sample.path, high_bit_depth)
    except WsssError as e:
        out.errors.append(e)
    if out.info and out.info.width * out.info.height > max_megapixels * 1e6:
        mp = out.info.width * out.info.height / 1e6
        out.errors.append(
            DataError(
                sample.path,
                f"{out.info.width}x{out.info.height} is {mp:.1f} megapixels, over prepare.max_megapixels "
                f"({max_megapixels:g}): every stage holds whole images and the CRF alone would take minutes on it",
                "crop or tile such images into parts (each part with its own label) first, or raise "
                "prepare.max_megapixels",
            )
        )
    if sample.mask is not None:
        size = (out.info.width, out.info.height) if out.info else None
        try:
            out.mask_defects = bool(read_mask(sample.mask, threshold, size, image=sample.path).any())
        except WsssError as e:
            out.errors.append(e)
    return out


def _duplicates(samples: list[Sample]) -> list[WsssError]:
    first: dict[str, Sample] = {}
    errors: list[WsssError] = []
    for s in samples:
        if s.id in first:
            errors.append(
                DataError(
                    s.path,
                    f"duplicate id {s.id!r}: {first[s.id].path} has the same id",
                    "give the files distinct names or folders, or list each file once",
                )
            )
        else:
            first[s.id] = s
    return errors


def _label_name(labels: tuple[str, ...]) -> str:
    return ";".join(labels) or OK


def _links_out(samples: list[Sample], root: Path) -> list[str]:
    """A warning naming the files read through symbolic links to places outside the dataset root (none: [])."""
    base = Path(os.path.realpath(root if Path(root).is_dir() else Path(root).parent))
    out = [
        (p, Path(os.path.realpath(p)))
        for s in samples
        for p in (s.path, s.mask)
        if p is not None and not Path(os.path.realpath(p)).is_relative_to(base)
    ]
    if not out:
        return []
    return [
        f"{len(out)} file(s) are symbolic links to files outside the dataset root {base} (e.g. {out[0][0]} -> "
        f"{out[0][1]}): they are read through the links, and a run depends on where they point"
    ]


def validate_samples(
    samples: list[Sample], adapter: DatasetAdapter, workers: int = 0, max_megapixels: float = 20.0
) -> ValidationReport:
    """Check every image and mask of ``samples``; raise all problems together, else describe the dataset.

    Args:
        workers: threads decoding images; 0 = one per CPU core.
        max_megapixels: larger images are errors.
    """
    if not samples:
        raise DataError(
            adapter.root,
            f"no images found (dataset kind {adapter.kind!r})",
            f"check dataset.root and dataset.kind; image extensions read: {', '.join(adapter.extensions)}",
        )
    errors = _duplicates(samples)
    threshold, hbd = adapter.threshold(), adapter.cfg.high_bit_depth
    with ThreadPoolExecutor(max_workers=pool_size(workers)) as ex:
        jobs = ex.map(lambda s: _check(s, hbd, threshold, max_megapixels), samples)
        checked = list(progress(jobs, desc="validate images", total=len(samples)))
    for c in checked:
        errors += c.errors
    label_sets = {s.labels for s in samples}
    if len(label_sets) < 2:
        only = _label_name(next(iter(label_sets)))
        errors.append(
            DataError(
                adapter.root,
                f"all {len(samples)} images have the same label ({only}): the dataset needs at least two classes "
                "(defect-free and defective, or several defect types)",
                "add the missing images, or check the labels (dataset.ok_names, folder names, the label column)",
            )
        )
    raise_all(errors, f"dataset {adapter.root} failed validation")

    warnings = []
    for s, c in zip(samples, checked):
        if c.mask_defects is False and s.labels:
            warnings.append(
                f"{s.mask}: image labelled defective ({_label_name(s.labels)}) but mask empty at >= {threshold}"
            )
        elif c.mask_defects and not s.labels:
            warnings.append(f"{s.mask}: image labelled defect-free but its mask has pixels >= {threshold}")
    if all(s.labels for s in samples):
        warnings.append("no defect-free images: the classifier only learns to tell defect types apart")
    infos = [c.info for c in checked if c.info is not None]
    warnings += _handled(infos)
    warnings += _links_out(samples, adapter.root)
    counts = Counter(label for s in samples for label in (s.labels or (OK,)))
    for name, n in sorted(counts.items()):
        if n < FEW_IMAGES:
            first = next(s.path for s in samples if name in (s.labels or (OK,)))
            hint = f" ({adapter.label_hint})" if adapter.label_hint else ""
            warnings.append(
                f"class {name!r} has only {n} image(s), e.g. {first}: too few to reach the training, validation and "
                f"test splits; check its label{hint}"
            )
    return ValidationReport(
        kind=adapter.kind,
        n_images=len(samples),
        class_counts=dict(sorted(counts.items())),
        n_defective=sum(bool(s.labels) for s in samples),
        n_with_mask=sum(s.mask is not None for s in samples),
        size_min=(min(i.width for i in infos), min(i.height for i in infos)),
        size_max=(max(i.width for i in infos), max(i.height for i in infos)),
        channels=1 if all(i.channels == 1 for i in infos) else 3,
        mask_threshold=threshold,
        conversions=[(str(s.path), c.info.converted) for s, c in zip(samples, checked) if c.info and c.info.converted],
        warnings=warnings,
        sizes={s.id: (c.info.height, c.info.width) for s, c in zip(samples, checked) if c.info is not None},
    )


MAX_WARNINGS = 10  # warnings printed (prepare, wsss init); prepare's report lists every one


def warning_lines(warnings: list[str]) -> list[str]:
    """The first :data:`MAX_WARNINGS` warnings as lines to print, and how many more the report lists."""
    shown = [f"warning: {w}" for w in warnings[:MAX_WARNINGS]]
    if len(warnings) > MAX_WARNINGS:
        shown.append(f"warning: ... and {len(warnings) - MAX_WARNINGS} more (prepare's report.md lists all)")
    return shown


FEW_IMAGES = 3  # a class with fewer images cannot be in all three splits
SMALL = 32  # px: the deepest stride of the backbones; auto input sizes are at least this a side
ASPECT_SPREAD = 1.25  # aspect ratios (H/W) further apart than this are worth a warning (KSDD's 2.47..2.57 are not)


def _handled(infos: list[ImageInfo]) -> list[str]:
    """Warnings for what prepare and training handle by themselves, but which the user should know."""
    out = []
    shapes = Counter((i.height, i.width) for i in infos)
    ratios = sorted(h / w for h, w in shapes)
    if ratios[-1] > ASPECT_SPREAD * ratios[0]:
        out.append(
            f"{len(shapes)} different image sizes (aspect H/W {ratios[0]:.2f}..{ratios[-1]:.2f}): every image is "
            "resized to the input size, so parts far from the median aspect ratio are stretched (dataset.fit: pad keeps "
            "their shapes)"
        )
    gray = sum(i.channels == 1 for i in infos)
    if 0 < gray < len(infos):
        out.append(
            f"{gray} grayscale and {len(infos) - gray} colour images: grayscale images are repeated to 3 channels"
        )
    small = sum(min(i.height, i.width) < SMALL for i in infos)
    if small:
        out.append(f"{small} image(s) with a side under {SMALL} px: they are upscaled to the input size")
    return out
