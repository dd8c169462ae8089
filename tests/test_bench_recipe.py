"""The recipe benchmark's seeds (bench/recipe.py): run folders, the settings each run gets, the seed spread."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("recipe", Path(__file__).parents[1] / "bench" / "recipe.py")
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)


def test_each_fold_and_seed_gets_its_own_run_folder_and_seed_setting():
    args = recipe.parse_args(
        ["--config", "c.yaml", "--out", "o", "--variant", "ema", "--set", "segmenter.ema_epochs=2", "--seeds", "0,1"]
    )
    assert recipe.run_name(args, "0", "1") == "fold0-ema-s1"
    assert recipe.run_name(args, "", "") == "run-ema"
    assert recipe.run_sets(args, "2", "1") == ["prepare.split.fold=2", "run.seed=1", "segmenter.ema_epochs=2"]
    one_stage = recipe.parse_args(["--config", "c.yaml", "--out", "o", "--seeds", "3", "--seed-key", "segmenter.seed"])
    assert recipe.run_sets(one_stage, "", "3") == ["segmenter.seed=3"]
    with pytest.raises(SystemExit):
        recipe.parse_args(["--config", "c.yaml", "--out", "o", "--seed-key", "segmenter.epochs"])


def test_the_seed_spread_is_the_mean_over_folds_of_each_folds_range():
    values = [("0", "0", 0.40), ("0", "1", 0.46), ("0", "2", 0.43), ("1", "0", 0.30), ("1", "1", 0.32)]
    assert recipe.spread(values) == pytest.approx((0.06 + 0.02) / 2)
    assert math.isnan(recipe.spread([("0", "0", 0.4), ("1", "0", 0.5)]))  # one seed per fold: no spread
