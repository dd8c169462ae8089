"""The stage table is consistent: every stage module registers, every hashed config section exists, every input
is a registered stage, and every stage the pipelines name is registered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wsss.config import Config
from wsss.pipelines import PIPELINE_DIR, load_pipeline
from wsss.stages import STAGE_MODULES, load_stages

# the built-in stages (tests register toy stages of their own in the same table)
STAGES = {n: s for n, s in load_stages().items() if s.run.__module__.startswith("wsss.stages.")}


def test_every_stage_module_is_in_the_table():
    modules = {p.stem for p in (Path(__file__).parent.parent / "wsss" / "stages").glob("*.py")} - {"__init__"}
    assert modules == set(STAGE_MODULES)
    assert len(STAGES) == len(STAGE_MODULES)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_sections_exist_in_the_config(name):
    cfg = Config()
    for section in STAGES[name].sections:
        node = cfg
        for key in section.split("."):
            assert hasattr(node, key), f"stage {name}: config section {section!r} does not exist"
            node = getattr(node, key)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_inputs_are_registered_stages(name):
    inputs = STAGES[name].inputs(Config())
    assert set(inputs) <= set(STAGES), f"stage {name} reads unknown stages {set(inputs) - set(STAGES)}"
    assert name not in inputs


@pytest.mark.parametrize("pipeline", sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml")))
def test_pipelines_name_registered_stages(pipeline):
    assert set(load_pipeline(pipeline).stages) <= set(STAGES)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_reads_names_every_default_input(name):
    """`wsss stages` shows ``reads`` where the inputs depend on the config; it must not drift from ``inputs``."""
    stage = STAGES[name]
    if not stage.reads:
        return  # shown as the inputs themselves
    inputs = stage.inputs(Config())
    shown = set(re.findall(r"[a-z][a-z-]*[a-z]", stage.reads))
    mask_writers = {n for n, s in STAGES.items() if s.writes_masks}
    for i in inputs:
        assert i in shown or (i in mask_writers and "mask-writing stage" in stage.reads), (name, i, stage.reads)
