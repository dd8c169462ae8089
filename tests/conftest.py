"""Shared fixtures: the synthetic defect set, generated once per test session (like anomalib's dummy data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wsss.config import SyntheticConfig, load_config
from wsss.data.synthetic import generate

os.environ.setdefault("WSSS_PROGRESS", "0")

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
