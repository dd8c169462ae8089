"""bench/segmenter_epochs.py on the tiny full run: every epoch scored by each judge beside the ground truth."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conftest import FAST

BENCH = Path(__file__).parents[1] / "bench"


def test_every_epoch_is_scored_by_each_judge_and_the_ground_truth(full_run, tmp_path: Path, capsys):
    run_dir, _ = full_run
    spec = importlib.util.spec_from_file_location("segmenter_epochs", BENCH / "segmenter_epochs.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("run: {name: tiny}\n")
    sets = [a for kv in FAST for a in ("--set", kv)]
    bench.main(["--config", str(recipe), "--run", str(run_dir), "--out", str(tmp_path / "out"), *sets])
    rows = json.loads((tmp_path / "out" / "epochs.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # segmenter.epochs of the tiny recipe, each trained
    for r in rows:
        for key in ("img AP", "calls", "val GT", "test GT"):
            assert 0.0 <= r[key] <= 1.0, (key, r)
        assert r["OK px"] >= 0.0
    out = capsys.readouterr().out
    for judge in ("| pseudo |", "| img AP |", "| calls |", "| OK px |", "| last | 4 |"):
        assert judge in out
    assert not (run_dir / "train-segmenter" / "epoch1").exists()  # nothing written into the run
