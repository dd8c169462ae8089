"""`cam`: class activation maps of every indexed image from the trained DFC, extended by IEM (METHOD.md 2-3).

With a seed ensemble (``classifier.ensemble``), every view's maps and scores are the mean of its members'.

Two streaming passes, so memory stays flat however many images there are:

1. per group of images (a few batches): multi-scale + flip CAMs at the original size, IEM for images called
   defective, the raw extended CAM written to ``raw/<id>.npy`` (float16) and its row (scores, IEM rounds, peak)
   appended to ``rows.jsonl``. A killed run resumes after the last finished image.
2. the dataset scale = the ``norm_percentile`` percentile of the CAM peaks of the *training* images labelled
   defective (image labels only); every CAM is divided by it, clipped to [0, 1], gated (a class whose sample score is
   below ``score_threshold`` gets an all-zero map; with ``cam.gate: labels`` the image label decides on the
   training and validation images: :mod:`wsss.cam.gate`) and written to ``cams/<id>.npz``. With
   ``cam.lift`` a class called present whose peak is below the scale is divided by its own peak instead (never by
   less than the 99th percentile of the OK training images' peaks): see :func:`wsss.cam.extract.normalise_cam`.

Under torchrun both passes are sharded across ranks (each rank its own log and GPU; every rank computes the same
scale from all logs) and rank 0 writes the tables once all have finished.

Outputs: ``cams/``, ``scores.csv`` (id, score, iem_rounds, peak, called = the gate's decision, per-class scores when
K > 1), ``cam.json`` (classes, scale, the gate and its threshold).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import numpy as np

from wsss import distributed as dist
from wsss.artifacts.scores import SCORE_COLUMNS, SCORES_FILE, write_scores
from wsss.atomic import atomic_path, write_json
from wsss.cam.config import CamConfig
from wsss.cam.extract import CamExtractor, normalise_cam
from wsss.cam.gate import CALLED_COLUMN, present_classes, score_errors_line
from wsss.cam.iem import extend_cams
from wsss.cam.io import CAMS_DIR, META_FILE, write_cam
from wsss.config.tree import Config
from wsss.data.classifier_data import BINARY_CLASSES
from wsss.data.images import read_image
from wsss.data.index import read_dataset_info, read_train_index
from wsss.errors import StageError
from wsss.models.classifier import load_dfcs
from wsss.progress import progress
from wsss.resume import ImagePass
from wsss.stages import Stage, register_stage

RAW_DIR = "raw"
# images per step of pass 1: several extractor batches, so that IEM's threaded inpainting of one batch overlaps the
# CAM forward passes of the previous one (wsss/cam/iem.py); memory holds this many images and CAMs at a time
GROUP_BATCHES = 4
LIFT_OK_PERCENTILE = 99.0  # cam.lift's floor: this percentile of the OK training images' CAM peaks


def _check_classes(meta: dict, index: Path, model_dir: Path) -> None:

    info = read_dataset_info(index)
    classes = meta["classes"]
    if tuple(classes) != BINARY_CLASSES and not set(classes) <= set(info.classes):
        raise StageError(
            model_dir / "dfc.json",
            f"the classifier predicts {classes}, the dataset has classes {info.classes}",
            "re-run `wsss run-stage train-classifier --force` for this dataset",
        )
    if int(meta["in_chans"]) not in (1, 3):
        raise StageError(model_dir / "dfc.json", f"in_chans {meta['in_chans']} is not 1 or 3", "retrain the DFC")


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:
    ccfg = cfg.cam
    index = inputs["prepare"] / "index.csv"
    model_dir = inputs["train-classifier"]
    device = dist.resolve_device(cfg.run.device)
    # one DFC, or a seed ensemble's (classifier.ensemble), at cam.output_stride
    models, meta = load_dfcs(model_dir, device, ccfg.output_stride)
    _check_classes(meta, index, model_dir)
    fit = meta.get("fit", "stretch")  # as the classifier was trained
    extractor = CamExtractor(models, meta["input_size"], int(meta["in_chans"]), ccfg, device, fit)
    rows = read_train_index(index)
    classes = list(meta["classes"])

    # pass 1: raw extended CAMs, streamed to disk group by group (resumable; under torchrun, shared among ranks)
    raw_dir = out / RAW_DIR
    raw_dir.mkdir(parents=True, exist_ok=True)
    extraction = ImagePass(out, rows, lambda i: raw_dir / f"{i}.npy", "cam", click.echo)
    with extraction:
        for batch in extraction.batches(ccfg.batch_size * GROUP_BATCHES):
            for row in _extend(extractor, batch, raw_dir, cfg, classes):
                extraction.record(row)
    done = extraction.done
    present = {r.id: present_classes(r, done[r.id]["scores"], classes, ccfg.score_threshold, ccfg.gate) for r in rows}

    # pass 2: one dataset-level scale; each rank normalises and gates its share
    scale, lift = _dataset_scale(rows, done, ccfg, index, model_dir)
    cams_dir = out / CAMS_DIR
    cams_dir.mkdir(exist_ok=True)
    for r in progress(rows[dist.rank() :: dist.world_size()], desc="normalise", unit="img"):
        cam = normalise_cam(np.load(raw_dir / f"{r.id}.npy"), present[r.id], scale, lift)
        write_cam(cams_dir / f"{r.id}.npz", cam)
    dist.barrier()
    outputs = {"cams": cams_dir, "scores": out / SCORES_FILE, "meta": out / META_FILE}
    if dist.rank() == 0:
        calls = {sid: bool(p.any()) for sid, p in present.items()}
        _write_tables(out, rows, done, calls, classes, scale, lift, ccfg)
        shutil.rmtree(raw_dir)
        extraction.finish()
        called = [done[r.id] for r in rows if calls[r.id]]
        click.echo(
            f"cam: {len(rows)} images, {len(called)} called defective "
            f"(mean IEM rounds {np.mean([c['iem_rounds'] for c in called] or [0]):.2f}), "
            f"scale {scale:.3g}, {extraction.images_per_s:.2f} images/s"
        )
        scores = {r.id: done[r.id]["score"] for r in rows}
        click.echo(score_errors_line(rows, scores, ccfg.score_threshold, ccfg.gate))
    return outputs


def _extend(extractor: CamExtractor, batch: list, raw_dir: Path, cfg: Config, classes: list[str]) -> list[dict]:
    """The raw CAMs of ``batch`` (extended by IEM where the gate keeps a class), saved as float16 ``raw/<id>.npy``,
    and their log rows: sample scores, IEM rounds, the CAM's peak."""
    ccfg = cfg.cam
    images = [read_image(r.path, cfg.dataset.high_bit_depth) for r in batch]
    cams, scores = extractor(images)
    active = [
        bool(present_classes(r, s, classes, ccfg.score_threshold, ccfg.gate).any())
        for r, s in zip(batch, scores, strict=True)
    ]
    rounds = [0] * len(batch)
    if ccfg.iem.enabled and any(active):
        cams, rounds = extend_cams(extractor, images, cams, active, ccfg.iem)
    rows = []
    for r, cam, s, n in zip(batch, cams, scores, rounds, strict=True):
        with atomic_path(raw_dir / f"{r.id}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, cam.astype(np.float16))
        rows.append(
            {
                "id": r.id,
                "score": float(s.max()),
                "scores": [float(v) for v in s],
                "iem_rounds": n,
                "peak": float(cam.max()),
            }
        )
    return rows


def _dataset_scale(rows: list, done: dict, ccfg: CamConfig, index: Path, model_dir: Path) -> tuple[float, float | None]:
    """The CAM scale (``norm_percentile`` of the defective training images' peaks) and ``cam.lift``'s floor (the
    OK training images' peak percentile; None with the lift off)."""
    peaks = [done[r.id]["peak"] for r in rows if r.split == "train" and r.labels]
    if not peaks:
        raise StageError(index, "no defective training images to set the CAM scale from", "check prepare.split")
    scale = float(np.percentile(peaks, ccfg.norm_percentile))
    if scale <= 0:
        raise StageError(
            model_dir / "dfc.safetensors",
            "the classifier's CAMs are zero on every defective training image",
            "check the classifier's validation AP in its metrics.csv and retrain it",
        )
    ok_peaks = [done[r.id]["peak"] for r in rows if r.split == "train" and not r.labels]
    floor = float(np.percentile(ok_peaks, LIFT_OK_PERCENTILE)) if ok_peaks else 0.0
    return scale, floor if ccfg.lift else None


def _write_tables(
    out: Path,
    rows: list,
    done: dict,
    calls: dict[str, bool],
    classes: list[str],
    scale: float,
    lift: float | None,
    ccfg: CamConfig,
) -> None:
    """``scores.csv`` (each image's sample scores and the gate's call) and ``cam.json`` (the classes, the scale and
    the gate)."""
    score_rows = [
        done[r.id]
        | {CALLED_COLUMN: int(calls[r.id])}
        | {f"score_{c}": v for c, v in zip(classes, done[r.id]["scores"], strict=True)}
        for r in rows
    ]
    write_scores(out / SCORES_FILE, score_rows, classes, columns=(*SCORE_COLUMNS, CALLED_COLUMN))
    meta = {"classes": classes, "scale": scale, "norm_percentile": ccfg.norm_percentile, "lift_floor": lift}
    gate = {"gate": ccfg.gate, "score_threshold": ccfg.score_threshold}
    write_json(out / META_FILE, meta | gate | {"images": len(rows)})


STAGE = register_stage(
    Stage(
        name="cam",
        run=run,
        sections=("cam",),
        inputs=lambda cfg: ("prepare", "train-classifier"),
        help="class activation maps with multi-scale/flip TTA, dataset-level normalisation and IEM extension",
        distributed=True,
    )
)
