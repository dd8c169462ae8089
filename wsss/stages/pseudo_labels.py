"""`pseudo-labels`: refine the cam stage's extended CAMs into mask PNGs (METHOD.md section 4).

Writes ``masks/<id>.png`` for every indexed image (0 background, k class k, 255 ignore; the rule is
:mod:`wsss.refine.pseudo`), ``confidence.csv`` (id, score, confidence, defect_fraction, ignore_fraction; sort by
confidence to pick images for review) and a copy of the cam stage's ``scores.csv``, so that `evaluate` finds the
sample scores beside the masks. Never reads ground-truth masks. With ``pseudo.unary`` anomaly or fusion it also reads
the `anomaly` stage's maps (METHOD.md 7a; :mod:`wsss.refine.unary`).

Resumable: each finished image appends its row to ``rows.jsonl``; a re-run after a kill skips images whose PNG and
row both exist, and the log is removed when the stage finishes.

Under torchrun the images still to do are sharded across ranks (rank r takes every world-th one, each rank with its
own process pool and log); rank 0 writes ``confidence.csv`` in index order once every rank has finished, so the
outputs do not depend on the number of ranks. A rank that dies ends the process group: no ``done`` manifest, and a
re-run (with any number of ranks) labels only the images no log records.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from wsss import distributed as dist
from wsss.anomaly.io import anomaly_path, read_range
from wsss.artifacts.masks import CONFIDENCE_FILE, write_confidence
from wsss.artifacts.scores import SCORES_FILE, read_scores
from wsss.atomic import atomic_path
from wsss.cam.gate import read_calls
from wsss.cam.io import FIX, META_FILE, cam_path, read_cam_meta
from wsss.config.tree import Config
from wsss.data.index import read_train_index
from wsss.errors import DataError, StageError
from wsss.mask_format import write_labelmap
from wsss.refine.pseudo import LabelTask, label_all
from wsss.resume import ImagePass
from wsss.stages import Stage, register_stage


def _cam_classes(cam_dir: Path) -> list[str]:

    meta = read_cam_meta(cam_dir)
    try:
        classes = list(meta["classes"])
    except (KeyError, TypeError) as e:
        raise DataError(cam_dir / META_FILE, f"missing or invalid 'classes' ({e})", FIX) from None
    if not classes:
        raise DataError(cam_dir / META_FILE, "empty class list", FIX)
    return classes


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:

    t0 = time.perf_counter()
    index = read_train_index(inputs["prepare"] / "index.csv")
    classes = _cam_classes(inputs["cam"])
    scores_csv = inputs["cam"] / SCORES_FILE
    scores = read_scores(scores_csv)
    calls = read_calls(inputs["cam"])  # the cam stage's gate (cam.gate)
    missing = [r.id for r in index if r.id not in scores]
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise StageError(scores_csv, f"no sample score for {len(missing)} indexed image(s): {shown}", FIX)

    anomaly_dir = inputs.get("anomaly")  # an input only when pseudo.unary is anomaly or fusion
    anomaly_range = read_range(anomaly_dir) if anomaly_dir else (0.0, 1.0)

    masks = out / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    rank = dist.rank()
    if rank == 0:
        for stray in masks.glob(".*.tmp"):  # temporary files of writes cut short by a kill
            stray.unlink(missing_ok=True)
        write_labelmap(masks, classes)  # what the values mean, for `wsss evaluate` and annotation tools
    dist.barrier()
    labelling = ImagePass(out, index, lambda i: masks / f"{i}.png", "pseudo-labels", click.echo)
    tasks = [
        LabelTask(
            id=r.id,
            image=r.path,
            cam=cam_path(inputs["cam"], r.id),
            out=masks / f"{r.id}.png",
            called_defective=calls[r.id],
            classes=len(classes),
            cfg=cfg.pseudo,
            high_bit_depth=cfg.dataset.high_bit_depth,
            anomaly=anomaly_path(anomaly_dir, r.id) if anomaly_dir else None,
            anomaly_range=anomaly_range,
        )
        for r in labelling.todo
    ]
    with labelling:
        label_all(tasks, cfg.pseudo.workers, click.echo, on_done=labelling.record)
    outputs = {"masks": masks, "confidence": out / CONFIDENCE_FILE, "scores": out / SCORES_FILE}
    if rank != 0:
        return outputs
    rows = [labelling.done[r.id] for r in index]
    write_confidence(out / CONFIDENCE_FILE, rows, scores)
    with atomic_path(out / SCORES_FILE) as tmp:
        shutil.copyfile(scores_csv, tmp)
    labelling.finish()

    seconds = time.perf_counter() - t0
    called = [r for r in rows if calls[r["id"]]]
    mean_conf = f"{sum(r['confidence'] for r in called) / len(called):.3f}" if called else "-"
    click.echo(
        f"pseudo-labels: {len(rows)} images, {len(called)} called defective (mean confidence {mean_conf}), "
        f"{seconds:.1f} s, {labelling.images_per_s:.2f} images/s"
    )
    return outputs


STAGE = register_stage(
    Stage(
        name="pseudo-labels",
        run=run,
        sections=("pseudo",),
        inputs=lambda cfg: ("prepare", "cam") + (("anomaly",) if cfg.pseudo.unary != "cam" else ()),
        writes_masks=True,
        help="refine the extended CAMs with a dense CRF into pseudo-masks (255 = ignore) and confidence scores",
        distributed=True,
    )
)
