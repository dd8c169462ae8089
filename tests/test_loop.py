"""The shared epoch loop (wsss/train/loop.py): which epochs are validated, best-epoch keeping, early stops, resume."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from wsss.train.checkpoint import read_metrics
from wsss.train.loop import METRICS_FILE, Loop

COLUMNS = ["epoch", "lr", "loss", "val_score"]


def make_loop(out: Path, scores: list[float], epochs: int, val_every: int = 1, patience: int = 0):
    """A loop over a one-weight model whose validation returns ``scores`` in turn; records what it was asked to do."""
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    calls: dict[str, list[int]] = {"train": [], "validate": [], "saved": []}
    pending = iter(scores)

    def train_epoch(epoch: int) -> dict[str, float]:
        calls["train"].append(epoch)
        return {"loss": 1.0 / (epoch + 1)}

    def validate() -> dict[str, float]:
        calls["validate"].append(calls["train"][-1])
        return {"val_score": next(pending)}

    loop = Loop(
        out, epochs, model, optimizer, scheduler, train_epoch, validate,
        key=lambda row, epoch: [row["val_score"]], save_best=calls["saved"].append, columns=COLUMNS,
        describe=lambda row, best: "", patience=patience, val_every=val_every, echo=lambda *_: None,
    )  # fmt: skip
    return loop, calls


def test_every_epoch_is_validated_by_default(tmp_path: Path):
    loop, calls = make_loop(tmp_path, [0.1, 0.3, 0.2], epochs=3)
    st = loop.run()
    assert calls["validate"] == [0, 1, 2] and calls["saved"] == [0, 1] and st.best_epoch == 1


def test_val_every_validates_every_kth_epoch_and_the_last(tmp_path: Path):
    loop, calls = make_loop(tmp_path, [0.5, 0.4, 0.6], epochs=7, val_every=3)
    st = loop.run()
    assert calls["train"] == list(range(7)) and calls["validate"] == [2, 5, 6]
    assert calls["saved"] == [2, 6] and st.best_epoch == 6  # a skipped epoch is never kept as the best
    rows = read_metrics(tmp_path / METRICS_FILE)
    assert [int(float(r["epoch"])) for r in rows] == list(range(7))
    skipped = [math.isnan(float(r["val_score"])) for r in rows]  # empty cells, read back as nan
    assert skipped == [True, True, False, True, True, False, False]


def test_patience_counts_skipped_epochs_but_stops_only_after_a_validation(tmp_path: Path):
    # patience 2 < val_every 3: without the rule the loop would stop at epoch 1, before any validation
    loop, calls = make_loop(tmp_path, [0.5, 0.4, 0.3, 0.2], epochs=12, val_every=3, patience=2)
    st = loop.run()
    assert calls["validate"] == [2, 5] and st.best_epoch == 2 and calls["train"][-1] == 5


def test_a_killed_loop_resumes_after_its_last_epoch_with_the_skipped_columns_empty(tmp_path: Path):
    first, calls = make_loop(tmp_path, [0.5], epochs=4, val_every=2)
    first.epochs = 2  # stands for a run killed after its second epoch (its checkpoint written)
    first.run()
    assert calls["validate"] == [1]
    again, calls = make_loop(tmp_path, [0.7], epochs=4, val_every=2)
    st = again.run()
    assert calls["train"] == [2, 3] and calls["validate"] == [3] and st.best_epoch == 3
    assert len(st.rows) == 4 and math.isnan(float(st.rows[0]["val_score"]))


def test_a_baseline_keeps_the_starting_weights_when_no_epoch_validates_better(tmp_path: Path):
    """A fine-tuning (a review round) validates the weights it starts from first: epochs that all score lower leave
    them as the model; an epoch that scores higher replaces them."""
    loop, calls = make_loop(tmp_path / "worse", [0.6, 0.5, 0.4, 0.55], epochs=3)
    calls["train"].append(-1)  # validate() reads the last trained epoch: the start is "epoch -1"
    loop.baseline = True
    st = loop.run()
    assert calls["validate"] == [-1, 0, 1, 2] and calls["saved"] == [-1] and st.best_epoch == -1
    loop, calls = make_loop(tmp_path / "better", [0.6, 0.7, 0.4], epochs=2)
    calls["train"].append(-1)
    loop.baseline = True
    st = loop.run()
    assert calls["saved"] == [-1, 0] and st.best_epoch == 0
    assert [int(float(r["epoch"])) for r in read_metrics(tmp_path / "better" / METRICS_FILE)] == [0, 1]
