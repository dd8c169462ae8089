"""How long a recipe will run on this machine, before it runs: `wsss init` prints it.

Each stage's cost is counted in the units it spends its time on, and each unit is timed once here, on this
machine, at the recipe's sizes (a few seconds in all):

- a training step of each trained network (the classifier at its input, the retrain round's and the segmenter's
  networks at their training windows), per image, forward and backward with the recipe's frozen stages;
- an inference forward of each at its full input (validation, CAMs, predictions), per image;
- one dense CRF on an image of the median size, at the recipe's iterations.

A stage's estimate is then its count of each unit (epochs x training images, validation images per epoch, CAM
views: flips, scales, tiles and IEM's rounds on the images called defective, CRFs on those images) times the unit's
time. Data loading, augmentation and writing are not timed: the estimate is a lower bound of the order of the real
time, and early stopping makes it an upper one for the trained stages. docs/usage.md compares it with measured runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wsss.cam.consistency import CONSISTENCY_IMAGES
from wsss.config.tree import Config
from wsss.models.compile import channels_last_input, output_tensors, to_channels_last
from wsss.refine.crf import dense_crf
from wsss.train.classifier import build_dfc
from wsss.train.sampling import epoch_steps
from wsss.train.schedule import epochs_for_steps
from wsss.train.segmenter import build_segmenter

REPEATS = 2  # timed repetitions of each unit after one warm-up (the median is kept)
CRF_WINDOW = 512 * 512  # the CRF is timed on at most this many pixels
TIMING_BATCH = 2  # images per timed batch (per-image cost on a CPU barely depends on the batch)


@dataclass
class Counts:
    """What the estimate counts: images per split and how many are called defective."""

    train: int
    val: int
    test: int
    defective: float  # fraction of all images called defective (the CAM's IEM rounds and the CRF run on them)

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


def _median_seconds(fn: Callable[[], None]) -> float:
    fn()  # warm-up: allocations, kernels' first calls
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _net_seconds(
    model: torch.nn.Module, size: tuple[int, int], chans: int, train: bool, channels_last: bool = True
) -> float:
    """Seconds per image of a training step (``train``) or an inference forward of ``model`` at ``size``, in the
    memory format the stage runs it in."""
    model = to_channels_last(model, channels_last)
    x = channels_last_input(torch.randn(TIMING_BATCH, chans, *size), channels_last)

    def step() -> None:
        if train:
            model.train()
            out = model(x)
            sum(t.float().mean() for t in output_tensors(out) if t.requires_grad).backward()
            model.zero_grad(set_to_none=True)
        else:
            model.eval()
            with torch.no_grad():
                model(x)

    return _median_seconds(step) / TIMING_BATCH


def _crf_seconds(cfg: Config, size: tuple[int, int], chans: int) -> float:
    """Seconds of one dense CRF on an image of ``size``: timed on a window of at most :data:`CRF_WINDOW` pixels and
    scaled by the pixel count (the mean field is linear in it), at the recipe's ``pseudo.crf.scale``."""

    s = min(1.0, math.sqrt(CRF_WINDOW / (size[0] * size[1])))
    h, w = max(8, round(size[0] * s)), max(8, round(size[1] * s))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, chans) if chans == 3 else (h, w), dtype=np.uint8)
    probs = rng.random((2, h, w)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    return _median_seconds(lambda: dense_crf(image, probs, cfg.pseudo.crf)) * (size[0] * size[1]) / (h * w)


def _window(section) -> tuple[int, int]:
    crop = list(getattr(section, "crop", [0, 0]) or [0, 0])
    return tuple(crop) if crop[0] > 0 and crop[1] > 0 else tuple(section.input_size)  # type: ignore[return-value]


def unit_seconds(cfg: Config, chans: int, median: tuple[int, int], classes: int = 1) -> dict[str, float]:
    """The timed units (seconds per image) of a resolved config (no ``auto`` left), on this machine."""

    torch.manual_seed(0)
    dfc = build_dfc(cfg.classifier, classes, chans)
    size = tuple(cfg.classifier.input_size)
    units = {
        "classifier_step": _net_seconds(dfc, size, chans, train=True, channels_last=cfg.classifier.channels_last),
        "classifier_forward": _net_seconds(dfc, size, chans, train=False, channels_last=cfg.cam.channels_last),
    }
    for section in ("retrain", "segmenter"):
        scfg = getattr(cfg, section)
        net = build_segmenter(scfg, classes, chans, section=section)
        units[f"{section}_step"] = _net_seconds(net, _window(scfg), chans, True, scfg.channels_last)
        units[f"{section}_forward"] = _net_seconds(net, tuple(scfg.input_size), chans, False, scfg.channels_last)
    units["crf"] = _crf_seconds(cfg, median, chans)
    return units


def stage_seconds(cfg: Config, counts: Counts, units: dict[str, float], median: tuple[int, int]) -> dict[str, float]:
    """Each stage's estimated seconds from its counts of the timed ``units``."""
    c, n = cfg, counts
    called = n.defective * n.total
    # every window as is; flipped left-right and up-down only where it may be defective (cam.flip_floor: counted as
    # the images called defective)
    flipped = 2 if c.cam.flips else 0
    flip_share = 1.0 if c.cam.flip_floor <= 0 else n.defective
    tiles = 1
    if c.cam.tile_size and c.cam.tile_size[0] > 0:  # overlapping windows over the median image
        step = [max(1.0, t * (1 - c.cam.tile_overlap)) for t in c.cam.tile_size]
        tiles = math.prod(max(1, math.ceil((m - t) / s) + 1) for m, t, s in zip(median, c.cam.tile_size, step))
    iem = c.cam.iem.rounds if c.cam.iem.enabled else 0
    views = len(c.cam.scales) * (1 + flipped * flip_share)  # per image, on average
    cam = units["classifier_forward"] * tiles * (views * n.total + len(c.cam.scales) * (1 + flipped) * iem * called)
    crf_workers = max(1, min(c.pseudo.workers or torch.get_num_threads(), torch.get_num_threads()))
    # a seed ensemble trains each member; the flip-consistent pick scores each on (at most CONSISTENCY_IMAGES of) the
    # defective training images and their two flips, and the cam stage then runs the kept member alone
    members = c.classifier.ensemble
    picked = members > 1 and c.classifier.ensemble_pick == "flip-consistent"
    one = c.classifier.epochs * (n.train * units["classifier_step"] + n.val * units["classifier_forward"])
    scored = min(n.train * n.defective, CONSISTENCY_IMAGES) * 3 * units["classifier_forward"] if picked else 0.0
    out = {
        "train-classifier": members * (one + scored),
        "cam": cam * (1 if picked else members),
        "pseudo-labels": called * units["crf"] / crf_workers,
    }
    for section, stage in (("retrain", "retrain"), ("segmenter", "train-segmenter")):
        s = getattr(c, section)
        rounds = getattr(s, "rounds", 1)
        epochs = epochs_for_steps(s.epochs, epoch_steps(n.train, s.batch_size), s.min_steps)  # as the trainer
        per_round = epochs * (n.train * units[f"{section}_step"] + n.val * units[f"{section}_forward"])
        out[stage] = rounds * (per_round + n.total * units[f"{section}_forward"])  # then it predicts every image
    out["retrain"] += called * units["crf"] / crf_workers  # the relabelling's CRF
    return out


def lines(seconds: dict[str, float]) -> list[str]:
    """What `wsss init` prints: the total, then each stage."""
    total = sum(seconds.values())
    head = f"expected wall time on this machine: about {_fmt(total)} (the timed network and CRF work alone; "
    head += "loading and writing add to it, early stopping takes from it)"
    return [head, "  " + ", ".join(f"{k} {_fmt(v)}" for k, v in seconds.items())]


def _fmt(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
