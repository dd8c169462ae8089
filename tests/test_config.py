"""Typed config: YAML loading, unknown keys, --set overrides with type checks, relative paths."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsss.cli import cli
from wsss.config import Config, Range, load_config, section_hash
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
    assert demo.classifier.input_size == "auto"  # sizes follow the 128 px images by themselves


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
    from wsss.config import section_dict
    from wsss.staleness import BEHAVIOUR_BEFORE, settings_match

    sections = ("segmenter", "run.seed")
    recorded = json.loads(json.dumps(section_dict(load_config(None), sections), default=str))
    del recorded["segmenter"]["cls_lse_r"]  # a manifest from before the option existed (the head averaged then)
    assert BEHAVIOUR_BEFORE["segmenter.cls_lse_r"] == 0.0 != load_config(None).segmenter.cls_lse_r
    assert not settings_match(recorded, load_config(None), sections)  # the new default computes something else
    assert settings_match(recorded, load_config(None, ["segmenter.cls_lse_r=0"]), sections)  # the old behaviour
    del recorded["segmenter"]["missed_defects"]  # an option whose default is the old behaviour stays unchanged
    assert settings_match(recorded, load_config(None, ["segmenter.cls_lse_r=0"]), sections)


def test_a_section_a_stage_no_longer_reads_cannot_make_it_stale():
    """train-segmenter once hashed pseudo.margin and retrain.margin; the margin now travels with the masks it reads,
    so a manifest that recorded them stays up to date whatever they hold, while a section it reads still counts."""
    from wsss.config import section_dict
    from wsss.staleness import settings_match

    before = ("segmenter", "pseudo.bg_prior", "pseudo.margin", "retrain.margin", "run.seed")
    now = ("segmenter", "pseudo.bg_prior", "run.seed")
    recorded = json.loads(json.dumps(section_dict(load_config(None, ["pseudo.margin=2"]), before), default=str))
    assert settings_match(recorded, load_config(None), now)
    assert not settings_match(recorded, load_config(None), before)
    assert not settings_match(recorded, load_config(None, ["pseudo.bg_prior=0.2"]), now)


def test_the_margin_a_mask_stage_drew_is_read_from_its_manifest(tmp_path: Path):
    from wsss.stages import recorded_margin

    def stage(name: str, config: dict) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"stage": name, "status": "done", "config": config}))
        return folder

    assert recorded_margin(stage("pseudo-labels", {"pseudo": {"margin": 2}})) == 2
    assert recorded_margin(stage("retrain", {"pseudo": {"margin": 2}, "retrain": {"margin": None}})) == 2
    (tmp_path / "retrain" / "manifest.json").unlink()
    (tmp_path / "retrain").rmdir()
    assert recorded_margin(stage("retrain", {"pseudo": {"margin": 2}, "retrain": {"margin": 0}})) == 0
    assert recorded_margin(stage("train-segmenter", {"segmenter": {}})) == 0  # draws none
    assert recorded_margin(tmp_path / "nothing") == 0


def test_nested_sections_keep_their_own_defaults(tmp_path: Path):
    """A YAML section that sets one key of a nested section keeps that section's field defaults, not the class's."""
    path = tmp_path / "r.yaml"
    path.write_text("segmenter: {backbone: {freeze: 3}}\npretrain: {anomaly: {layers: [1]}}\n")
    cfg = load_config(path)
    assert cfg.segmenter.backbone.freeze == 3 and cfg.segmenter.backbone.output_stride == 32
    assert cfg.pretrain.anomaly.layers == [1] and cfg.pretrain.anomaly.features == "backbone"


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("classifier.epochs=0", "classifier.epochs"),
        ("classifier.epochs=-1", "classifier.epochs"),
        ("classifier.batch_size=0", "classifier.batch_size"),
        ("classifier.lr=0", "classifier.lr"),
        ("classifier.lr=-1e-3", "classifier.lr"),
        ("cam.score_threshold=1.5", "cam.score_threshold"),
        ("classifier.augment.blur_prob=1.5", "classifier.augment.blur_prob"),
        ("cam.iem.rounds=0", "cam.iem.rounds"),
        ("classifier.backbone.output_stride=12", "classifier.backbone.output_stride"),
        ("pretrain.anomaly.patch=4", "pretrain.anomaly.patch"),
        ("segmenter.epochs=0", "segmenter.epochs"),  # a field a subclass redeclares keeps a range
        ("prepare.split.folds=1", "prepare.split.folds"),
        ("cam.scales=[]", "cam.scales"),
        ("anomaly.input_size=[64]", "anomaly.input_size"),
    ],
)
def test_out_of_range_values_are_refused_with_their_dotted_key(setting: str, key: str):
    with pytest.raises(ConfigError, match=rf"^{key}: invalid value") as e:
        load_config(None, [setting])
    assert e.value.exit_code == 2 and e.value.fix  # the message says what a valid value is


def test_numbers_in_scientific_notation(tmp_path: Path):
    # PyYAML (YAML 1.1) reads 1e-3, 5E-4 and 1.6e5 (no dot, or no exponent sign) as strings
    cfg = load_config(write(tmp_path, "classifier: {lr: 1e-3, max_pixels: 1.6e5}\nretrain: {lr: 5E-4, epochs: 1e1}\n"))
    assert cfg.classifier.lr == 1e-3 and cfg.retrain.lr == 5e-4
    assert cfg.classifier.max_pixels == 160_000 and isinstance(cfg.classifier.max_pixels, int)
    assert cfg.retrain.epochs == 10 and isinstance(cfg.retrain.epochs, int)
    cfg = load_config(None, ["classifier.lr=1e-3", "pretrain.weight_decay=2.5e-5", "anomaly.coreset=1e4"])
    assert cfg.classifier.lr == 1e-3 and cfg.pretrain.weight_decay == 2.5e-5 and cfg.anomaly.coreset == 10_000
    # unions with a string keep the string ("auto") and take numbers in any notation
    cfg = load_config(None, ["pseudo.crf.bilateral_sxy=1e1", "classifier.input_size=[6.4e1, 64]"])
    assert cfg.pseudo.crf.bilateral_sxy == 10.0 and cfg.classifier.input_size == [64, 64]
    cfg = load_config(write(tmp_path, "pseudo: {crf: {bilateral_sxy: auto}}\ncam: {tile_size: auto}\n"))
    assert cfg.pseudo.crf.bilateral_sxy == "auto" and cfg.cam.tile_size == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classifier: {epochs: 1.5}\n", r"classifier.epochs: expected an integer, got 1.5"),
        ("classifier: {max_pixels: 1.5e3x}\n", r"classifier.max_pixels: expected an integer, got '1.5e3x'"),
        ("classifier: {lr: nan}\n", r"classifier.lr: expected a finite number, got 'nan'"),
        ("classifier: {lr: .nan}\n", r"classifier.lr: expected a finite number, got nan"),
        ("classifier: {lr: .inf}\n", r"classifier.lr: expected a finite number, got inf"),
        ("dataset: {mask_threshold: 1.5}\n", r"dataset.mask_threshold: expected an integer, got 1.5"),
        ("pseudo: {crf: {bilateral_sxy: nan}}\n", r"pseudo.crf.bilateral_sxy: invalid value 'nan'.*or auto"),
    ],
)
def test_non_integral_and_non_finite_numbers_are_refused(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", "a\\b"])
def test_run_name_must_be_a_plain_folder_name(tmp_path: Path, name: str):
    with pytest.raises(ConfigError, match=r"^run.name: invalid value .*use --run-dir for another location"):
        load_config(None, [f"run.name={name}"])
    with pytest.raises(ConfigError, match=r"^run.name: invalid value"):
        load_config(write(tmp_path, f"run: {{name: {json.dumps(name)}}}\n"))
    assert load_config(None, ["run.name=my-run.v2"]).run.name == "my-run.v2"


def _numeric(tp: object) -> bool:
    if tp in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(tp))  # unions and list items


def test_every_numeric_setting_declares_its_range():
    """A new numeric setting without a declared range (``_num``) fails here."""
    missing, checked = [], 0

    def walk(obj: object, prefix: str) -> None:
        nonlocal checked
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key, value = f"{prefix}.{f.name}" if prefix else f.name, getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, key)
            elif _numeric(hints[f.name]):
                checked += 1
                if not isinstance(f.metadata.get("check"), Range):
                    missing.append(key)
                elif not f.metadata["check"].accepts(value):
                    missing.append(f"{key} (its default {value!r} is out of its own range)")

    walk(Config(), "")
    assert checked > 100 and not missing, missing


def test_cli_refuses_an_out_of_range_setting_before_any_stage_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    args = ["run-stage", "train-classifier", "--config", str(write(tmp_path, "run: {name: r}\n"))]
    r = CliRunner().invoke(cli, [*args, "--set", "classifier.epochs=0"])
    assert r.exit_code == 2 and "classifier.epochs: invalid value 0" in r.output
    r = CliRunner().invoke(cli, [*args, "--run-dir", str(tmp_path / "run"), "--set", "classifier.epochs=0"])
    assert r.exit_code == 2 and "classifier.epochs" in r.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "run").exists()  # no run folder, no stage folder
