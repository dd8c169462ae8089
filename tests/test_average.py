"""The weights' moving average (segmenter.ema_epochs), the last-epoch selection (segmenter.select) and stage seeds."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch
from test_segmenter import make_data, rcfg

from wsss.config import Config, SegmenterConfig, SegTrainConfig, load_config
from wsss.errors import ConfigError
from wsss.models.segmenter import load_segmenter
from wsss.train.average import WeightAverage
from wsss.train.segmenter import SegmenterTrainer
from wsss.train.segmenter_data import SegmenterData


def test_the_average_is_the_plain_mean_until_the_horizon_then_exponential():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    avg = WeightAverage(model, horizon=4)
    seen = []
    for step in range(1, 9):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
            model[1].num_batches_tracked.fill_(step)
        avg.update(model)
        seen.append(float(step))
        got = float(avg.module[0].weight[0, 0])
        if step <= 4:  # the mean of every weight so far
            assert got == pytest.approx(sum(seen) / len(seen))
    # after the horizon: each step moves a quarter of the way toward the new weights
    expect = sum(seen[:4]) / 4
    for v in seen[4:]:
        expect += 0.25 * (v - expect)
    assert float(avg.module[0].weight[0, 0]) == pytest.approx(expect)
    assert int(avg.module[1].num_batches_tracked) == 8  # integer buffers are copied, not averaged
    assert not any(p.requires_grad for p in avg.module.parameters()) and not avg.module.training
    again = WeightAverage(model, horizon=4)
    again.load_state_dict(avg.state_dict())
    assert again.updates == 8 and torch.equal(again.module[0].weight, avg.module[0].weight)
    with pytest.raises(ValueError, match="horizon"):
        WeightAverage(model, horizon=0.5)


def _trainer(tmp_path: Path, out: str, **kw) -> SegmenterTrainer:
    rows, masks, _ = make_data(tmp_path, n_defect=8, n_ok=4, seed=3)
    val = [dataclasses.replace(r, split="val") for r in rows[::4]]
    train = [r for i, r in enumerate(rows) if i % 4]
    shared = {f.name: getattr(rcfg(epochs=4), f.name) for f in dataclasses.fields(SegTrainConfig)}
    cfg = SegmenterConfig(**shared | kw)
    return SegmenterTrainer(cfg, SegmenterData(train, masks, ["defect"], 1, val_rows=val), tmp_path / out, device="cpu", echo=lambda *_: None, patience=1, section="segmenter")  # fmt: skip


def test_select_last_trains_every_epoch_and_keeps_the_average(tmp_path: Path):
    trainer = _trainer(tmp_path, "last", select="last", ema_epochs=1.0)
    summary = trainer.fit()
    assert summary["epochs_run"] == 4 and summary["best_epoch"] == 3  # patience 1 did not stop it
    with open(tmp_path / "last" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    model, _ = load_segmenter(tmp_path / "last")
    saved = model.state_dict()
    for name, avg in trainer.average.module.state_dict().items():  # the average was saved, not the raw weights
        assert torch.equal(saved[name], avg), name
    raw = trainer.model.state_dict()
    assert any(not torch.equal(raw[n], v) for n, v in saved.items() if v.dtype.is_floating_point)


def test_a_killed_run_resumes_its_average_exactly(tmp_path: Path):
    whole = _trainer(tmp_path, "whole", select="last", ema_epochs=2.0)
    whole.fit()
    killed = _trainer(tmp_path, "killed", select="last", ema_epochs=2.0)
    killed.scfg = dataclasses.replace(killed.scfg, epochs=2)  # "killed" after two epochs: its checkpoint stays
    from wsss.train.loop import CHECKPOINT, Loop

    Loop(
        killed.out, 2, killed.model, killed.optimizer, killed.scheduler, killed.train_epoch, killed.validate,
        killed._selection_key, lambda e: None, ("epoch",), lambda r, b: "", echo=lambda *_: None,
        average=killed.average,
    ).run()  # fmt: skip
    assert (killed.out / CHECKPOINT).is_file()
    resumed = _trainer(tmp_path, "killed", select="last", ema_epochs=2.0)
    resumed.fit()
    assert resumed.average.updates == whole.average.updates
    a, _ = load_segmenter(tmp_path / "whole")
    b, _ = load_segmenter(tmp_path / "killed")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name


def test_validation_scores_the_average_not_the_raw_weights(tmp_path: Path):
    trainer = _trainer(tmp_path, "val", ema_epochs=1.0)
    before = trainer.validate()
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p))  # the raw weights move; the average has not seen them
    assert trainer.validate() == before
    plain = _trainer(tmp_path, "plain")
    start = plain.validate()
    with torch.no_grad():
        for p in plain.model.parameters():
            p.add_(torch.randn_like(p))
    assert plain.validate()["val_loss"] != start["val_loss"]


def test_a_stage_seed_overrides_the_run_seed_for_that_stage_only():
    cfg = load_config(None, ["run.seed=3", "segmenter.seed=7"])
    assert (cfg.seed("classifier"), cfg.seed("retrain"), cfg.seed("segmenter")) == (3, 3, 7)
    assert Config().seed("segmenter") == 0
    with pytest.raises(ConfigError, match="segmenter.seed"):
        load_config(None, ["segmenter.seed=-1"])
    with pytest.raises(ConfigError, match="segmenter.ema_epochs"):
        load_config(None, ["segmenter.ema_epochs=-1"])
    with pytest.raises(ConfigError, match="segmenter.select"):
        load_config(None, ["segmenter.select=best"])
