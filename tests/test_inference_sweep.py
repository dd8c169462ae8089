"""The inference-settings sweep (bench/inference_sweep.py) on the tiny full run's segmenter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "inference_sweep", Path(__file__).parents[1] / "bench" / "inference_sweep.py"
)
inference_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inference_sweep)


def test_settings_parse_to_predictor_overrides_and_bad_ones_name_the_fix():
    assert inference_sweep.parse_setting("recorded:") == ("recorded", {})
    assert inference_sweep.parse_setting("f:flips=TRUE,threshold=0.3") == ("f", {"flips": True, "threshold": 0.3})
    for bad, said in (("x:radius=2", "unknown key"), ("x:flips=maybe", "not a valid value"), (":flips=true", "name")):
        with pytest.raises(SystemExit, match=said):
            inference_sweep.parse_setting(bad)


def test_each_setting_re_predicts_the_split_and_a_gate_of_one_empties_every_mask(full_run, tmp_path, capsys):
    run_dir, _ = full_run
    recorded = inference_sweep.measure(run_dir, "train-segmenter", "test", "recorded", {}, tmp_path)
    again = inference_sweep.measure(run_dir, "train-segmenter", "test", "again", {}, tmp_path)
    flips = inference_sweep.measure(run_dir, "train-segmenter", "test", "flips", {"flips": True}, tmp_path)
    closed = inference_sweep.measure(run_dir, "train-segmenter", "test", "closed", {"threshold": 1.0}, tmp_path)
    # predicting twice with the recorded setting gives the same figures
    assert recorded["miou_def"] == again["miou_def"] and recorded["pixel_ap"] == again["pixel_ap"]
    assert closed["miou_def"] == 0.0  # every mask gated off
    assert flips["pixel_ap"] != recorded["pixel_ap"]  # the three views' mean is another map
    assert (tmp_path / run_dir.name / "flips" / "masks").is_dir() and recorded["img/s"] > 0
    inference_sweep.main([str(run_dir), "--out", str(tmp_path / "cli"), "--split", "test", "--setting", "recorded:"])
    assert f"| {run_dir.name} | recorded |" in capsys.readouterr().out
