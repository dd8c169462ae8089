"""`wsss predict`: segment new images (files or folders, any number) with a trained segmenter or ONNX export.

Writes into ``--out``: ``masks/<name>.png`` (0 background, k class k, gated by the sample decision),
``probs/<name>.png`` (the ungated per-pixel defect probability as a 16-bit PNG, value ``round(p * 65535)``; not with
``--no-probs``), ``overlays/<name>.png`` (the mask drawn over the image), ``predictions.csv`` (one row per image:
name, path, decision, score, per-class scores, defect fraction) and ``labelmap.txt`` (mask value -> class).
``<name>`` is the file's path relative to the folder it was found in (sub-folders kept), without its suffix. Folders
are searched without ``--out``'s own ``masks/``, ``probs/`` and ``overlays/``, so predicting into a folder inside an
input folder never segments an earlier run's output.

Before anything is written every image is screened from its header (:func:`screen_images`): a file that is not a
readable image, is larger than ``max_megapixels`` (as ``prepare.max_megapixels``) or whose name is not UTF-8 is
listed, all at once, and nothing is written. Images whose channels differ from the model's (colour parts for a gray
model, or the reverse) are converted and counted in one warning at the end. Images stream through in batches: memory
stays flat however many there are. An image whose header read but whose pixels do not (a truncated file) is skipped
and listed at the end (non-zero exit); every other image is still segmented. ``predictions.csv`` is
written to a temporary file and renamed when the run ends, so it never describes a half-finished run.

Under torchrun each rank segments every world-th image (on its own GPU) and writes its rows to
``predictions.<rank>.part``; once all have finished, rank 0 merges them in input order into ``predictions.csv`` and
reports every rank's unreadable images.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wsss import distributed as dist
from wsss.artifacts.masks import write_mask
from wsss.atomic import atomic_path, atomic_write_text
from wsss.data.images import HIGH_BIT_DEPTH, image_size, read_image
from wsss.errors import ConfigError, DataError, ManyErrors, WsssError
from wsss.export.overlay import overlay, write_rgb_png
from wsss.inference import Predictor, write_prob_png
from wsss.mask_format import write_labelmap

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PREDICTIONS_FILE = "predictions.csv"
SCALE_FIX = "pass --high-bit-depth scale"  # how a refused 16-bit image tells the user to allow it


@dataclass
class PredictSummary:
    images: int = 0
    defective: int = 0
    failed: list[WsssError] = field(default_factory=list)
    other_channels: list[Path] = field(default_factory=list)  # gray images for a colour model, or the reverse


def output_folders(out: Path) -> tuple[Path, Path, Path]:
    """The folders :func:`predict_images` writes images into: ``out/masks``, ``out/overlays`` and ``out/probs``."""
    return Path(out) / "masks", Path(out) / "overlays", Path(out) / "probs"


def find_images(inputs: Sequence[Path], skip: Sequence[Path] = ()) -> list[tuple[Path, str]]:
    """``(path, name)`` of every image given: files as they are, folders searched recursively (sorted) without what
    lies in the folders of ``skip``.

    A missing input, a folder without images or two images that would write the same output name is a ConfigError.
    """
    skipped = [Path(d).resolve() for d in skip]
    found: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_file():
            found.append((item, item.stem))
        elif item.is_dir():
            root = item.resolve()
            files = sorted(
                p
                for p in item.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any((root / p.relative_to(item)).is_relative_to(d) for d in skipped)
            )
            if not files:
                raise ConfigError(item, "no images in this folder", f"image suffixes: {', '.join(IMAGE_SUFFIXES)}")
            found += [(p, p.relative_to(item).with_suffix("").as_posix()) for p in files]
        else:
            raise ConfigError(item, "no such file or folder", "pass image files or folders of images")
    seen: dict[str, Path] = {}
    for path, name in found:
        if name in seen:
            raise ConfigError(
                path,
                f"its output name {name!r} is also that of {seen[name]}",
                "predict them into separate --out folders",
            )
        seen[name] = path
    return found


def screen_images(found: Sequence[tuple[Path, str]], max_megapixels: float) -> None:
    """Check every image's name and header before anything is written (see the module docstring): a ManyErrors
    listing each unusable file."""

    errors: list[WsssError] = []
    for path, _ in found:
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            errors.append(DataError(path, "its name is not valid UTF-8", "rename the file (UTF-8 names only)"))
            continue
        try:
            h, w = image_size(path)
        except DataError as e:
            errors.append(DataError(path, f"not a readable image ({e.what})", "replace the file or remove it"))
            continue
        if h * w > max_megapixels * 1e6:
            errors.append(
                DataError(
                    path,
                    f"{w}x{h} is {h * w / 1e6:.1f} megapixels, over --max-megapixels {max_megapixels:g}",
                    "crop or tile it into parts, or raise --max-megapixels",
                )
            )
    if errors:
        raise ManyErrors(errors, f"{len(errors)} image(s) cannot be segmented; nothing was written")


def channel_warning(paths: Sequence[Path], in_chans: int) -> str:
    """The warning for images whose channels are not the model's (gray for a colour model, or the reverse)."""
    kind, model = ("colour", "gray (1 channel)") if in_chans == 1 else ("gray", f"colour ({in_chans} channels)")
    fix = (
        "they were converted to gray; a model trained on colour images uses their colour"
        if in_chans == 1
        else "their gray was repeated into every channel; a model trained on gray images fits them"
    )
    return f"warning: {len(paths)} {kind} image(s) (e.g. {paths[0]}) went to a {model} model: {fix}"


def prepare_out(out: Path) -> None:
    """Create ``out`` (and its masks/, overlays/ and probs/); a file in its place is a ConfigError."""
    out = Path(out)
    for d in (out, *output_folders(out)):
        if d.exists() and not d.is_dir():
            raise ConfigError(d, "exists and is not a folder", "choose another --out folder or remove the file")
    for d in output_folders(out):
        d.mkdir(parents=True, exist_ok=True)


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_images(
    predictor: Predictor,
    inputs: Sequence[Path],
    out: Path,
    batch: int = 8,
    overlays: bool = True,
    progress_fn: Callable = lambda it, **_: it,
    high_bit_depth: str = "refuse",
    probs: bool = True,
    max_megapixels: float = 20.0,
    warn: Callable[[str], None] = print,
) -> PredictSummary:
    """Segment every image of ``inputs`` into ``out``; returns counts and the errors of unreadable images.

    ``high_bit_depth``: ``refuse`` (16-bit images are unreadable) or ``scale`` (0..65535 mapped to 0..255), as
    ``dataset.high_bit_depth`` for a dataset; ``--high-bit-depth`` on the command line. ``probs``: also write the
    defect-probability maps (``probs/``). ``max_megapixels``: larger images are refused (:func:`screen_images`);
    ``warn`` prints the warning about images whose channels are not the model's.
    """

    if batch < 1:
        raise ConfigError("--batch", f"invalid batch size {batch}", "use 1 or more")
    if high_bit_depth not in HIGH_BIT_DEPTH:
        raise ConfigError("--high-bit-depth", f"invalid value {high_bit_depth!r}", f"use one of {HIGH_BIT_DEPTH}")
    found = find_images(inputs, skip=output_folders(out))
    rank, world = dist.rank(), dist.world_size()
    screen_images(found, max_megapixels)
    classes = predictor.classes
    if rank == 0:
        prepare_out(out)
        write_labelmap(out / "masks", classes)
    dist.barrier()
    summary = PredictSummary()
    columns = ["name", "path", "decision", "score", *(f"score_{c}" for c in classes), "defect_fraction"]
    part = out / (PREDICTIONS_FILE if world == 1 else f"predictions.{rank}.part")
    images = found[rank::world]
    with atomic_path(part) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if world == 1:
            writer.writeheader()
        chunks = progress_fn(_batches(images, batch), desc="predict", total=-(-len(images) // batch), unit="batch")
        for chunk in chunks:
            ok, arrays = [], []
            for path, name in chunk:
                try:
                    arrays.append(read_image(path, high_bit_depth, scale_fix=SCALE_FIX))
                    ok.append((path, name))
                except DataError as e:
                    summary.failed.append(e)
            for (path, name), image, pred in zip(ok, arrays, predictor(arrays), strict=True):
                if (image.ndim == 2) != (predictor.in_chans == 1):
                    summary.other_channels.append(path)
                (out / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
                write_mask(out / "masks" / f"{name}.png", pred.labels)
                if probs:
                    (out / "probs" / name).parent.mkdir(parents=True, exist_ok=True)
                    write_prob_png(out / "probs" / f"{name}.png", pred.defect_probability())
                if overlays:
                    (out / "overlays" / name).parent.mkdir(parents=True, exist_ok=True)
                    write_rgb_png(out / "overlays" / f"{name}.png", overlay(image, pred.labels))
                called = [c for c, p in zip(classes, pred.cls_probs, strict=True) if p >= predictor.threshold]
                row = {"name": name, "path": str(path), "decision": ";".join(called) or "ok"}
                row["score"] = f"{float(pred.cls_probs.max()):.6g}"
                row |= {f"score_{c}": f"{float(p):.6g}" for c, p in zip(classes, pred.cls_probs, strict=True)}
                row["defect_fraction"] = f"{float((pred.labels > 0).mean()):.6g}"
                writer.writerow(row)
                summary.images += 1
                summary.defective += bool(called)
    if summary.other_channels:
        warn(channel_warning(summary.other_channels, predictor.in_chans))
    if world > 1:
        summary = _merge_ranks(out, columns, summary, [name for _, name in found])
    if rank == 0:
        atomic_write_text(out / "labelmap.txt", "".join(f"{k} {c}\n" for k, c in enumerate(["background", *classes])))
    return summary


def _merge_ranks(out: Path, columns: list[str], mine: PredictSummary, order: list[str]) -> PredictSummary:
    """Rank 0: every rank's rows in input order into predictions.csv; every rank: the summary of all ranks."""

    totals = dist.all_gather_object((mine.images, mine.defective, mine.failed))
    summary = PredictSummary(sum(t[0] for t in totals), sum(t[1] for t in totals), [e for t in totals for e in t[2]])
    if dist.rank() == 0:
        rows: dict[str, dict] = {}
        for part in sorted(out.glob("predictions.*.part")):
            with open(part, newline="", encoding="utf-8") as f:
                rows |= {r["name"]: r for r in csv.DictReader(f, fieldnames=columns)}
        with atomic_path(out / PREDICTIONS_FILE) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows[n] for n in order if n in rows)
        for part in out.glob("predictions.*.part"):
            part.unlink()
    dist.barrier()
    return summary


def raise_failures(summary: PredictSummary) -> None:
    """After a run: the unreadable images, all of them, as one error (exit code 1)."""
    if summary.failed:
        raise ManyErrors(summary.failed, f"{len(summary.failed)} image(s) could not be read and were skipped")
