"""Commands that run the method: `stages`, `run-stage`, `run`, `status`, `show-config`, `init`, `demo`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import click

from wsss.artifacts.scores import read_scores
from wsss.atomic import atomic_write_text, write_json
from wsss.cli.group import (
    StageChoice,
    cli,
    config_option,
    force_option,
    optional_config_option,
    run_dir_option,
    run_folder,
    set_option,
)
from wsss.config import DEMO_SETTINGS, Config, dump_yaml, load_config
from wsss.config.pipelines import available, load_pipeline, select
from wsss.data.index import read_dataset_info, read_eval_index
from wsss.evaluation import evaluate_stage
from wsss.evaluation.report import pct
from wsss.hashing import read_manifest
from wsss.stages import get_stage, load_stages


@cli.command()
@optional_config_option("show what each stage reads under this recipe (default: the defaults)")
@set_option
def stages(config: Path | None, overrides: tuple[str, ...]) -> None:
    """List the registered stages (with the stages each reads under the recipe) and the pipeline definitions."""

    cfg = load_config(config, overrides)
    click.echo(
        "Stages" + (f" (inputs under {config}):" if config else " (inputs under the defaults; -c RECIPE for yours):")
    )
    for s in load_stages().values():
        reads = ", ".join(s.inputs(cfg))
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
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss import distributed as dist

    cfg = load_config(config, overrides)
    run_folder(cfg, run_dir).run_stage(stage, force=force)
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
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss import distributed as dist

    cfg = load_config(config, overrides)
    run = run_folder(cfg, run_dir)
    pipeline = load_pipeline(cfg.run.pipeline)
    chosen = select(pipeline, start, stop)
    run.run_pipeline(chosen, force=force)
    whole_way = chosen and chosen[-1] == pipeline.stages[-1] and "prepare" in pipeline.stages
    if dist.is_main() and whole_way:  # what the run gives: each stage's time and figures, the overview
        summary, reports = _stage_summary(run, list(pipeline.stages), run.cfg)
        click.echo("")
        click.echo(summary)
        overview = _overview(run, reports, run.cfg, list(pipeline.stages))
        if overview is not None:
            click.echo(f"overview picture: {overview}")
        if "export" in pipeline.stages:
            click.echo(f"review page: {run.stage_dir('export') / 'index.html'}")
    dist.shutdown()


@cli.command()
@config_option
@run_dir_option
@set_option
def status(config: Path, run_dir: Path | None, overrides: tuple[str, ...]) -> None:
    """Show each pipeline stage's state in the run folder (done, stale, missing, blocked, running, interrupted,
    failed)."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.runs import CORRUPT, INTERRUPTED

    cfg = load_config(config, overrides)
    run = run_folder(cfg, run_dir)
    click.echo(f"run folder: {run.dir}")
    notes = {
        "running": "(a wsss process is running it now)",
        INTERRUPTED: "(its process was killed or died; `wsss run` resumes it, or restarts it if its settings changed)",
        "failed": "(see its manifest.json for the error; `wsss run` retries it)",
        CORRUPT: "(an output file changed after it finished; `wsss run` redoes it)",
    }
    for name in load_pipeline(cfg.run.pipeline).stages:
        state = run.status(get_stage(name))
        click.echo(f"  {name:<18} {state} {notes.get(state, '')}".rstrip())


@cli.command("show-config")
@optional_config_option("YAML recipe (default: the built-in defaults)")
@run_dir_option
@set_option
def show_config(config: Path | None, run_dir: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults + file + overrides) as YAML.

    ``auto`` settings show the values the run's prepare stage resolved them to (the run folder of --run-dir, else
    runs/<run.name>), or stay ``auto`` until prepare has run."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.runs import Run

    cfg = load_config(config, overrides)
    click.echo(dump_yaml(Run(run_dir or Path("runs") / cfg.run.name, cfg).cfg.to_dict()), nl=False)


@cli.command()
@click.option("--kind", required=True, help="dataset kind: folder, csv, ksdd, mtd, ... (see docs/datasets.md)")
@click.option("--root", type=click.Path(path_type=Path), required=True, help="dataset folder (kind csv: the CSV)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("recipe.yaml"), show_default=True)
@click.option("--force", is_flag=True, help="replace an existing recipe file")
@click.option(
    "--estimate/--no-estimate",
    default=True,
    show_default=True,
    help="time the recipe's networks and CRF here (seconds) and print its expected wall time per stage",
)
def init(kind: str, root: Path, out: Path, force: bool, estimate: bool) -> None:
    """Scan a dataset, print what it holds, and write a recipe for it (sizes resolved from its images)."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.init_recipe import write_recipe

    path, summary, expected = write_recipe(kind, root, out, force, estimate)
    for line in summary.lines() + expected:
        click.echo(line)
    click.echo(f"wrote {path}; run it with: wsss run --config {path}")


@cli.command()
@run_dir_option
@force_option
@click.option(
    "--review",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="then a simulated reviewer corrects this many least confident training images and the review loop runs "
    "(`wsss review-round --tune`) in RUN/review-loop; 0: no review",
)
@set_option
def demo(run_dir: Path | None, force: bool, review: int, overrides: tuple[str, ...]) -> None:
    """Generate the built-in defect set (real surface photographs with drawn defects) and run the default recipe on
    it, every pipeline stage end to end; then print each stage's figures and write an overview picture. Then, since
    the data is generated and its masks are known, a simulated reviewer corrects the least confident training images
    and the review loop (tune, re-run, fine-tune) shows what those masks are worth."""
    cfg = load_config(None, (*DEMO_SETTINGS, *overrides))
    click.echo(_demo_line(cfg))
    run = run_folder(cfg, run_dir)
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
    overview = _overview(run, reports, cfg, list(pipeline.stages))
    if overview is not None:
        click.echo(f"overview picture: {overview}")
    if "export" in pipeline.stages:
        click.echo(f"review page: {run.stage_dir('export') / 'index.html'}")
    if review > 0 and "train-segmenter" in pipeline.stages:
        _demo_review(run, cfg, review)
    click.echo(f"run folder: {run.dir}")


def _demo_review(run, cfg: Config, n: int) -> None:
    """The review loop on a copy of the demo's finished run (``RUN/review-loop``, so the run itself stays as trained
    and resumes as usual): ``n`` masks from :func:`~wsss.review_round.simulated_review`, then
    :func:`~wsss.review_round.review_loop` with the demo's recipe written as a file; prints the segmenter's test
    mIoU_def before and after. A finished copy is reported again, not re-run."""

    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.review_round import copy_stages, review_loop, simulated_review

    copy = run.dir / "review-loop"
    done = copy / "review.json"
    if not done.is_file():
        click.echo(f"\nreview loop on a copy of the run ({copy}):")
        shutil.rmtree(copy, ignore_errors=True)
        copy_stages(run.dir, copy)
        recipe = copy / "recipe.yaml"
        atomic_write_text(recipe, "# the demo's recipe (wsss demo)\n" + dump_yaml(dataclasses.asdict(cfg)))
        ids = simulated_review(copy, n, click.echo)
        result = review_loop(recipe, copy, (), epochs=3, split="test", echo=click.echo)
        write_json(done, {"reviewed": ids, **result})
    result = json.loads(done.read_text())
    before, after = (result["figures"][k]["miou_def"] for k in ("as trained", "after the loop"))
    if before is not None and after is not None:
        click.echo(
            f"review loop: {len(result['reviewed'])} corrected masks take the segmenter's test mIoU_def from "
            f"{100 * before:.2f}% to {100 * after:.2f}% ({100 * (after - before):+.2f} points; {copy})"
        )


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
    """Every stage's time and, where the evaluated split has ground-truth masks, every mask-writing stage's figures
    side by side (METHOD.md 8): what each step of the method gives, so a poor final row is seen next to the
    pseudo-masks it learned from; with each stage's pixel AP (where it writes probs/). Also each stage's report, by
    stage name (none without ground truth)."""

    index = run.stage_dir("prepare") / "index.csv"
    rows = read_eval_index(index, split=None if cfg.evaluate.split == "all" else cfg.evaluate.split)
    info = read_dataset_info(index)
    truth = any(r.mask is not None for r in rows)
    lines = [
        f"## Every mask-writing stage ({cfg.evaluate.split} split)" if truth else "## Every stage's time",
        "",
        "| stage | image AP | mIoU_def | pixel AP | Seg_mIoU | Seg_Recall@0.5 | time |"
        if truth
        else "| stage | time |",
        "|---|---|---|---|---|---|---|" if truth else "|---|---|",
    ]
    mask_stages, reports, total = _mask_stages(run, stages), {}, 0.0
    for name in stages:
        seconds = float((read_manifest(run.stage_dir(name)) or {}).get("seconds") or 0.0)
        total += seconds
        if not truth:
            lines.append(f"| {name} | {seconds:.0f} s |")
            continue
        if name not in mask_stages:
            continue
        r = reports[name] = evaluate_stage(rows, info, run.stage_dir(name), cfg.evaluate)
        pixel_ap = pct(r.pixel_ap) if r.pixel_ap is not None else "-"
        lines.append(
            f"| {name} | {pct(r.ap)} | {pct(r.miou_def)} | {pixel_ap} | {pct(r.seg_miou)} | "
            f"{pct(r.seg_recall_0_5)} | {seconds:.0f} s |"
        )
    if not truth:
        lines += [
            "",
            "(no ground-truth masks in this split: `wsss export review` shows the masks for a person to judge)",
        ]
    lines += ["", f"all stages: {total:.0f} s"]
    return "\n".join(lines) + "\n", reports


def _overview(run, reports: dict, cfg, stages: list[str]) -> Path | None:
    """``overview.png`` in the run folder: best, median and worst test image of the last mask-writing stage (its
    report from :func:`_stage_summary`), beside the ground truth and the pseudo-masks; without ground truth, the
    images the last stage is surest, midway and least sure are defective. None when the run has no pseudo-masks or
    nothing to show."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss.export.overview import pick_by_score, pick_rows, write_overview

    pseudo = run.stage_dir("pseudo-labels") / "masks"
    finals = [n for n in _mask_stages(run, stages) if n != "pseudo-labels"]
    if not pseudo.is_dir():
        return None
    index = run.stage_dir("prepare") / "index.csv"
    rows = read_eval_index(index, split=None if cfg.evaluate.split == "all" else cfg.evaluate.split)
    if reports:
        final = list(reports)[-1]
        if not pick_rows(reports[final].images):
            return None
        return write_overview(
            run.dir / "overview.png", rows, reports[final].images, pseudo, run.stage_dir(final) / "masks"
        )
    final = finals[-1] if finals else "pseudo-labels"
    scores_file = run.stage_dir(final) / "scores.csv"
    if not scores_file.is_file():
        return None
    ids = {r.id for r in rows}
    scores = {k: float(v) for k, v in read_scores(scores_file).items() if k in ids}
    picks = pick_by_score(scores, cfg.evaluate.score_threshold)
    if not picks:
        return None
    return write_overview(run.dir / "overview.png", rows, [], pseudo, run.stage_dir(final) / "masks", picks=picks)
