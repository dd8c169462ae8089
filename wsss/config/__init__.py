"""Typed configuration: YAML -> dataclasses, one section per stage, with defaults.

Rules:
- Unknown keys are errors that name the key, its section and the closest valid key.
- ``--set section.key=value`` overrides are parsed as YAML scalars and type-checked against the field.
- Fields with ``metadata={"choices": ...}`` only accept those values.
- Every numeric field declares its valid range with the field (:func:`wsss.fields.num`, a :class:`Range`), and a few
  other fields a :class:`Rule` (``run.name`` is a plain folder name); :func:`validate` checks them all, nested sections included,
  naming the dotted key. Only checks that involve several fields are written out in :func:`validate`.
- Numbers may be written in scientific notation (``lr: 1e-3``, ``max_pixels: 1.6e5``), which YAML 1.1 reads as
  strings; an integer setting takes a whole number in any notation, and no setting takes nan or inf.
- Relative paths in a YAML file are resolved against that file's folder (so recipes work from any working
  directory); relative paths given with ``--set`` are resolved against the current directory.
- Each stage hashes only the sections it reads (:func:`section_hash`), so editing one stage's settings re-runs
  that stage and what follows it, not the stages before.

Each section's dataclass lives beside the code that reads it (``wsss/data/config.py``, ``wsss/train/config.py``, ...),
declared with the field helpers of :mod:`wsss.fields`. This package assembles them into the :class:`Config` tree
(``tree.py``, with the run-wide ``run`` and the ``evaluate`` sections), loads and checks it (``load.py``: YAML,
coercion, ranges), holds the demo's settings (``demo.py``), and re-exports every section class, so
``from wsss.config import PseudoConfig`` works everywhere. Whether a finished stage's settings are still current is
the runner's question (:mod:`wsss.staleness`).
"""

from __future__ import annotations

from wsss.anomaly.config import AnomalyConfig
from wsss.cam.config import CamConfig, IEMConfig
from wsss.config.demo import DEMO_SETTINGS
from wsss.config.load import check_fields, dump_yaml, read_yaml
from wsss.config.tree import (
    Config,
    EvaluateConfig,
    RunConfig,
    apply_override,
    load_config,
    section_dict,
    section_hash,
    section_value,
    validate,
)
from wsss.data.config import AugmentConfig, DatasetConfig, PrepareConfig, SplitConfig, SyntheticConfig
from wsss.export.config import ExportConfig
from wsss.fields import Range, Rule
from wsss.models.config import BackboneConfig
from wsss.refine.config import CRFConfig, GuidedConfig, PseudoConfig
from wsss.train.config import (
    ClassifierConfig,
    CLMConfig,
    GCMConfig,
    InjectConfig,
    PretrainConfig,
    RetrainConfig,
    SegmenterConfig,
    SegTrainConfig,
)

__all__ = [
    "AnomalyConfig",
    "AugmentConfig",
    "BackboneConfig",
    "CamConfig",
    "ClassifierConfig",
    "CLMConfig",
    "Config",
    "CRFConfig",
    "DatasetConfig",
    "DEMO_SETTINGS",
    "EvaluateConfig",
    "ExportConfig",
    "GCMConfig",
    "GuidedConfig",
    "IEMConfig",
    "InjectConfig",
    "PrepareConfig",
    "PretrainConfig",
    "PseudoConfig",
    "Range",
    "RetrainConfig",
    "Rule",
    "RunConfig",
    "SegmenterConfig",
    "SegTrainConfig",
    "SplitConfig",
    "SyntheticConfig",
    "apply_override",
    "check_fields",
    "dump_yaml",
    "load_config",
    "read_yaml",
    "section_dict",
    "section_hash",
    "section_value",
    "validate",
]
