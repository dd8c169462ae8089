"""The stage table: every pipeline stage registered by name.

A stage is a function ``run(cfg, inputs, out) -> dict[str, Path]``: ``inputs`` maps upstream stage names to
their finished output folders, ``out`` is the (temporary) folder to write into, and the return value names the
artifacts it wrote. The CLI offers exactly the names registered here. Later stages register themselves the
same way; nothing is listed before it is implemented.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsss.config.pipelines import Pipeline, load_pipeline
from wsss.errors import ConfigError
from wsss.hashing import read_manifest
from wsss.registry import Registry

if TYPE_CHECKING:
    from wsss.config.tree import Config

StageFn = Callable[["Config", dict[str, Path], Path], dict[str, Path]]


def _no_inputs(cfg: Config) -> tuple[str, ...]:
    return ()


def _no_external(cfg: Config) -> list[Path]:
    return []


@dataclass(frozen=True)
class Stage:
    """A registered stage.

    Attributes:
        name: CLI name, e.g. ``prepare``.
        run: the stage function.
        sections: config sections whose values define the result (hashed into the manifest).
        help: one line for ``wsss stages``.
        inputs: upstream stage names it reads, as a function of the config.
        external: files or folders outside the run it reads (fingerprinted for staleness).
        writes_masks: True if it writes ``masks/<id>.png`` that ``evaluate`` can score.
        distributed: under torchrun every rank runs it (DDP training); otherwise rank 0 alone does, the others wait.
    """

    name: str
    run: StageFn
    sections: tuple[str, ...]
    help: str
    inputs: Callable[[Config], tuple[str, ...]] = _no_inputs
    external: Callable[[Config], list[Path]] = _no_external
    writes_masks: bool = False
    distributed: bool = False


# Stage modules in pipeline order; each registers itself on import. Add new stages here.
STAGE_MODULES = (
    "prepare",
    "pretrain",
    "train_classifier",
    "cam",
    "anomaly",
    "pseudo_labels",
    "retrain",
    "train_segmenter",
    "evaluate",
    "export",
)


def _pipeline_order(name: str, stage: Stage) -> tuple[int, str]:
    """Built-in stages in :data:`STAGE_MODULES` order, then any other (a plug-in's or a test's) by name."""
    module = stage.run.__module__.removeprefix("wsss.stages.")
    return (STAGE_MODULES.index(module) if module in STAGE_MODULES else len(STAGE_MODULES), name)


STAGES: Registry[Stage] = Registry("stage", "stages", [f"wsss.stages.{m}" for m in STAGE_MODULES], _pipeline_order)


def register_stage(stage: Stage) -> Stage:
    return STAGES.register(stage.name, stage)


def load_stages() -> Registry[Stage]:
    """Import the stage modules (each registers itself) and return the table, in pipeline order."""
    return STAGES.load()


def get_stage(name: str) -> Stage:
    return STAGES.lookup(name)


def check_pipeline(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` if every stage it names is registered, else a ConfigError naming the unknown ones."""
    stages = load_stages()
    unknown = [s for s in pipeline.stages if s not in stages]
    if unknown:
        raise ConfigError(
            f"pipeline {pipeline.name!r}", f"unknown stage(s) {unknown}", f"registered stages: {', '.join(stages)}"
        )
    return pipeline


def in_pipeline(cfg: Config, stage: str) -> bool:
    """Whether the configured pipeline (``run.pipeline``) runs ``stage``: optional stages (``pretrain``) feed their
    consumers only in pipelines that have them."""
    return stage in load_pipeline(cfg.run.pipeline).stages


def mask_source(cfg: Config, consumer: str, explicit: str, key: str) -> str:
    """The stage whose ``masks/`` ``consumer`` reads: ``explicit`` (the config value at ``key``) if set, else the
    last mask-writing stage before ``consumer`` in the configured pipeline (all of it if ``consumer`` is not in it)."""
    stages = load_stages()
    if explicit:
        stage = stages.get(explicit)
        if stage is None or not stage.writes_masks or explicit == consumer:
            valid = [s.name for s in stages.values() if s.writes_masks and s.name != consumer]
            raise ConfigError(
                key, f"{explicit!r} is not a stage that writes masks", f"mask-writing stages: {', '.join(valid)}"
            )
        return explicit
    pipeline = load_pipeline(cfg.run.pipeline)
    before = pipeline.stages[: pipeline.stages.index(consumer)] if consumer in pipeline.stages else pipeline.stages
    writers = [s for s in before if stages[s].writes_masks and s != consumer]
    if not writers:
        raise ConfigError(
            key,
            f"pipeline {pipeline.name!r} has no stage that writes masks before {consumer}",
            f"set {key} to a mask-writing stage",
        )
    return writers[-1]


def published(out: Path) -> Path:
    """Where a stage's output folder ``out`` (``<stage>.partial``) will be once the runner publishes it: the path
    to show users in messages."""
    return out.with_name(out.name.removesuffix(".partial"))


def mask_margin(cfg: Config, stage: str) -> int:
    """The pixels ``stage`` grows its masks' defect regions by under ``cfg`` (``pseudo.margin``, or ``retrain.margin``
    where set for the retrain round's masks; 0 for a stage that draws no margin)."""
    if stage == "pseudo-labels":
        return cfg.pseudo.margin
    if stage == "retrain":
        return cfg.pseudo.margin if cfg.retrain.margin is None else cfg.retrain.margin
    return 0


def recorded_margin(stage_dir: Path) -> int:
    """The pixels the finished mask stage in ``stage_dir`` grew its masks' defect regions by, as its manifest records
    the settings it ran with (0 for a stage that draws no margin, or one written before margins existed). The margin
    travels with the masks: a segmenter trained on them ignores that inner ring
    (:func:`wsss.refine.pseudo.margin_ignored`) whatever the settings of the run that reads them."""
    manifest = read_manifest(Path(stage_dir)) or {}
    config = manifest.get("config") or {}
    pseudo = (config.get("pseudo") or {}).get("margin", 0)
    if manifest.get("stage") == "pseudo-labels":
        return int(pseudo)
    if manifest.get("stage") == "retrain":
        own = (config.get("retrain") or {}).get("margin")
        return int(pseudo if own is None else own)
    return 0
