"""The `wsss` command line: run stages and pipelines, evaluate masks, run the demo.

User errors (:class:`wsss.errors.WsssError`) print as ``Error: <file>: <what> (<how to fix>)`` and exit with the
error's code: 2 for usage/config errors, 1 for bad data or a stage that cannot run.
"""

from __future__ import annotations

from pathlib import Path

import click

from wsss import __version__
from wsss.config import Config, dump_yaml, load_config
from wsss.errors import WsssError
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
force_option = click.option("--force", is_flag=True, help="re-run even if up to date")


def _run(cfg: Config, run_dir: Path | None):
    from wsss.runs import Run

    return Run(run_dir or Path("runs") / cfg.run.name, cfg)


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
    cfg = load_config(config, overrides)
    _run(cfg, run_dir).run_stage(stage, force=force)


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
    from wsss.pipelines import load_pipeline, select

    cfg = load_config(config, overrides)
    _run(cfg, run_dir).run_pipeline(select(load_pipeline(cfg.run.pipeline), start, stop), force=force)


@cli.command()
@config_option
@run_dir_option
@set_option
def status(config: Path, run_dir: Path | None, overrides: tuple[str, ...]) -> None:
    """Show each pipeline stage's state in the run folder (done, stale, missing, running, failed)."""
    from wsss.pipelines import load_pipeline
    from wsss.stages import get_stage

    cfg = load_config(config, overrides)
    run = _run(cfg, run_dir)
    click.echo(f"run folder: {run.dir}")
    for name in load_pipeline(cfg.run.pipeline).stages:
        click.echo(f"  {name:<18} {run.status(get_stage(name))}")


@cli.command("show-config")
@click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML recipe (default: the built-in defaults)",
)
@set_option
def show_config(config: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults + file + overrides) as YAML."""
    click.echo(dump_yaml(load_config(config, overrides).to_dict()), nl=False)


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
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="report folder (default: the masks folder's parent)",
)
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True)
@click.option("--threshold", type=float, default=0.5, show_default=True, help="sample score threshold")
@click.option(
    "--ignore-as",
    type=click.Choice(["background", "defect"]),
    default="background",
    show_default=True,
    help="how ignore (255) pixels count",
)
def evaluate(
    index: Path, masks: Path, scores: Path | None, out: Path | None, split: str, threshold: float, ignore_as: str
) -> None:
    """Evaluate a folder of predicted masks against the ground truth; writes report.json and report.md."""
    from wsss.config import EvaluateConfig
    from wsss.stages.evaluate import evaluate_index

    cfg = EvaluateConfig(split=split, score_threshold=threshold, ignore_as=ignore_as)
    out = out or Path(masks).resolve().parent
    report = evaluate_index(index, masks, scores, cfg, out)
    click.echo(report.to_markdown())
    click.echo(f"wrote {out / 'report.json'} and {out / 'report.md'}")


@cli.command()
@run_dir_option
@force_option
@set_option
def demo(run_dir: Path | None, force: bool, overrides: tuple[str, ...]) -> None:
    """Generate the built-in synthetic defect set and run every pipeline stage on it, end to end."""
    from wsss.pipelines import load_pipeline

    cfg = load_config(None, ("run.name=demo", *overrides))
    run = _run(cfg, run_dir)
    pipeline = load_pipeline(cfg.run.pipeline)
    run.run_pipeline(list(pipeline.stages), force=force)
    click.echo("")
    click.echo((run.stage_dir("prepare") / "report.md").read_text())
    if "evaluate" in pipeline.stages:
        click.echo((run.stage_dir("evaluate") / "report.md").read_text())
    else:
        click.echo("(no mask-writing stage is in the pipeline yet, so there is nothing to evaluate)")
    click.echo(f"run folder: {run.dir}")


def main() -> None:
    cli(prog_name="wsss")


if __name__ == "__main__":
    main()
