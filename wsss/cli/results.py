"""Commands on a run's results: `evaluate`, `predict`, `export`, `import-review`, `tune`, `review-round`."""

from __future__ import annotations

from pathlib import Path

import click

from wsss.cli.group import (
    cli,
    config_option,
    mask_format_option,
    run_dir_option,
    set_option,
)
from wsss.config import EvaluateConfig, ExportConfig, load_config
from wsss.errors import ConfigError
from wsss.evaluation.report import REPORT_FILES
from wsss.hashing import MANIFEST
from wsss.progress import progress
from wsss.stages.evaluate import evaluate_index, report_dir


@cli.command()
@click.option(
    "--index",
    "index",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="index.csv written by the prepare stage",
)
@click.option("--masks", type=click.Path(path_type=Path), required=True, help="folder of <id>.png masks")
@click.option(
    "--scores",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV with id,score columns (sample scores for gating and image AP)",
)
@click.option(
    "--probs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder of <id>.png defect-probability maps (16- or 8-bit gray; or .npy/.npz floats in [0, 1]) for pixel "
    "AP and pixel AUROC, e.g. runs/<name>/train-segmenter/probs",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="report folder, never inside a stage folder (default: runs/<name>/evaluate-<stage>/ for "
    "runs/<name>/<stage>/masks, evaluate-<folder>/ beside any other masks folder)",
)
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="sample score threshold")
@click.option(
    "--ignore-as",
    type=click.Choice(["background", "defect"]),
    default="background",
    show_default=True,
    help="how ignore (255) pixels count",
)
@mask_format_option("labels (0 bg, k class k, 255 ignore)")
def evaluate(
    index: Path,
    masks: Path,
    scores: Path | None,
    probs: Path | None,
    out: Path | None,
    split: str,
    threshold: float,
    ignore_as: str,
    mask_format: str,
) -> None:
    """Evaluate a folder of predicted masks against the ground truth; writes report.json, report.md and
    per_image.csv into --out.

    Every mask (and --probs map) is checked first (present, readable, one 8-bit channel, the size of its ground truth
    or image): all problems are listed at once and nothing is written. A stage's folder is never written to: by default the report
    of runs/<name>/<stage>/masks goes to runs/<name>/evaluate-<stage>/."""

    cfg = EvaluateConfig(split=split, score_threshold=threshold, ignore_as=ignore_as, mask_format=mask_format)
    out = report_dir(masks, out)
    report = evaluate_index(index, masks, scores, cfg, out, probs)
    if report.mask_note:
        click.echo(f"note: {report.mask_note}", err=True)
    click.echo(report.to_markdown())
    click.echo(f"wrote {', '.join(REPORT_FILES)} into {out}")


def _size(value: str) -> tuple[int, int] | None | str:
    """``--size``: ``model`` (the training size), ``native`` (each image's own size) or ``HxW``."""
    if value in ("model", "native"):
        return None if value == "native" else "model"
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise ConfigError("--size", f"invalid size {value!r}", "use model, native or HxW, e.g. 320x128") from None
    if min(h, w) < 1:
        raise ConfigError("--size", f"invalid size {value!r}", "both sides must be positive")
    return (h, w)


@cli.command()
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    required=True,
    help="a run folder, its train-segmenter folder, a segmenter.safetensors or an exported .onnx file",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="images per forward pass")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--size", default="model", show_default=True, help="network input: model (training size), native, HxW")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="image-level gate (default: the model's)")
@click.option(
    "--guided-radius",
    type=click.FloatRange(min=0),
    default=None,
    help="guided upsampling radius in network-input pixels, 0 = off (default: the model's segmenter.guided.radius)",
)
@click.option(
    "--flips/--no-flips",
    default=None,
    help="also run each image flipped left-right and top-bottom, logits averaged: 3x the time (default: the "
    "model's segmenter.flips)",
)
@click.option("--no-overlays", is_flag=True, help="write no overlays/")
@click.option("--no-probs", is_flag=True, help="write no probs/ (16-bit defect-probability maps)")
@click.option(
    "--high-bit-depth",
    type=click.Choice(["refuse", "scale"]),
    default="refuse",
    show_default=True,
    help="16-bit images: refuse them, or scale 0..65535 to 0..255 (as dataset.high_bit_depth)",
)
@click.option(
    "--max-megapixels",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="larger images are refused before anything is written (as prepare.max_megapixels)",
)
def predict(
    model: Path,
    inputs: tuple[Path, ...],
    out: Path,
    batch: int,
    device: str,
    size: str,
    threshold: float | None,
    guided_radius: float | None,
    flips: bool | None,
    no_overlays: bool,
    no_probs: bool,
    high_bit_depth: str,
    max_megapixels: float,
) -> None:
    """Segment IMAGES (files or folders) with a trained segmenter: masks, defect-probability maps (probs/), overlays
    and predictions.csv in --out."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss import distributed as dist
    from wsss.inference import load_predictor
    from wsss.predict import predict_images, raise_failures

    dist.init_from_env()  # under torchrun the images are sharded across ranks
    predictor = load_predictor(
        model, str(dist.resolve_device(device, "--device")), _size(size), threshold, guided_radius, flips
    )
    summary = predict_images(
        predictor,
        inputs,
        out,
        batch,
        not no_overlays,
        progress,
        high_bit_depth,
        probs=not no_probs,
        max_megapixels=max_megapixels,
        warn=lambda line: click.echo(line, err=True),
    )
    main = dist.is_main()  # asked before leaving the group, after which every process is "rank 0"
    dist.shutdown()
    if main:
        click.echo(f"predict: {summary.images} image(s), {summary.defective} called defective -> {out}")
        raise_failures(summary)


@cli.group()
def export() -> None:
    """Export a trained model or a run's masks for other tools."""


@export.command("review")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="run folder")
@click.option("--masks", default=None, help="stage whose masks to review (default: the newest that ran)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="package folder")
@click.option(
    "--formats",
    default="png,coco,cvat,labelstudio",
    show_default=True,
    help="comma list of png, coco, cvat, labelstudio",
)
@click.option("--coco-mode", type=click.Choice(["rle", "polygon"]), default="rle", show_default=True)
@click.option(
    "--image-prefix", default="/data/local-files/?d=", show_default=True, help="Label Studio image URL prefix"
)
def export_review(run_dir: Path, masks: str | None, out: Path, formats: str, coco_mode: str, image_prefix: str) -> None:
    """Write a review package of a run's masks: overlays, index.html and the annotation tools' import files."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.export.review import build_review, run_source

    if out.exists() and not out.is_dir():
        raise ConfigError(out, "exists and is not a folder", "choose another --out folder")

    stage = next((d for d in (out.resolve(), *out.resolve().parents) if (d / MANIFEST).is_file()), None)
    if stage is not None:  # a stage's folder belongs to its manifest: a package there would overwrite its outputs
        raise ConfigError(
            f"--out {out}", f"inside the stage folder {stage}", "choose a folder outside the run's stage folders"
        )
    cfg = ExportConfig(formats=[f.strip() for f in formats.split(",") if f.strip()], coco_mode=coco_mode)
    cfg.image_prefix = image_prefix
    written = build_review(run_source(run_dir, masks), out, cfg, progress)
    click.echo(f"wrote {', '.join(str(p) for p in written.values())}")
    click.echo(f"open {out / 'index.html'} in a browser")


@cli.command("import-review")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["coco", "cvat", "labelstudio", "png", "decisions"]),
    required=True,
    help="file format; decisions: the review page's accept / reject file",
)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="run folder")
@mask_format_option("labels (0 bg, k class k, 255 uncertain)", "--format png: ")
def import_review_cmd(fmt: str, file: Path, run_dir: Path, mask_format: str) -> None:
    """Import corrected masks (FILE exported from the annotation tool) into RUN/reviewed for train-segmenter.

    Every mask is checked first (readable, an indexed image's id and size, the run's labels): all problems are
    listed at once and nothing is imported.

    --format decisions imports the review page's "Download decisions" file: accepted images' pseudo-masks become
    human masks, rejected images go to RUN/reviewed/rejected.txt (no mask loss in train-segmenter); masks corrected
    in a tool win. A file whose run's masks changed since the export is refused."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.export.review_import import import_decisions, import_review

    if fmt == "decisions":
        if mask_format != "auto":
            raise ConfigError(
                f"--mask-format {mask_format}", "a decisions file holds no masks", "leave --mask-format out"
            )
        result = import_decisions(file, run_dir)
        kept = f"; {len(result.kept)} kept their corrected mask" if result.kept else ""
        click.echo(
            f"imported {file}: {len(result.accepted)} accepted pseudo-mask(s) into {result.folder / 'masks'}, "
            f"{len(result.rejected)} rejected image(s) into {result.folder / 'rejected.txt'}{kept} "
            f"({result.total} mask(s), {result.rejected_total} rejected in all)"
        )
        folder = result.folder
    else:
        summary = import_review(fmt, file, run_dir, mask_format)
        click.echo(f"imported {len(summary.imported)} reviewed mask(s) into {summary.folder} ({summary.total} in all)")
        folder = summary.folder
    click.echo(f"train-segmenter uses them with: --set segmenter.reviewed={folder}")


@cli.command()
@config_option
@run_dir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the recipe with the adopted settings here (default: only print)",
)
@set_option
def tune(config: Path, run_dir: Path | None, out: Path | None, overrides: tuple[str, ...]) -> None:
    """Choose the pseudo-labelling settings on the run's reviewed masks (`wsss import-review`): each candidate's
    mIoU_def with a bootstrap interval; a setting changes only where the interval says it is better."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.tune import tune_run

    cfg = load_config(config, overrides)
    tune_run(config, run_dir or Path("runs") / cfg.run.name, out, overrides, click.echo)


@cli.command("review-round")
@config_option
@run_dir_option
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="fine-tuning epochs (more where they make fewer steps than segmenter.min_steps)",
)
@click.option(
    "--split", type=click.Choice(["test", "val"]), default="test", show_default=True, help="split to evaluate"
)
@click.option(
    "--tune",
    "with_tune",
    is_flag=True,
    help="the whole loop: `wsss tune` first (RUN/review-rounds/tuned.yaml), the stages its settings and the reviewed "
    "masks make stale re-run, then the round",
)
@set_option
def review_round_cmd(
    config: Path, run_dir: Path | None, epochs: int, split: str, with_tune: bool, overrides: tuple[str, ...]
) -> None:
    """Fine-tune the run's segmenter on its reviewed masks (`wsss import-review`) and print before / after.

    The segmenter before the round and the report are kept in RUN/review-rounds/round-<k>/."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.review_round import review_loop, review_round

    cfg = load_config(config, overrides)
    run_dir = run_dir or Path("runs") / cfg.run.name
    if with_tune:
        review_loop(config, run_dir, overrides, epochs, split, click.echo)
    else:
        review_round(config, run_dir, overrides, epochs, split, click.echo)


@export.command("onnx")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    required=True,
    help="a run folder, train-segmenter folder or .safetensors",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="the .onnx file to write")
@click.option("--opset", type=click.IntRange(min=7), default=18, show_default=True)
def export_onnx_cmd(model: Path, out: Path, opset: int) -> None:
    """Export the segmenter to ONNX (dynamic batch and size) and check it against PyTorch with onnxruntime."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.export.onnx import export_onnx

    report = export_onnx(model, out, opset=opset)
    shapes = ", ".join("x".join(map(str, s)) for s in report.checked_shapes)
    click.echo(f"wrote {out}; onnxruntime vs PyTorch on inputs {shapes}: max abs diff {report.max_abs_diff:.3g}")
