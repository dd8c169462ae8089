"""Shared fixtures: the synthetic defect set, generated once per test session (like anomalib's dummy data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wsss.config import SyntheticConfig, load_config
from wsss.data.synthetic import generate

os.environ.setdefault("WSSS_PROGRESS", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests run whenever CUDA is there; without it they are skipped, and ``-ra`` prints why."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY = {"n_ok": 12, "n_defect": 12, "size": 64, "seed": 0}


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset on disk (12 OK + 12 defective, 64 px); returns its ``labels.csv``."""
    return generate(tmp_path_factory.mktemp("synthetic"), SyntheticConfig(**TINY))


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose `prepare` stage has indexed the tiny synthetic set (all splits populated)."""
    from wsss.runs import Run

    overrides = [f"dataset.synthetic.{k}={v}" for k, v in TINY.items()]
    run_dir = tmp_path_factory.mktemp("run")
    Run(run_dir, load_config(None, overrides), echo=lambda *_: None).run_stage("prepare")
    return run_dir


# The whole method on the tiny set with tiny models: every stage runs, in seconds (tests/test_retrain.py and
# tests/test_train_segmenter.py share one run).
TINY_CLASSIFIER = [  # a DFC that trains in seconds, and single-scale CAMs gated low enough for it
    "classifier.backbone.name=test_resnet",
    "classifier.backbone.weights=null",
    "classifier.input_size=[64, 64]",
    "classifier.epochs=3",
    "classifier.batch_size=8",
    "classifier.clm.dim=16",
    "classifier.clm.hidden=32",
    "cam.scales=[1.0]",
    "cam.score_threshold=0.3",
    "run.device=cpu",
]
FAST = [
    *[f"dataset.synthetic.{k}={v}" for k, v in TINY.items()],
    *TINY_CLASSIFIER,
    "cam.iem.rounds=1",
    "pseudo.workers=2",
    "pseudo.crf.iterations=3",
    "retrain.backbone.name=test_resnet",
    "retrain.backbone.weights=null",
    "retrain.input_size=[64, 64]",
    "retrain.epochs=2",
    "retrain.rounds=2",
    "retrain.batch_size=8",
    "segmenter.backbone.name=test_resnet",
    "segmenter.backbone.weights=null",
    "segmenter.input_size=[64, 64]",
    "segmenter.decoder_channels=16",
    "segmenter.epochs=4",
    "segmenter.batch_size=8",
]


@pytest.fixture(scope="session")
def full_run(prepared_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run folder where the `full` pipeline (every stage of the method) has run on the tiny set; and its config."""
    import shutil

    from wsss.config.pipelines import load_pipeline
    from wsss.runs import Run

    run_dir = tmp_path_factory.mktemp("full")
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    cfg = load_config(None, FAST)
    Run(run_dir, cfg, echo=lambda *_: None).run_pipeline(list(load_pipeline("full").stages))
    return run_dir, cfg


@pytest.fixture
def review_run(full_run, tmp_path: Path) -> Path:
    """A copy of the tiny full run (what import-review reads and writes), so imports do not touch the shared run."""
    import shutil

    run_dir, _ = full_run
    dst = tmp_path / "run"
    for stage in ("prepare", "cam", "retrain", "evaluate"):
        shutil.copytree(run_dir / stage, dst / stage)
    return dst
