"""Pipeline definitions: which stages run, in which order (YAML files in the top-level ``pipelines/`` folder).

A pipeline file holds ``description``, ``stages`` (a list of registered stage names) and optionally ``set`` (config
values the pipeline needs, e.g. ``cam.iem.enabled: false`` for an ablation; they override the recipe, and ``--set``
on the command line overrides them). ``run.pipeline`` in the config names one (``full``) or gives a path to a YAML
file of the same shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsss.errors import ConfigError
from wsss.stages import load_stages

if TYPE_CHECKING:
    from wsss.config.tree import Config

PIPELINE_DIR = Path(__file__).resolve().parents[1] / "pipelines"


@dataclass(frozen=True)
class Pipeline:
    name: str
    description: str
    stages: tuple[str, ...]
    settings: tuple[str, ...] = ()  # "section.key=value" overrides


def available() -> list[str]:
    return sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml"))


def load_pipeline(name: str) -> Pipeline:
    """Load a pipeline by name (from ``pipelines/``) or by path; every stage must be registered."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PIPELINE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            "run.pipeline",
            f"pipeline {name!r} not found ({path})",
            f"available pipelines: {', '.join(available()) or 'none'}; or give a YAML path",
        )
    from wsss.config.load import read_yaml

    data = read_yaml(path) or {}
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(path, "a pipeline needs a non-empty `stages:` list", "list stage names in run order")
    unknown = [s for s in stages if s not in load_stages()]
    if unknown:
        raise ConfigError(path, f"unknown stage(s) {unknown}", f"registered stages: {', '.join(load_stages())}")
    settings = data.get("set") or {}
    if not isinstance(settings, dict):
        raise ConfigError(path, "`set:` must map config keys to values", "e.g. set: {cam.iem.enabled: false}")
    return Pipeline(
        name=path.stem,
        description=str(data.get("description", "")).strip(),
        stages=tuple(stages),
        settings=tuple(f"{k}={json.dumps(v)}" for k, v in settings.items()),
    )


def select(pipeline: Pipeline, start: str | None, stop: str | None) -> list[str]:
    """The stages of ``pipeline`` from ``start`` to ``stop`` inclusive."""
    stages = list(pipeline.stages)
    for flag, s in (("--from", start), ("--to", stop)):
        if s is not None and s not in stages:
            raise ConfigError(
                f"{flag} {s}", f"stage not in pipeline {pipeline.name!r}", f"choose one of: {', '.join(stages)}"
            )
    i = stages.index(start) if start else 0
    j = stages.index(stop) + 1 if stop else len(stages)
    if i >= j:
        raise ConfigError(f"--from {start} --to {stop}", "empty range", "--from must come before --to")
    return stages[i:j]


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
