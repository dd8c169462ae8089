"""The paired run comparison (bench/compare_runs.py) on toy per-image IoUs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("compare_runs", Path(__file__).parents[1] / "bench" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def test_paired_counts_moves_beyond_the_margin_and_the_mean_without_the_largest():
    base = {"a": 0.0, "b": 0.5, "c": 0.5, "d": 0.8}
    variant = {"a": 0.6, "b": 0.505, "c": 0.4, "d": 0.8, "only_here": 1.0}  # an id of one side only is left out
    s = compare_runs.paired(base, variant, margin=1.0)
    assert s["images"] == 4 and s["up"] == 1 and s["down"] == 1  # b moved 0.5 points: within the margin
    assert s["mean"] == pytest.approx((60 + 0.5 - 10 + 0) / 4)
    assert s["mean_without_largest"] == pytest.approx((0.5 - 10 + 0) / 3)  # a's +60 was the largest move


def test_paired_of_nothing_is_undefined_not_zero():
    s = compare_runs.paired({}, {"a": 1.0}, margin=1.0)
    assert s["images"] == 0 and math.isnan(s["mean"])
    one = compare_runs.paired({"a": 0.2}, {"a": 0.4}, margin=1.0)
    assert one["mean"] == pytest.approx(20) and math.isnan(one["mean_without_largest"])


def test_a_malformed_pair_is_refused_naming_it(tmp_path):
    with pytest.raises(SystemExit, match="BASE:VARIANT"):
        compare_runs.main([str(tmp_path)])
