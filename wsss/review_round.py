"""One review round: the segmenter fine-tuned on a reviewer's masks, evaluated before and after.

After ``wsss export review`` and ``wsss import-review`` (corrected masks from an annotation tool, or the review
page's accept / reject decisions) the run folder holds ``reviewed/``. A round then:

1. snapshots the run's current segmenter (``train-segmenter/segmenter.*``) and its evaluation into
   ``review-rounds/round-<k>/before/``;
2. re-runs `train-segmenter` with ``segmenter.reviewed`` = ``reviewed/`` (human masks replace those images'
   pseudo-masks, rejected images leave the mask loss) and ``segmenter.init_from`` = the snapshot: a fine-tuning of
   ``epochs`` epochs (or more, to the recipe's ``segmenter.min_steps``: :func:`fine_tune_settings`) from the weights
   the reviewer judged, not a training from ImageNet, so it takes minutes; those
   weights are validated first, on the validation images' pseudo-masks and the reviewed images' masks, and kept
   when no epoch validates better, so a round never ends below its start on the validation split; a review of
   rejections only is refused: pseudo-masks alone cannot judge a fine-tuning on them
   (:meth:`wsss.train.segmenter.SegmenterTrainer.fit`);
3. evaluates the new segmenter on the same split and writes ``review-rounds/round-<k>/report.json``.

The evaluation needs ground-truth masks on that split (a few test images a person drew once); without them image
AP is still reported and the mask metrics are n/a.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsss.artifacts.masks import CONFIDENCE_FILE, REJECTED_FILE, read_confidence, write_mask
from wsss.atomic import write_json
from wsss.config.pipelines import load_pipeline
from wsss.config.tree import Config, load_config
from wsss.data.images import read_mask
from wsss.data.index import read_dataset_info, read_eval_index
from wsss.errors import ConfigError, StageError
from wsss.evaluation import evaluate_stage
from wsss.export.review_import import import_review
from wsss.hashing import read_manifest
from wsss.runs import Run
from wsss.stages import get_stage
from wsss.tune import tune_run

ROUNDS = "review-rounds"
METRICS = (("ap", "image AP"), ("miou_def", "mIoU_def"), ("seg_recall_0_5", "Seg_Recall@0.5"), ("pixel_ap", "pixel AP"))


def _evaluate(cfg: Config, run_dir: Path, stage_dir: Path, split: str) -> dict[str, float | None]:

    index = run_dir / "prepare" / "index.csv"
    rows = read_eval_index(index, split=split)
    report = evaluate_stage(rows, read_dataset_info(index), stage_dir, cfg.evaluate)
    out: dict[str, float | None] = {}
    for key, _ in METRICS:
        v = getattr(report, key, None)
        out[key] = None if v is None or v != v else float(v)
    return out


def _require_segmenter(seg: Path) -> None:
    """A StageError unless ``seg`` is a finished `train-segmenter` stage."""
    if (read_manifest(seg) or {}).get("status") != "done":
        raise StageError(seg, "no finished train-segmenter stage in this run", "run the pipeline first (`wsss run`)")


def _reviewed_counts(reviewed: Path) -> tuple[int, int]:
    masks = len(list((reviewed / "masks").glob("*.png"))) if (reviewed / "masks").is_dir() else 0
    rejected = reviewed / REJECTED_FILE
    n_rejected = len([ln for ln in rejected.read_text().splitlines() if ln]) if rejected.is_file() else 0
    return masks, n_rejected


def fine_tune_settings(start: Path, epochs: int) -> list[str]:
    """The `train-segmenter` settings of a round's fine-tuning from the weights in ``start``: ``epochs`` epochs
    without warm-up, at the recipe's rate and step floor (``segmenter.min_steps``). The floor holds in a round as in
    the training: a restarted optimizer needs those steps to settle, and three epochs of a small set make far fewer
    (the demo: 72 steps, where its 250 took the segmenter from 77.61% to 82.25% instead of 72.32%)."""
    return [f"segmenter.init_from={start}", f"segmenter.epochs={epochs}", "segmenter.warmup_epochs=0"]


def review_round(
    config: Path | None,
    run_dir: Path,
    overrides: Sequence[str] = (),
    epochs: int = 3,
    split: str = "test",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one review round on ``run_dir`` (see the module docstring); returns the round's report."""

    run_dir = Path(run_dir)
    seg = run_dir / "train-segmenter"
    reviewed = run_dir / "reviewed"
    _require_segmenter(seg)
    n_masks, n_rejected = _reviewed_counts(reviewed)
    if n_masks == 0:  # rejections say what is wrong, not what is right: nothing to judge the fine-tuning by
        only = f" ({n_rejected} rejected image(s) only: a round is judged by masks a person drew or accepted)"
        raise ConfigError(
            reviewed,
            "no reviewed masks in this run" + (only if n_rejected else ""),
            "export the review package (`wsss export review`), correct or accept some masks, then `wsss import-review`",
        )
    if epochs < 1:
        raise ConfigError("--epochs", f"got {epochs}", "use 1 or more")
    rounds = run_dir / ROUNDS
    k = 1 + sum(1 for p in rounds.glob("round-*") if (p / "report.json").is_file()) if rounds.is_dir() else 1
    folder = rounds / f"round-{k}"
    before = folder / "before"
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted round of this number starts over
    before.mkdir(parents=True)
    for name in ("segmenter.safetensors", "segmenter.json"):
        shutil.copy2(seg / name, before / name)
    base = load_config(config, list(overrides))
    before_metrics = _evaluate(base, run_dir, seg, split)

    sets = [*overrides, f"segmenter.reviewed={reviewed}", *fine_tune_settings(before, epochs)]
    cfg = load_config(config, sets)
    echo(f"review round {k}: {n_masks} reviewed mask(s), {n_rejected} rejected image(s); fine-tuning {epochs} epoch(s)")
    t0 = time.perf_counter()
    Run(run_dir, cfg, echo=echo).run_stage("train-segmenter", force=True)
    seconds = time.perf_counter() - t0
    after_metrics = _evaluate(cfg, run_dir, seg, split)
    kept = json.loads((seg / "segmenter.json").read_text()).get("kept_epoch")
    report = {
        "round": k,
        "split": split,
        "reviewed_masks": n_masks,
        "rejected": n_rejected,
        "epochs": epochs,
        "seconds": round(seconds, 1),
        "kept_epoch": kept,  # -1: no epoch validated better than the weights the round started from
        "before": before_metrics,
        "after": after_metrics,
        "settings": sets[len(overrides) :],
    }
    write_json(folder / "report.json", report)
    echo(format_report(report))
    echo(
        f"the run's train-segmenter now holds the fine-tuned segmenter; the one before is in {before}. Keep "
        f"`segmenter.reviewed: {reviewed}` and `retrain.reviewed: {reviewed}` in the recipe so a later `wsss run` "
        "trains the retrain round and the segmenter with the reviewed masks"
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    title = f"review round {report['round']} ({report['split']} split, {report['seconds']:.0f} s):"
    lines = _table(title, {when: report[when] for when in ("before", "after")})
    if report.get("kept_epoch") == -1:
        lines.append("no epoch validated better than the segmenter the round started from: it is kept unchanged")
    return "\n".join(lines)


def _table(title: str, rows: dict[str, dict[str, float | None]]) -> list[str]:
    """``title`` and a markdown table of the :data:`METRICS` of each row (``when`` -> figures)."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    lines = [title, "| | " + " | ".join(label for _, label in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    return lines + [f"| {when} | " + " | ".join(pct(v[k]) for k, _ in METRICS) + " |" for when, v in rows.items()]


def review_loop(
    config: Path | None,
    run_dir: Path,
    overrides: Sequence[str] = (),
    epochs: int = 3,
    split: str = "test",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole review loop in one command (`wsss review-round --tune`): tune the settings on the reviewed masks
    (``RUN/review-rounds/tuned.yaml``), re-run the labelling stages before the segmenter that those settings and the
    reviewed masks make stale (the retrain round learns from the reviewed masks and keeps them as its masks of those
    images), then one review round, which fine-tunes the segmenter from its trained weights on the new masks and the
    reviewed ones (minutes, where training it again would take as long as the run's own training); prints the
    segmenter's figures as trained and after the loop."""

    run_dir = Path(run_dir)
    if config is None:
        raise ConfigError("--tune", "the loop writes a tuned recipe from a recipe file", "pass --config RECIPE")
    base = load_config(config, list(overrides))
    seg = run_dir / "train-segmenter"
    _require_segmenter(seg)
    figures = {"as trained": _evaluate(base, run_dir, seg, split)}
    tuned = run_dir / ROUNDS / "tuned.yaml"
    tuned.parent.mkdir(parents=True, exist_ok=True)
    reviewed = run_dir / "reviewed"
    sets = [*overrides, f"retrain.reviewed={reviewed}", f"segmenter.reviewed={reviewed}"]
    choices = tune_run(config, run_dir, tuned, sets, echo)
    cfg = load_config(tuned, [])
    run = Run(run_dir, cfg, echo=echo)
    stages = list(load_pipeline(cfg.run.pipeline).stages)
    labelling = stages[: stages.index("train-segmenter")] if "train-segmenter" in stages else stages
    stale = [name for name in labelling if run.status(get_stage(name)) != "done"]
    echo(f"review loop: {len(choices)} setting group(s) adopted; re-running {', '.join(stale) or 'nothing'}")
    run.run_pipeline(labelling)
    report = review_round(tuned, run_dir, (), epochs, split, echo)
    figures["after the loop"] = report["after"]
    echo("\n".join(_table(f"review loop ({split} split):", figures)))
    return {"figures": figures, "tuned": str(tuned), "round": report["round"], "adopted": len(choices)}


# the stages a review works on, in pipeline order: what a copy of a finished run needs (the demo's review loop,
# bench/review_gain.py)
REVIEWED_STAGES = ("prepare", "train-classifier", "cam", "pseudo-labels", "retrain", "train-segmenter")


def copy_stages(run_dir: Path, dest: Path) -> None:
    """Copy the finished run ``run_dir``'s :data:`REVIEWED_STAGES` (those it has) into ``dest``, so a review loop or
    round can run there while the run stays as trained."""
    for name in REVIEWED_STAGES:
        if (Path(run_dir) / name).is_dir():
            shutil.copytree(Path(run_dir) / name, Path(dest) / name)


def simulated_review(
    run_dir: Path, n: int, echo: Callable[[str], None] = print, order: Sequence[str] | None = None
) -> list[str]:
    """A stand-in for the person who reviews: the ground-truth masks of the first ``n`` training images of ``order``
    (by default the least confident first, the review page's order: the ``confidence.csv`` of the newest labelling
    stage that wrote one) imported as corrected masks (`wsss import-review --format png`) into ``RUN/reviewed/``;
    returns their ids. Images without a ground-truth mask are passed over.

    Only for generated data and benchmarks (`wsss demo`, bench/review_gain.py), where it simulates what a person
    would draw: the masks it imports are ground truth, so nothing measured after it on those images is unseen.
    """

    run_dir = Path(run_dir)
    index = run_dir / "prepare" / "index.csv"
    info = read_dataset_info(index)
    truth = {r.id: r.mask for r in read_eval_index(index, split="train") if r.mask is not None}
    if order is None:
        tables = [run_dir / s / CONFIDENCE_FILE for s in ("retrain", "pseudo-labels")]
        confidence = next((read_confidence(t) for t in tables if t.is_file()), {})
        if not confidence:
            raise StageError(run_dir, "no labelling stage wrote confidence.csv", "run the pipeline to pseudo-labels")
        order = sorted(truth, key=lambda i: (confidence.get(i, 1.0), i))
    chosen = [i for i in order if i in truth][:n]
    folder = run_dir / "simulated-review"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in chosen:
        write_mask(folder / f"{i}.png", read_mask(truth[i], threshold=info.mask_threshold).astype(np.uint8))
    import_review("png", folder, run_dir)
    echo(f"simulated reviewer: corrected {len(chosen)} training images ({folder})")
    return chosen
