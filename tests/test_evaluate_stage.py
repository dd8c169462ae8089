"""The `evaluate` stage in a pipeline, the `wsss evaluate` command, and `wsss demo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toy_stages  # noqa: F401  (registers toy-oracle, a test-only mask writer)
from click.testing import CliRunner

from wsss.cli import cli


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    (tmp_path / "pipe.yaml").write_text("stages: [prepare, toy-oracle, evaluate]\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"run: {{name: t, pipeline: {tmp_path / 'pipe.yaml'}}}\n"
        "dataset: {kind: synthetic, synthetic: {n_ok: 12, n_defect: 12, size: 64}}\n"
        "evaluate: {split: all}\n"
    )
    return cfg


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_pipeline_evaluates_the_last_mask_stage(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert r.exit_code == 0, r.output
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert report["n_images"] == 24 and report["n_defective"] == 12
    assert report["miou_def"] == 1.0 and report["ap"] == 1.0 and report["seg_recall@0.5"] == 1.0
    assert (run_dir / "evaluate" / "per_image.csv").read_text().count("\n") == 25
    assert "| AP | 100.00% |" in (run_dir / "evaluate" / "report.md").read_text()


def test_evaluate_command_on_a_masks_folder(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("TOY_EMPTY", "1")
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir), "--to", "toy-oracle")
    out = tmp_path / "report"
    r = invoke(
        "evaluate",
        "--index",
        str(run_dir / "prepare" / "index.csv"),
        "--masks",
        str(run_dir / "toy-oracle" / "masks"),
        "--scores",
        str(run_dir / "toy-oracle" / "scores.csv"),
        "--split",
        "all",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["miou_def"] == 0.0 and report["seg_miou"] == 0.0 and report["ap"] == 1.0


def test_evaluate_command_errors(tmp_path: Path, prepared_run: Path):
    r = CliRunner().invoke(cli, ["evaluate", "--index", str(tmp_path / "none.csv"), "--masks", str(tmp_path)])
    assert r.exit_code == 1 and "none.csv: index file not found" in r.stderr
    index = str(prepared_run / "prepare" / "index.csv")
    r = CliRunner().invoke(cli, ["evaluate", "--index", index, "--masks", str(tmp_path / "nomasks")])
    assert r.exit_code == 2 and "nomasks: masks folder not found" in r.stderr
    r = CliRunner().invoke(cli, ["evaluate", "--index", index, "--masks", str(tmp_path)])  # empty folder
    assert r.exit_code == 1 and "5 of 5 indexed images have no predicted mask" in r.stderr


def test_evaluate_needs_a_mask_stage():
    r = CliRunner().invoke(
        cli,
        [
            "run-stage",
            "evaluate",
            "--config",
            str(Path(__file__).parents[1] / "configs" / "demo.yaml"),
            "--set",
            "evaluate.masks=prepare",
        ],
    )
    assert r.exit_code == 2 and "'prepare' is not a stage that writes masks" in r.stderr


def test_demo_runs_every_stage(tmp_path: Path):
    r = invoke(
        "demo",
        "--run-dir",
        str(tmp_path / "demo"),
        "--set",
        "dataset.synthetic.n_ok=8",
        "--set",
        "dataset.synthetic.n_defect=8",
        "--set",
        "classifier.backbone.name=test_resnet",
        "--set",
        "classifier.backbone.weights=null",
        "--set",
        "classifier.epochs=1",
        "--set",
        "classifier.input_size=[64, 64]",
    )
    assert r.exit_code == 0, r.output
    assert "prepare: done" in r.output and "| train |" in r.output and "train-classifier: done" in r.output
    for stage in ("prepare", "train-classifier"):
        assert (tmp_path / "demo" / stage / "manifest.json").is_file()
    # every mask-writing stage side by side, so the final row can be read against the pseudo-masks it learned from
    summary = r.output[r.output.index("## Every mask-writing stage (test split)") :]
    for stage in ("pseudo-labels", "retrain", "train-segmenter"):
        assert f"| {stage} | " in summary
