"""The `wsss` command group and what its commands share: options, stage names, the run folder, error handling."""

from __future__ import annotations

from pathlib import Path

import click

from wsss import __version__
from wsss.config import Config
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
    """Turns WsssError into a one-line ``Error:`` message and its exit code, and Ctrl-C into exit code 130 (the
    shell's convention for SIGINT) with the stage left ``interrupted``, to resume."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WsssError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: `wsss run` resumes where it stopped", err=True)
            ctx.exit(130)


config_option = click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="YAML recipe, e.g. configs/ksdd.yaml",
)


def optional_config_option(help_text: str):
    """``--config/-c`` where a recipe is optional (the built-in defaults without one)."""
    return click.option(
        "--config", "-c", "config", type=click.Path(dir_okay=False, path_type=Path), default=None, help=help_text
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


def run_folder(cfg: Config, run_dir: Path | None):
    """The run folder's runner; under torchrun, this process joins the process group (rank 0 alone prints)."""
    # torch and OpenCV load here, with the command that uses them: `wsss --help` starts without them
    from wsss import distributed as dist
    from wsss.runs import Run

    dist.init_from_env()
    return Run(run_dir or Path("runs") / cfg.run.name, cfg, echo=click.echo if dist.is_main() else lambda *_: None)


@click.group(cls=WsssGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsss")
def cli() -> None:
    """Weakly supervised surface-defect segmentation: image-level labels in, pixel masks out."""
