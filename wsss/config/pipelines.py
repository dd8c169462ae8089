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

from wsss.config.load import read_yaml
from wsss.errors import ConfigError

PIPELINE_DIR = Path(__file__).resolve().parents[2] / "pipelines"


@dataclass(frozen=True)
class Pipeline:
    name: str
    description: str
    stages: tuple[str, ...]
    settings: tuple[str, ...] = ()  # "section.key=value" overrides


def available() -> list[str]:
    return sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml"))


def load_pipeline(name: str) -> Pipeline:
    """Load a pipeline by name (from ``pipelines/``) or by path. Its stage names are checked against the stage table
    where a run is opened (:func:`wsss.stages.check_pipeline`): the table lies above the config."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PIPELINE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            "run.pipeline",
            f"pipeline {name!r} not found ({path})",
            f"available pipelines: {', '.join(available()) or 'none'}; or give a YAML path",
        )
    data = read_yaml(path) or {}
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(path, "a pipeline needs a non-empty `stages:` list", "list stage names in run order")
    if not all(isinstance(s, str) for s in stages):
        raise ConfigError(path, "`stages:` must list stage names", "e.g. stages: [prepare, train-classifier, cam]")
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
