"""The `wsss` command line: run stages and pipelines, evaluate masks, predict, export, run the demo.

User errors (:class:`wsss.errors.WsssError`) print as ``Error: <file>: <what> (<how to fix>)`` and exit with the
error's code: 2 for usage/config errors, 1 for bad data or a stage that cannot run.
"""

from __future__ import annotations

from pathlib import Path

import click

from wsss import __version__
from wsss.config import Config, dump_yaml, load_config
from wsss.errors import ConfigError, WsssError
from wsss.stages import load_stages


class StageChoice(click.Choice):
    """``click.Choice`` over the registered stage names, read when the command line is parsed."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self) -> list[str]:  # type: ignore[override]
        return list(load_stages())

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


class WsssGroup(click.Group):
    """Turns WsssError into a one-line ``Error:`` message and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WsssError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


config_option = click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="YAML recipe, e.g. configs/ksdd.yaml",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="override a config value (repeatable), e.g. --set prepare.split.seed=1",
)
run_dir_option = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="run folder (default: runs/<run.name>)",
)


def mask_format_option(labels: str, prefix: str = ""):
    """``--mask-format``: what a folder's mask values mean (wsss/mask_format.py)."""
    return click.option(
        "--mask-format",
        type=click.Choice(["auto", "labels", "binary"]),
        default="auto",
        show_default=True,
        help=f"{prefix}what mask values mean: {labels}, binary (0 ok, 255 defect), auto = the folder's labelmap.txt, "
        "else decided from the values",
    )


force_option = click.option("--force", is_flag=True, help="re-run even if up to date")


def _run(cfg: Config, run_dir: Path | None):
    """The run folder's runner; under torchrun, this process joins the process group (rank 0 alone prints)."""
    from wsss import distributed as dist
    from wsss.runs import Run

    dist.init_from_env()
    return Run(run_dir or Path("runs") / cfg.run.name, cfg, echo=click.echo if dist.is_main() else lambda *_: None)


@click.group(cls=WsssGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsss")
def cli() -> None:
    """Weakly supervised surface-defect segmentation: image-level labels in, pixel masks out."""


@cli.command()
def stages() -> None:
    """List the registered stages and the pipeline definitions."""
    from wsss.pipelines import available, load_pipeline

    click.echo("Stages:")
    for s in load_stages().values():
        reads = s.reads or ", ".join(s.inputs(Config()))
        click.echo(f"  {s.name:<18} {s.help}" + (f"  [reads: {reads}]" if reads else ""))
    click.echo("Pipelines:")
    for name in available():
        p = load_pipeline(name)
        click.echo(f"  {name:<18} {' -> '.join(p.stages)}" + (f"  ({p.description})" if p.description else ""))


@cli.command("run-stage")
@click.argument("stage", type=StageChoice())
@config_option
@run_dir_option
@force_option
@set_option
def run_stage(stage: str, config: Path, run_dir: Path | None, force: bool, overrides: tuple[str, ...]) -> None:
    """Run one STAGE (its inputs must have finished)."""
    from wsss import distributed as dist

    cfg = load_config(config, overrides)
    _run(cfg, run_dir).run_stage(stage, force=force)
    dist.shutdown()  # under torchrun: every rank leaves the process group together (no abort at exit)


@cli.command("run")
@config_option
@click.option("--from", "start", type=StageChoice(), default=None, help="first stage to run")
@click.option("--to", "stop", type=StageChoice(), default=None, help="last stage to run")
@run_dir_option
@force_option
@set_option
def run_pipeline(
    config: Path, start: str | None, stop: str | None, run_dir: Path | None, force: bool, overrides: tuple[str, ...]
) -> None:
    """Run the config's pipeline in order, skipping up-to-date stages."""
    from wsss import distributed as dist
    from wsss.pipelines import load_pipeline, select

    cfg = load_config(config, overrides)
    _run(cfg, run_dir).run_pipeline(select(load_pipeline(cfg.run.pipeline), start, stop), force=force)
    dist.shutdown()


@cli.command()
@config_option
@run_dir_option
@set_option
def status(config: Path, run_dir: Path | None, overrides: tuple[str, ...]) -> None:
    """Show each pipeline stage's state in the run folder (done, stale, missing, blocked, running, interrupted,
    failed)."""
    from wsss.pipelines import load_pipeline
    from wsss.runs import INTERRUPTED
    from wsss.stages import get_stage

    cfg = load_config(config, overrides)
    run = _run(cfg, run_dir)
    click.echo(f"run folder: {run.dir}")
    notes = {
        "running": "(a wsss process is running it now)",
        INTERRUPTED: "(its process was killed or died; `wsss run` resumes it, or restarts it if its settings changed)",
        "failed": "(see its manifest.json for the error; `wsss run` retries it)",
    }
    for name in load_pipeline(cfg.run.pipeline).stages:
        state = run.status(get_stage(name))
        click.echo(f"  {name:<18} {state} {notes.get(state, '')}".rstrip())


@cli.command("show-config")
@click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML recipe (default: the built-in defaults)",
)
@run_dir_option
@set_option
def show_config(config: Path | None, run_dir: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults + file + overrides) as YAML.

    ``auto`` settings show the values the run's prepare stage resolved them to (the run folder of --run-dir, else
    runs/<run.name>), or stay ``auto`` until prepare has run."""
    from wsss.runs import Run

    cfg = load_config(config, overrides)
    click.echo(dump_yaml(Run(run_dir or Path("runs") / cfg.run.name, cfg).cfg.to_dict()), nl=False)


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
    from wsss.config import EvaluateConfig
    from wsss.evaluation.report import REPORT_FILES
    from wsss.stages.evaluate import evaluate_index, report_dir

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
@click.option("--no-overlays", is_flag=True, help="write no overlays/")
@click.option("--no-probs", is_flag=True, help="write no probs/ (16-bit defect-probability maps)")
@click.option(
    "--high-bit-depth",
    type=click.Choice(["refuse", "scale"]),
    default="refuse",
    show_default=True,
    help="16-bit images: refuse them, or scale 0..65535 to 0..255 (as dataset.high_bit_depth)",
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
    no_overlays: bool,
    no_probs: bool,
    high_bit_depth: str,
) -> None:
    """Segment IMAGES (files or folders) with a trained segmenter: masks, defect-probability maps (probs/), overlays
    and predictions.csv in --out."""
    from wsss import distributed as dist
    from wsss.inference import load_predictor
    from wsss.predict import predict_images, raise_failures
    from wsss.progress import progress

    dist.init_from_env()  # under torchrun the images are sharded across ranks
    predictor = load_predictor(
        model, str(dist.resolve_device(device, "--device")), _size(size), threshold, guided_radius
    )
    summary = predict_images(
        predictor, inputs, out, batch, not no_overlays, progress, high_bit_depth, probs=not no_probs
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
    from wsss.config import ExportConfig
    from wsss.export.review import build_review, run_source
    from wsss.progress import progress

    if out.exists() and not out.is_dir():
        raise ConfigError(out, "exists and is not a folder", "choose another --out folder")
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


@cli.command("review-round")
@config_option
@run_dir_option
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="fine-tuning epochs")
@click.option(
    "--split", type=click.Choice(["test", "val"]), default="test", show_default=True, help="split to evaluate"
)
@set_option
def review_round_cmd(config: Path, run_dir: Path | None, epochs: int, split: str, overrides: tuple[str, ...]) -> None:
    """Fine-tune the run's segmenter on its reviewed masks (`wsss import-review`) and print before / after.

    The segmenter before the round and the report are kept in RUN/review-rounds/round-<k>/."""
    from wsss.review_round import review_round

    cfg = load_config(config, overrides)
    review_round(config, run_dir or Path("runs") / cfg.run.name, overrides, epochs, split, click.echo)


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
    from wsss.export.onnx import export_onnx

    report = export_onnx(model, out, opset=opset)
    shapes = ", ".join("x".join(map(str, s)) for s in report.checked_shapes)
    click.echo(f"wrote {out}; onnxruntime vs PyTorch on inputs {shapes}: max abs diff {report.max_abs_diff:.3g}")


@cli.command()
@click.option("--kind", required=True, help="dataset kind: folder, csv, ksdd, mtd, ... (see docs/datasets.md)")
@click.option("--root", type=click.Path(path_type=Path), required=True, help="dataset folder (kind csv: the CSV)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("recipe.yaml"), show_default=True)
@click.option("--force", is_flag=True, help="replace an existing recipe file")
def init(kind: str, root: Path, out: Path, force: bool) -> None:
    """Scan a dataset, print what it holds, and write a recipe for it (sizes resolved from its images)."""
    from wsss.init_recipe import write_recipe

    path, summary = write_recipe(kind, root, out, force)
    for line in summary.lines():
        click.echo(line)
    click.echo(f"wrote {path}; run it with: wsss run --config {path}")


@cli.command()
@run_dir_option
@force_option
@set_option
def demo(run_dir: Path | None, force: bool, overrides: tuple[str, ...]) -> None:
    """Generate the built-in defect set (real surface photographs with drawn defects) and run the default recipe on
    it, every pipeline stage end to end; then print each stage's figures and write an overview picture."""
    from wsss.config import DEMO_SETTINGS
    from wsss.pipelines import load_pipeline

    cfg = load_config(None, (*DEMO_SETTINGS, *overrides))
    click.echo(_demo_line(cfg))
    run = _run(cfg, run_dir)
    pipeline = load_pipeline(cfg.run.pipeline)
    run.run_pipeline(list(pipeline.stages), force=force)
    click.echo("")
    click.echo((run.stage_dir("prepare") / "report.md").read_text())
    if "evaluate" not in pipeline.stages:
        click.echo("(no mask-writing stage is in the pipeline yet, so there is nothing to evaluate)")
        click.echo(f"run folder: {run.dir}")
        return
    click.echo((run.stage_dir("evaluate") / "report.md").read_text())
    summary, reports = _stage_summary(run, list(pipeline.stages), cfg)
    click.echo(summary)
    overview = _overview(run, reports, cfg)
    if overview is not None:
        click.echo(f"overview picture: {overview}")
    if "export" in pipeline.stages:
        click.echo(f"review page: {run.stage_dir('export') / 'index.html'}")
    click.echo(f"run folder: {run.dir}")


def _demo_line(cfg: Config) -> str:
    """What the demo runs, in one line."""
    bb, syn = cfg.classifier.backbone, cfg.dataset.synthetic
    model = "pretrained ImageNet EfficientNet-Lite0" if bb.name == "tf_efficientnet_lite0" else bb.name
    if bb.name != "tf_efficientnet_lite0" or bb.weights != "imagenet":
        model += f", weights {bb.weights or 'none'}"
    cut = f", {bb.stages} feature stages ({bb.freeze} frozen)" if bb.stages else ""
    return (
        f"demo: the default recipe ({model} at output stride {bb.output_stride}{cut}) on "
        f"{syn.n_ok + syn.n_defect} generated parts ({', '.join(syn.textures)}, {syn.size} px); sizes and epochs "
        "reduced for a 5-minute run"
    )


def _mask_stages(run, stages: list[str]) -> list[str]:
    """The pipeline's mask-writing stages that wrote masks in this run, in order."""
    registered = load_stages()
    return [n for n in stages if registered[n].writes_masks and (run.stage_dir(n) / "masks").is_dir()]


def _stage_summary(run, stages: list[str], cfg) -> tuple[str, dict]:
    """Every mask-writing stage of the run on the evaluated split, side by side (METHOD.md 8): what each step of the
    method gives, so a poor final row is seen next to the pseudo-masks it learned from; with each stage's pixel AP
    (where it writes probs/) and its time (its manifest's seconds). Also each stage's report, by stage name."""
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import evaluate_stage
    from wsss.evaluation.report import pct
    from wsss.runs import read_manifest

    index = run.stage_dir("prepare") / "index.csv"
    rows = read_eval_index(index, split=None if cfg.evaluate.split == "all" else cfg.evaluate.split)
    info = read_dataset_info(index)
    lines = [
        f"## Every mask-writing stage ({cfg.evaluate.split} split)",
        "",
        "| stage | image AP | mIoU_def | pixel AP | Seg_mIoU | Seg_Recall@0.5 | time |",
        "|---|---|---|---|---|---|---|",
    ]
    mask_stages, reports, total = _mask_stages(run, stages), {}, 0.0
    for name in stages:
        seconds = float((read_manifest(run.stage_dir(name)) or {}).get("seconds") or 0.0)
        total += seconds
        if name not in mask_stages:
            continue
        r = reports[name] = evaluate_stage(rows, info, run.stage_dir(name), cfg.evaluate)
        pixel_ap = pct(r.pixel_ap) if r.pixel_ap is not None else "-"
        lines.append(
            f"| {name} | {pct(r.ap)} | {pct(r.miou_def)} | {pixel_ap} | {pct(r.seg_miou)} | "
            f"{pct(r.seg_recall_0_5)} | {seconds:.0f} s |"
        )
    lines += ["", f"all stages: {total:.0f} s"]
    return "\n".join(lines) + "\n", reports


def _overview(run, reports: dict, cfg) -> Path | None:
    """``overview.png`` in the run folder: best, median and worst test image of the last mask-writing stage (its
    report from :func:`_stage_summary`), beside the ground truth and the pseudo-masks; None when the run has no
    pseudo-masks or nothing to rank."""
    from wsss.data.index import read_eval_index
    from wsss.export.overview import pick_rows, write_overview

    if "pseudo-labels" not in reports:
        return None
    final = list(reports)[-1]
    images = reports[final].images
    if not pick_rows(images):
        return None
    index = run.stage_dir("prepare") / "index.csv"
    rows = read_eval_index(index, split=None if cfg.evaluate.split == "all" else cfg.evaluate.split)
    return write_overview(
        run.dir / "overview.png", rows, images, run.stage_dir("pseudo-labels") / "masks", run.stage_dir(final) / "masks"
    )


def main() -> None:
    cli(prog_name="wsss")


if __name__ == "__main__":
    main()
