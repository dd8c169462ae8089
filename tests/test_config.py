"""Typed config: YAML loading, unknown keys, --set overrides with type checks, relative paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsss.cli import cli
from wsss.config import Config, load_config, section_hash
from wsss.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_wsss_demo_runs_exactly_configs_demo_yaml():
    from wsss.config import DEMO_SETTINGS

    assert load_config(None).dataset.kind == "synthetic"  # the defaults' dataset is the demo set
    demo = load_config(None, DEMO_SETTINGS)  # what `wsss demo` runs
    assert demo.to_dict() == load_config(Path(__file__).parents[1] / "configs" / "demo.yaml").to_dict()
    assert demo.pseudo.crf.bilateral_sxy == "auto"  # the CRF's reach follows the 128 px images by itself


def test_yaml_values_are_typed_and_run_name_defaults_to_stem(tmp_path: Path):
    cfg = load_config(write(tmp_path, "prepare:\n  split: {mode: kfold, folds: 5, fold: 4, val: 0.1}\n"))
    assert cfg.prepare.split.folds == 5 and isinstance(cfg.prepare.split.val, float)
    assert cfg.run.name == "recipe"


def test_unknown_key_names_key_section_and_closest(tmp_path: Path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "prepare:\n  split: {trian: 0.5}\n"))
    msg = str(e.value)
    assert "recipe.yaml" in msg and "'trian'" in msg and "'prepare.split'" in msg and "did you mean 'train'" in msg
    assert e.value.exit_code == 2


def test_unknown_section_and_wrong_types(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown key 'prepar' in section 'top level'.*did you mean 'prepare'"):
        load_config(write(tmp_path, "prepar: {}\n"))
    with pytest.raises(ConfigError, match=r"prepare.workers: expected an integer, got 'two'"):
        load_config(write(tmp_path, "prepare: {workers: two}\n"))
    with pytest.raises(ConfigError, match=r"dataset.binary: expected true/false"):
        load_config(write(tmp_path, "dataset: {binary: 3}\n"))
    with pytest.raises(ConfigError, match=r"expected a mapping"):
        load_config(write(tmp_path, "prepare: 3\n"))
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(write(tmp_path, "prepare: [\n"))


def test_cross_field_checks(tmp_path: Path):
    with pytest.raises(ConfigError, match="train\\+val\\+test = 1.1, not 1"):
        load_config(None, ["prepare.split.train=0.7"])
    with pytest.raises(ConfigError, match="fold 3 of 3 folds is invalid"):
        load_config(None, ["prepare.split.mode=kfold", "prepare.split.fold=3"])
    with pytest.raises(ConfigError, match="dataset.root: dataset kind 'mtd' needs a root"):
        load_config(None, ["dataset.kind=mtd"])


def test_set_overrides_are_type_checked():
    cfg = load_config(
        None,
        ["prepare.split.seed=7", "dataset.binary=true", "dataset.ok_names=[ok, MT_Free]", "evaluate.score_threshold=1"],
    )
    assert cfg.prepare.split.seed == 7 and cfg.dataset.binary is True
    assert cfg.dataset.ok_names == ["ok", "MT_Free"] and cfg.evaluate.score_threshold == 1.0
    with pytest.raises(ConfigError, match="expected an integer, got 0.5"):
        load_config(None, ["prepare.split.seed=0.5"])
    with pytest.raises(ConfigError, match="did you mean 'kfold'"):
        load_config(None, ["prepare.split.mode=kfld"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config(None, ["prepare.split=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["prepare.split.seed"])


def test_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "sub").mkdir()
    cfg = load_config(write(tmp_path, "dataset: {kind: mtd, root: data/mtd}\n"))
    assert cfg.dataset.root == str((tmp_path / "data" / "mtd").resolve())  # relative to the YAML file
    monkeypatch.chdir(tmp_path / "sub")
    cfg = load_config(None, ["dataset.kind=mtd", "dataset.root=x"])
    assert cfg.dataset.root == str((tmp_path / "sub" / "x").resolve())  # --set: relative to the cwd


def test_section_hash_depends_only_on_its_sections():
    a, b = Config(), Config()
    b.evaluate.score_threshold = 0.9
    assert section_hash(a, ("dataset", "prepare")) == section_hash(b, ("dataset", "prepare"))
    assert section_hash(a, ("evaluate",)) != section_hash(b, ("evaluate",))


def test_cli_reports_config_errors_with_exit_code_2(tmp_path: Path):
    r = CliRunner().invoke(cli, ["show-config", "--config", str(write(tmp_path, "run: {nme: x}\n"))])
    assert r.exit_code == 2
    assert r.output.startswith("Error: ") and "unknown key 'nme' in section 'run'" in r.output
    r = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "config file not found" in r.output


def test_a_default_that_changed_behaviour_makes_older_stages_stale():
    from wsss.config import BEHAVIOUR_BEFORE, section_dict, settings_match

    sections = ("segmenter", "run.seed")
    recorded = json.loads(json.dumps(section_dict(load_config(None), sections), default=str))
    del recorded["segmenter"]["cls_lse_r"]  # a manifest from before the option existed (the head averaged then)
    assert BEHAVIOUR_BEFORE["segmenter.cls_lse_r"] == 0.0 != load_config(None).segmenter.cls_lse_r
    assert not settings_match(recorded, load_config(None), sections)  # the new default computes something else
    assert settings_match(recorded, load_config(None, ["segmenter.cls_lse_r=0"]), sections)  # the old behaviour
    del recorded["segmenter"]["missed_defects"]  # an option whose default is the old behaviour stays unchanged
    assert settings_match(recorded, load_config(None, ["segmenter.cls_lse_r=0"]), sections)


def test_nested_sections_keep_their_own_defaults(tmp_path: Path):
    """A YAML section that sets one key of a nested section keeps that section's field defaults, not the class's."""
    path = tmp_path / "r.yaml"
    path.write_text("segmenter: {backbone: {freeze: 3}}\npretrain: {anomaly: {layers: [1]}}\n")
    cfg = load_config(path)
    assert cfg.segmenter.backbone.freeze == 3 and cfg.segmenter.backbone.output_stride == 32
    assert cfg.pretrain.anomaly.layers == [1] and cfg.pretrain.anomaly.features == "backbone"
