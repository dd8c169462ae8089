"""The epoch loop every trainer shares (the classifier's and the segmenter's): train, validate, keep the best epoch,
checkpoint, stop early, and resume a killed run exactly where it stopped, by one rule.

Each epoch appends a row (``epoch``, ``lr``, the training and validation figures) to ``metrics.csv`` and writes
``checkpoints/last.pt`` (model, optimizer, schedule, epoch, the best selection key so far, its epoch and the count
of epochs without improvement, and the weight average's state when the trainer keeps one). With ``baseline`` the
weights it starts from are validated first, as epoch -1. An epoch whose selection key beats the best so far is saved as the model
(``save_best``); after ``patience`` epochs without one the loop stops (0 = never). With ``val_every`` k > 1 only
every k-th epoch and the last are validated (validation is a large share of a short run's time): the others leave
the validation columns empty, cannot become the best and count toward ``patience`` (the loop stops only after a
validated epoch). Under DDP only rank 0 writes, and every rank meets at a barrier after each epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wsss import distributed as dist
from wsss.errors import StageError
from wsss.progress import progress
from wsss.train.average import WeightAverage
from wsss.train.checkpoint import load_checkpoint, read_metrics, save_checkpoint, write_metrics

METRICS_FILE = "metrics.csv"
CHECKPOINT = Path("checkpoints") / "last.pt"
NO_KEY = [float("-inf"), float("-inf")]  # below any selection key


def train_pass(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    step: Callable[[dict[str, Any]], dict[str, float]],
    desc: str,
) -> dict[str, float]:
    """One epoch's pass over ``loader``: ``step(batch)``'s figures averaged over images, images/s (all ranks
    together) and seconds; then ``model``'s BatchNorm statistics made identical on every rank before validation."""
    sums: dict[str, float] = {}
    n_images, t0 = 0, time.perf_counter()
    for batch in progress(loader, desc=desc, total=len(loader), unit="batch"):  # type: ignore[arg-type]
        for k, v in step(batch).items():
            sums[k] = sums.get(k, 0.0) + v * len(batch["image"])
        n_images += len(batch["image"])
    seconds = time.perf_counter() - t0
    dist.sync_buffers(model)
    return {k: v / max(1, n_images) for k, v in sums.items()} | {
        "images_per_s": n_images * dist.world_size() / seconds,
        "seconds": seconds,
    }


@dataclass
class LoopState:
    """Where the loop stands: the next epoch, the best key and its epoch, epochs without improvement, the rows."""

    start: int = 0
    best: list[float] = field(default_factory=lambda: list(NO_KEY))
    best_epoch: int = -1
    bad: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Loop:
    """One trainer's loop. ``key(row, epoch)`` ranks epochs (larger is better, compared as lists); ``describe(row,
    best_epoch)`` is the epoch's log line; ``stop_message`` is logged when patience runs out."""

    out: Path
    epochs: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_epoch: Callable[[int], dict[str, float]]
    validate: Callable[[], dict[str, float]]
    key: Callable[[dict[str, float], int], list[float]]
    save_best: Callable[[int], None]
    columns: Sequence[str]
    describe: Callable[[dict[str, float], int], str]
    patience: int = 0
    val_every: int = 1
    stop_message: str = "early stop: no better validation figure"
    echo: Callable[[str], None] = print
    average: WeightAverage | None = None  # checkpointed and resumed with the model
    # validate the weights it starts from before the first epoch, as epoch -1: a fine-tuning whose epochs all
    # validate worse keeps the model it was given (a review round never ends below where it started)
    baseline: bool = False

    def resume(self) -> LoopState:
        """The state of ``out/checkpoints/last.pt`` loaded into the model, optimizer and schedule (a fresh state
        without one). Checkpoints written before the best key was recorded resume as if no epoch had been best."""
        state = load_checkpoint(self.out / CHECKPOINT)
        if state is None:
            return LoopState()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.average is not None:
            if "average" not in state:
                raise StageError(
                    self.out / CHECKPOINT,
                    "the checkpoint holds no weight average, but the settings ask for one",
                    "re-run the stage with --force (its settings changed since the checkpoint was written)",
                )
            self.average.load_state_dict(state["average"])
        start = int(state["epoch"]) + 1
        rows = [r for r in read_metrics(self.out / METRICS_FILE) if int(float(r["epoch"])) < start]
        self.echo(f"resuming after epoch {start}")
        return LoopState(
            start,
            list(state.get("best", NO_KEY)),
            int(state.get("best_epoch", -1)),
            int(state.get("bad_epochs", 0)),
            rows,
        )

    def validates(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is validated: every ``val_every``-th epoch and the last one."""
        return (epoch + 1) % max(1, self.val_every) == 0 or epoch == self.epochs - 1

    def run(self) -> LoopState:
        """Train from where the checkpoint left off (or from the start) to the last epoch or an early stop."""
        st = self.resume()
        if self.baseline and st.start == 0:
            row = self.validate()
            key = self.key(row, -1)
            if key > st.best:
                st.best, st.best_epoch = key, -1
                if dist.is_main():
                    self.save_best(-1)
            figures = ", ".join(f"{k} {v:.4f}" for k, v in row.items())
            self.echo(f"before training (the weights it starts from): {figures}")
        for epoch in range(st.start, self.epochs):
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]} | self.train_epoch(epoch)
            validated = self.validates(epoch)
            if validated:
                row |= self.validate()
            st.rows.append(row)
            key = self.key(row, epoch) if validated else None
            if key is not None and key > st.best:
                st.best, st.best_epoch, st.bad = key, epoch, 0
                if dist.is_main():
                    self.save_best(epoch)
            else:
                st.bad += 1
            if dist.is_main():
                write_metrics(self.out / METRICS_FILE, st.rows, self.columns)
                state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
                state |= {"scheduler": self.scheduler.state_dict(), "epoch": epoch, "best": st.best}
                if self.average is not None:
                    state["average"] = self.average.state_dict()
                save_checkpoint(self.out / CHECKPOINT, state | {"best_epoch": st.best_epoch, "bad_epochs": st.bad})
            self.echo(self.describe(row, st.best_epoch))
            dist.barrier()
            if validated and self.patience > 0 and st.bad >= self.patience:
                self.echo(f"{self.stop_message} for {st.bad} epochs")
                break
        return st
