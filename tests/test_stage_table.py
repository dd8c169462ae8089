"""The stage table is consistent: every stage module registers, every hashed config section exists, every input
is a registered stage, and every stage the pipelines name is registered."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsss.config import Config
from wsss.config.pipelines import PIPELINE_DIR, load_pipeline
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


def test_wsss_stages_shows_the_inputs_the_recipe_gives():
    """What `wsss stages` says a stage reads is derived from its inputs under the recipe, not written by hand."""
    from click.testing import CliRunner

    from wsss.cli import cli

    plain = CliRunner().invoke(cli, ["stages"])
    fused = CliRunner().invoke(cli, ["stages", "--set", "pseudo.unary=fusion"])
    assert plain.exit_code == 0 and fused.exit_code == 0, plain.output + fused.output
    line = next(x for x in plain.output.splitlines() if x.strip().startswith("pseudo-labels "))
    assert line.endswith("[reads: prepare, cam]")
    line = next(x for x in fused.output.splitlines() if x.strip().startswith("pseudo-labels "))
    assert line.endswith("[reads: prepare, cam, anomaly]")
