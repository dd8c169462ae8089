"""`wsss tune`: a review's masks choose the pseudo-labelling settings.

A team has no masked validation split, but after one review it has masks a person drew or accepted
(``RUN/reviewed/masks``, written by `wsss import-review`). Those are the measuring set, and nothing else is read: no
ground truth, no test split. Only reviewed images with a defect pixel are scored (mIoU_def); the reviewer's
``uncertain`` pixels (255) are left out of both sides of each IoU. A rejected image (``reviewed/rejected.txt``) says
only that its mask is wrong, not what is right, so it chooses nothing; it is counted in the report.

The candidates are a grid around the recipe's own values, swept on the run's cached CAMs (the `cam` stage), so no
network runs:

- the pseudo-labelling rule (``pseudo.*``, :func:`wsss.refine.pseudo.label_image`): background prior, the CRF's
  appearance kernel, the fallback core, the margin;
- with a finished `retrain` stage, its relabelling: the fused map's weight and prior (``retrain.fuse_weight``,
  ``retrain.bg_prior``), from one prediction of its segmenter per reviewed image.

Each candidate's mIoU_def on the reviewed images is printed with a bootstrap interval (the images resampled) of its
gain over the recipe's own setting. A candidate is adopted only when that interval lies above zero; the written recipe
(``--out``) changes those settings alone, each with its figure in a comment, and `wsss run` then re-runs the stages
they make stale.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wsss.artifacts.masks import REJECTED_FILE
from wsss.atomic import atomic_write_text
from wsss.cam.gate import read_calls
from wsss.cam.io import read_cam
from wsss.config.edit import changed_recipe_text, set_dotted
from wsss.config.load import is_weights_name, read_yaml, resolve_path
from wsss.config.tree import Config, load_config
from wsss.data.images import read_image
from wsss.data.index import read_train_index
from wsss.errors import ConfigError, StageError
from wsss.evaluation.metrics import iou
from wsss.export.review_import import REVIEWED_DIR
from wsss.inference import torch_predictor
from wsss.labels import IGNORE
from wsss.mask_format import read_mask_png
from wsss.models.segmenter import MODEL_FILE, load_segmenter
from wsss.parallel import pool_size
from wsss.refine.config import PseudoConfig
from wsss.refine.pseudo import label_image
from wsss.runs import Run

BOOTSTRAP = 2000  # resamples of the reviewed images
LEVEL = 0.90  # the interval's coverage: a change is adopted when the lower end of its gain is above zero
SEED = 0


@dataclass
class Item:
    """One reviewed image with a defect: its pixels, its CAM, whether the classifier called it defective, the
    person's mask (bool) and the pixels they left uncertain; ``probs``: the retrain segmenter's defect map."""

    id: str
    image: np.ndarray
    cam: np.ndarray
    called: bool
    truth: np.ndarray
    unsure: np.ndarray
    probs: np.ndarray | None = None


@dataclass(frozen=True)
class Candidate:
    """A set of settings (dotted key -> value) and which rule it changes: ``pseudo`` or ``retrain``."""

    rule: str
    settings: tuple[tuple[str, Any], ...]

    def label(self) -> str:
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.settings)


@dataclass
class Scored:
    candidate: Candidate
    ious: np.ndarray  # per reviewed image
    gain: float = 0.0  # mean IoU gain over the recipe's own setting of the same rule
    low: float = 0.0  # the interval of the gain
    high: float = 0.0

    @property
    def miou(self) -> float:
        return float(self.ious.mean())


def reviewed_items(run_dir: Path, cfg: Config, with_retrain: bool) -> tuple[list[Item], int, int]:
    """The reviewed images with a defect pixel, and the counts of reviewed images without one and of rejected ones."""

    masks_dir = run_dir / REVIEWED_DIR / "masks"
    files = sorted(masks_dir.glob("*.png")) if masks_dir.is_dir() else []
    if not files:
        raise ConfigError(
            masks_dir,
            "no reviewed masks: tune measures the settings on the masks a person drew or accepted",
            "review the run (`wsss export review`), then `wsss import-review ... --run RUN` and tune again",
        )
    for stage in ("prepare", "cam"):
        if not (run_dir / stage / "manifest.json").is_file():
            raise StageError(run_dir / stage, f"the run has no finished {stage} stage", "run `wsss run` first")
    rows = {r.id: r for r in read_train_index(run_dir / "prepare" / "index.csv")}
    calls = read_calls(run_dir / "cam")  # the cam stage's gate (cam.gate)
    predictor = None
    if with_retrain:
        predictor = torch_predictor(*load_segmenter(run_dir / "retrain"))
    items, empty = [], 0
    for f in files:
        if f.stem not in rows:
            continue
        mask = read_mask_png(f, "reviewed mask")
        truth = (mask > 0) & (mask != IGNORE)
        if not truth.any():
            empty += 1
            continue
        row = rows[f.stem]
        image = read_image(row.path, cfg.dataset.high_bit_depth)
        cam = read_cam(run_dir / "cam" / "cams" / f"{row.id}.npz", image.shape[:2])
        probs = predictor([image])[0].probs[1:] if predictor is not None else None
        called = calls.get(row.id, False)
        items.append(Item(row.id, image, cam, called, truth, mask == IGNORE, probs))
    rejected_file = run_dir / REVIEWED_DIR / REJECTED_FILE
    rejected = len(rejected_file.read_text().split()) if rejected_file.is_file() else 0
    return items, empty, rejected


def candidates(cfg: Config, with_retrain: bool) -> tuple[list[Candidate], list[Candidate]]:
    """The grids around the recipe's values; the first candidate of each rule is the recipe itself."""
    p, r = cfg.pseudo, cfg.retrain

    def around(value: float, step: float, lo: float, hi: float) -> list[float]:
        return sorted({round(v, 3) for v in (value - step, value, value + step) if lo < v < hi})

    pseudo_grid = {
        "pseudo.bg_prior": around(p.bg_prior, 0.1, 0.0, 1.0),
        "pseudo.crf.bilateral_compat": sorted({10.0, 40.0, float(p.crf.bilateral_compat)}),
        "pseudo.fallback": sorted({0.0, 0.3, p.fallback}),
        "pseudo.margin": sorted({0, 1, 2, p.margin}),
    }
    own = {
        "pseudo.bg_prior": p.bg_prior,
        "pseudo.crf.bilateral_compat": float(p.crf.bilateral_compat),
        "pseudo.fallback": p.fallback,
        "pseudo.margin": p.margin,
    }
    pseudo = _grid("pseudo", pseudo_grid, own)
    retrain: list[Candidate] = []
    if with_retrain:
        prior = r.bg_prior if r.bg_prior is not None else p.bg_prior
        grid = {"retrain.fuse_weight": sorted({0.5, 1.0, r.fuse_weight}), "retrain.bg_prior": around(prior, 0.1, 0, 1)}
        retrain = _grid("retrain", grid, {"retrain.fuse_weight": r.fuse_weight, "retrain.bg_prior": prior})
    return pseudo, retrain


def _grid(rule: str, grid: dict[str, list], own: dict[str, Any]) -> list[Candidate]:
    keys = list(grid)
    first = Candidate(rule, tuple((k, own[k]) for k in keys))
    rest = [Candidate(rule, tuple(zip(keys, values, strict=True))) for values in itertools.product(*grid.values())]
    return [first, *(c for c in rest if c != first)]


def _config(cfg: Config, c: Candidate) -> PseudoConfig:
    """The labelling rule a candidate describes (the retrain round's: its prior in place of the first round's)."""
    s = dict(c.settings)
    p = dataclasses.replace(cfg.pseudo, workers=1)
    if c.rule == "retrain":
        return dataclasses.replace(p, unary="cam", bg_prior=s["retrain.bg_prior"])
    crf = dataclasses.replace(p.crf, bilateral_compat=s["pseudo.crf.bilateral_compat"])
    return dataclasses.replace(
        p, bg_prior=s["pseudo.bg_prior"], fallback=s["pseudo.fallback"], margin=int(s["pseudo.margin"]), crf=crf
    )


def _iou(item: Item, mask: np.ndarray) -> float:
    """The IoU (:func:`wsss.evaluation.metrics.iou`) of a candidate's mask, the reviewer's uncertain pixels left out
    of both sides; the mask's own ignore pixels count as background, as `evaluate` counts them."""

    keep = ~item.unsure
    return iou((mask > 0) & (mask != IGNORE) & keep, item.truth & keep)


_ITEMS: Sequence[Item] = ()  # each worker process's copy of the reviewed images, sent once (_keep)


def _keep(items: Sequence[Item]) -> None:
    global _ITEMS
    _ITEMS = items


def _score_one(job: tuple[int, PseudoConfig, float | None]) -> float:

    i, pcfg, weight = job
    item = _ITEMS[i]
    cam = item.cam if weight is None else weight * item.probs + (1 - weight) * item.cam
    return _iou(item, label_image(item.image, cam, pcfg, item.called).mask)


def score_all(
    cfg: Config, items: Sequence[Item], cands: Iterable[Candidate], workers: int, echo: Callable[[str], None]
) -> list[Scored]:
    """Every candidate's IoU on every item, the labelling spread over ``workers`` processes."""
    cands = list(cands)
    jobs = [
        (i, _config(cfg, c), dict(c.settings).get("retrain.fuse_weight") if c.rule == "retrain" else None)
        for c in cands
        for i in range(len(items))
    ]
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_keep, initargs=(list(items),)) as pool:
            flat = list(pool.map(_score_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    else:
        _keep(list(items))
        flat = [_score_one(j) for j in jobs]
    echo(f"tune: {len(cands)} candidates x {len(items)} reviewed images in {time.perf_counter() - t0:.0f} s")
    n = len(items)
    return [Scored(c, np.asarray(flat[i * n : (i + 1) * n])) for i, c in enumerate(cands)]


def compare(scored: list[Scored]) -> list[Scored]:
    """Each candidate's gain over the first (the recipe's own) with its bootstrap interval, best first."""
    base = scored[0].ious
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(base), size=(BOOTSTRAP, len(base)))
    tail = (1 - LEVEL) / 2
    for s in scored:
        diff = s.ious - base
        means = diff[picks].mean(axis=1)
        s.gain, s.low, s.high = float(diff.mean()), *(float(q) for q in np.quantile(means, [tail, 1 - tail]))
    return [scored[0], *sorted(scored[1:], key=lambda s: (-s.gain, s.candidate.label()))]


def adopted(ranked: list[Scored]) -> Scored | None:
    """The best candidate whose gain's interval lies above zero, or None (the recipe's setting stays)."""
    best = ranked[1] if len(ranked) > 1 else None
    return best if best is not None and best.low > 0 else None


def table(rule: str, ranked: list[Scored], n: int, shown: int = 12) -> list[str]:
    pct = lambda v: f"{100 * v:+.2f}"  # noqa: E731
    lines = [
        f"## {rule}: mIoU_def on {n} reviewed images, gain over the recipe with its {LEVEL:.0%} bootstrap interval",
        "",
        "| settings | mIoU_def | gain | interval |",
        "|---|---|---|---|",
        f"| {ranked[0].candidate.label()} (the recipe) | {100 * ranked[0].miou:.2f}% | | |",
    ]
    for s in ranked[1 : shown + 1]:
        lines.append(f"| {s.candidate.label()} | {100 * s.miou:.2f}% | {pct(s.gain)} | [{pct(s.low)}, {pct(s.high)}] |")
    if len(ranked) > shown + 1:
        lines.append(f"| ... {len(ranked) - shown - 1} more | | | |")
    return lines


def write_recipe(
    source: Path, out: Path, choices: list[tuple[Scored, Scored]], n: int, overrides: Sequence[str] = ()
) -> Path:
    """The recipe ``source`` with the command line's ``overrides`` (``key=value``) and the adopted settings changed
    (``choices``: (the recipe's own, the adopted) per rule), each adopted one with its figure in a comment."""

    original = read_yaml(source) or {}
    data = copy.deepcopy(original)
    _absolute_paths(data, Config, Path(source).resolve().parent)  # the new recipe may live in another folder
    for item in overrides:
        key, _, raw = item.partition("=")
        one: dict = {}
        set_dotted(one, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
        _absolute_paths(one, Config, Path.cwd())  # a command line's paths are relative to where it runs, as --set's
        set_dotted(data, key.strip(), _get(one, key.strip()))
    notes: dict[str, str] = {}
    for own, s in choices:
        before = dict(own.candidate.settings)
        for key, value in s.candidate.settings:
            if before[key] == value:
                continue
            set_dotted(data, key, value)
            notes[key] = (
                f"wsss tune: {before[key]} -> {value}, {100 * own.miou:.1f}% -> {100 * s.miou:.1f}% mIoU_def on {n} "
                f"reviewed images ({LEVEL:.0%} interval of the gain [{100 * s.low:+.1f}, {100 * s.high:+.1f}] points)"
            )
    mark = " with the settings `wsss tune` chose on the run's reviewed masks"
    text = Path(source).read_text(encoding="utf-8")
    first, _, rest = text.partition("\n")
    if first.startswith("# ") and first.endswith(mark):  # a tuned recipe tuned again: one header
        text = rest
    atomic_write_text(out, f"# {source.name}{mark}\n" + changed_recipe_text(text, original, data, notes))
    return out


def _get(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


def _absolute_paths(data: dict, cls: type, base: Path) -> None:
    """Every path setting of the recipe ``data`` (fields marked ``path``, e.g. ``dataset.root``) made absolute, as
    the loader resolves it against the recipe's folder ``base`` (registered weights names stay names)."""

    for f in dataclasses.fields(cls):
        value = data.get(f.name) if isinstance(data, dict) else None
        if value is None:
            continue
        default = f.default_factory() if callable(f.default_factory) else f.default
        if dataclasses.is_dataclass(default):  # a section
            _absolute_paths(value, type(default), base)
        elif f.metadata.get("path") and isinstance(value, str) and value and not is_weights_name(value):
            data[f.name] = resolve_path(value, base)  # a registered weights name (imagenet) is no path


def tune_run(
    config: Path | None,
    run_dir: Path,
    out: Path | None,
    overrides: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> list[tuple[Scored, Scored]]:
    """`wsss tune`: measure the candidates on ``run_dir``'s reviewed masks, print each rule's table and choice, and
    with ``out`` write the recipe with the adopted settings; returns the adopted (the recipe's own, the adopted)."""

    cfg = load_config(config, list(overrides))
    run = Run(run_dir, cfg)
    with_retrain = (run.dir / "retrain" / MODEL_FILE).is_file()
    items, empty, rejected = reviewed_items(run.dir, run.cfg, with_retrain)
    echo(
        f"tune: {len(items)} reviewed image(s) with a defect measure the settings ({empty} reviewed without one and "
        f"{rejected} rejected choose nothing)"
    )
    if not items:
        raise ConfigError(
            run.dir / "reviewed",
            "no reviewed image holds a defect pixel, so no setting can be measured",
            "correct or accept the masks of a few defective images, import them, and tune again",
        )
    choices = []
    for rule, cands in zip(("pseudo", "retrain"), candidates(run.cfg, with_retrain), strict=True):
        if not cands:
            continue
        ranked = compare(score_all(run.cfg, items, cands, pool_size(cfg.pseudo.workers), echo))
        echo("\n" + "\n".join(table(rule, ranked, len(items))))
        best = adopted(ranked)
        if best is None:
            echo(f"\n{rule}: no candidate beats the recipe beyond the interval; its settings stay")
        else:
            echo(f"\n{rule}: adopted {best.candidate.label()} ({100 * best.gain:+.2f} points)")
            choices.append((ranked[0], best))
    if out is not None:
        if config is None:
            raise ConfigError("--out", "a tuned recipe is written from a recipe file", "pass --config RECIPE")
        write_recipe(config, out, choices, len(items), overrides)
        echo(f"wrote {out}; `wsss run --config {out} --run-dir {run.dir}` re-runs the stages it makes stale")
    return choices
