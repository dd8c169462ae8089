"""The :class:`Config` tree (one attribute per YAML section), loading a recipe into it with ``--set`` overrides,
the checks that involve several fields, and the per-stage section hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsss.anomaly.config import AnomalyConfig
from wsss.cam.config import CamConfig
from wsss.config.load import build, check_fields, closest_key, coerce, read_yaml, resolve_path
from wsss.config.pipelines import load_pipeline
from wsss.data.base import ADAPTERS
from wsss.data.config import DatasetConfig, PrepareConfig
from wsss.errors import ConfigError
from wsss.evaluation.config import EvaluateConfig
from wsss.export.config import ExportConfig
from wsss.fields import SEED, Rule, choices, folder_name, num
from wsss.models.weights import is_weights_name
from wsss.refine.config import PseudoConfig
from wsss.train.config import ClassifierConfig, PretrainConfig, RetrainConfig, SegmenterConfig


@dataclass
class RunConfig:
    """Run-wide settings."""

    # run folder name under runs/; default: the config file's stem
    name: str = field(
        default="",
        metadata={"check": Rule("a folder name such as my-run; use --run-dir for another location", folder_name)},
    )
    pipeline: str = "full"  # pipeline definition in pipelines/ (see `wsss stages`)
    seed: int = num(0, ge=0, fix=SEED + " (numpy's generators refuse negative seeds)")
    device: str = choices("auto", "cpu", "cuda", default="auto")


@dataclass
class Config:
    """The whole recipe. Each attribute is a YAML section."""

    run: RunConfig = field(default_factory=RunConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def seed(self, section: str) -> int:
        """The training seed of ``section`` (classifier, retrain, segmenter): its own ``seed``, else ``run.seed``."""
        own = getattr(self, section).seed
        return self.run.seed if own is None else int(own)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML recipe (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    if path is None:
        cfg = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(path, "config file not found", "pass an existing YAML file, e.g. configs/demo.yaml")
        data = read_yaml(path)
        cfg = build(Config, data, "", str(path), path.parent.resolve())
    for item in overrides:
        apply_override(cfg, item)
    pipeline = load_pipeline(cfg.run.pipeline)
    if pipeline.settings:  # an ablation's settings beat the recipe; the command line beats both
        for item in pipeline.settings:
            apply_override(cfg, item)
        for item in overrides:
            apply_override(cfg, item)
    if not cfg.run.name:  # never the runs/ folder itself: the recipe's file name, else "default"
        cfg.run.name = Path(path).stem if path is not None else "default"
    validate(cfg)
    return cfg


def apply_override(cfg: Config, item: str) -> None:
    """Apply one ``section.key=value`` override in place, with the same checks as the YAML loader."""
    if "=" not in item:
        raise ConfigError(f"--set {item}", "expected section.key=value", "e.g. --set prepare.split.seed=1")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    obj: Any = cfg
    for i, name in enumerate(parts):
        section = ".".join(parts[:i]) or "top level"
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"--set {item}", f"{section!r} is a value, not a section", "set the key itself")
        names = [f.name for f in dataclasses.fields(obj)]
        if name not in names:
            raise ConfigError(f"--set {item}", f"unknown key {name!r} in section {section!r}", closest_key(name, names))
        if i < len(parts) - 1:
            obj = getattr(obj, name)
    f = next(f for f in dataclasses.fields(obj) if f.name == parts[-1])
    tp = typing.get_type_hints(type(obj))[f.name]
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"--set {item}", f"{dotted!r} is a section", "set one of its keys, e.g. " + dotted + ".KEY=V")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    v = coerce(value, tp, f"--set {dotted}", f.metadata)
    if f.metadata.get("path") and v is not None and not is_weights_name(v):
        v = resolve_path(v, Path.cwd())
    setattr(obj, f.name, v)


def validate(cfg: Config) -> None:
    """Every field against the range or rule declared with it, then the checks that involve several fields."""
    check_fields(cfg)
    s = cfg.prepare.split
    if s.mode == "ratios" and abs(s.train + s.val + s.test - 1.0) > 1e-6:
        raise ConfigError(
            "prepare.split", f"train+val+test = {s.train + s.val + s.test:g}, not 1", "make the three ratios sum to 1"
        )
    if s.mode == "kfold" and not (s.folds >= 2 and 0 <= s.fold < s.folds):
        raise ConfigError(
            "prepare.split", f"fold {s.fold} of {s.folds} folds is invalid", "use folds >= 2 and 0 <= fold < folds"
        )
    ADAPTERS.lookup(cfg.dataset.kind, "dataset.kind")  # an unknown kind: the registry's error, with a close match
    if cfg.dataset.kind != "synthetic" and not cfg.dataset.root:
        raise ConfigError(
            "dataset.root",
            f"dataset kind {cfg.dataset.kind!r} needs a root",
            "set dataset.root in the config or with --set dataset.root=PATH",
        )
    if cfg.pretrain.anomaly.features != "backbone":
        raise ConfigError(
            "pretrain.anomaly.features",
            f"invalid value {cfg.pretrain.anomaly.features!r}",
            "backbone: the maps that guide pretraining must come from a network that never saw labels",
        )


def section_value(cfg: Config, key: str) -> Any:
    """The value at a dotted key such as ``cam.iem.rounds``."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def section_dict(cfg: Config, sections: tuple[str, ...]) -> dict[str, Any]:
    """The named sections (or single dotted keys such as ``run.seed``) as plain data, for manifests and hashes."""
    out: dict[str, Any] = {}
    for name in sections:
        obj: Any = cfg
        for part in name.split("."):
            obj = getattr(obj, part)
        out[name] = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return out


def section_hash(cfg: Config, sections: tuple[str, ...]) -> str:
    """Stable hash of the named sections."""
    blob = json.dumps(section_dict(cfg, sections), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
