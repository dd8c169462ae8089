"""`anomaly`: PatchCore-style anomaly maps of every indexed image (METHOD.md 7; :mod:`wsss.anomaly.patchcore`).

1. The memory bank: patch features of the OK *training* images (image labels only), from the trained DFC's backbone
   (``anomaly.features: dfc``) or from ``anomaly.backbone`` (random init or its local weights file).
2. Per image, the nearest-neighbour distance map (an OK training image's own patches left out), written raw to
   ``<id>.npz`` (float16, original size) with its row (peak score, 101 quantiles) appended to ``rows.jsonl``: a
   killed run rebuilds the bank (deterministic: seeded) and resumes after the last finished image.
3. ``anomaly.json``: the dataset-level normalisation (lo from the OK training images' maps, hi from the defective
   training images' peaks; image labels only) that fusion in `pseudo-labels` applies; ``scores.csv``: id, score (the
   raw peak), normalised (the peak normalised).

Anomaly priors need defect-free images: a training split without OK images is an error. Never reads a mask.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from wsss import distributed as dist
from wsss.anomaly.config import AnomalyConfig
from wsss.anomaly.io import META_FILE, anomaly_path, normalise, write_map
from wsss.anomaly.patchcore import (
    QUANTILES,
    PatchEmbedder,
    anomaly_grid,
    calibrate,
    ok_bank,
    ok_training_images,
    upsample,
)
from wsss.artifacts.scores import SCORES_FILE, write_scores
from wsss.atomic import write_json
from wsss.config.tree import Config
from wsss.data.images import read_image
from wsss.data.index import read_dataset_info, read_train_index
from wsss.models.backbone import create_backbone
from wsss.models.classifier import load_dfc, main_member
from wsss.models.weights import weight_files
from wsss.resume import ImagePass
from wsss.stages import Stage, register_stage


def embedder_for(cfg: Config, inputs: dict[str, Path], device):
    """The patch embedder the config asks for: the trained DFC's backbone, or ``anomaly.backbone``."""

    acfg = cfg.anomaly
    if acfg.features == "dfc":
        model, meta = load_dfc(main_member(inputs["train-classifier"]), device)
        size = acfg.input_size or meta["input_size"]
        return PatchEmbedder(model.backbone, acfg, size, int(meta["in_chans"]), device)

    info = read_dataset_info(inputs["prepare"] / "index.csv")
    torch.manual_seed(cfg.run.seed)
    backbone = create_backbone(acfg.backbone, info.channels, section="anomaly.backbone")
    return PatchEmbedder(backbone, acfg, acfg.input_size or cfg.classifier.input_size, backbone.in_chans, device)


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:

    acfg = cfg.anomaly
    index = inputs["prepare"] / "index.csv"
    rows = read_train_index(index)
    ok = ok_training_images(rows, index)
    device = dist.resolve_device(cfg.run.device)
    embedder = embedder_for(cfg, inputs, device)

    def read(r):
        return read_image(r.path, cfg.dataset.high_bit_depth)

    t0 = time.perf_counter()
    bank, owner_of = ok_bank(embedder, ok, read, acfg)
    click.echo(
        f"anomaly: memory bank of {bank.features.shape[0]} patches x {bank.features.shape[1]} dims from {len(ok)} "
        f"OK training images ({time.perf_counter() - t0:.1f} s)"
    )

    out.mkdir(parents=True, exist_ok=True)
    maps = ImagePass(out, rows, lambda i: anomaly_path(out, i), "anomaly", click.echo, shared=False)  # rank 0 alone
    with maps:
        for batch in maps.batches(acfg.batch_size):
            images = [read(r) for r in batch]
            for r, img, emb in zip(batch, images, embedder(images), strict=True):
                grid = anomaly_grid(emb, bank, acfg, owner_of.get(r.id, -1))
                write_map(anomaly_path(out, r.id), upsample(grid, img.shape[:2]))
                maps.record(
                    {"id": r.id, "score": float(grid.max()), "quantiles": np.quantile(grid, QUANTILES).tolist()}
                )
    lo, hi = _calibrate_and_write(out, rows, ok, maps.done, acfg, embedder, int(bank.features.shape[0]))
    maps.finish()
    click.echo(
        f"anomaly: {len(rows)} maps, normalisation lo {lo:.4g} hi {hi:.4g}, {time.perf_counter() - t0:.1f} s in all"
    )
    return {"maps": out, "scores": out / SCORES_FILE, "meta": out / META_FILE}


def _calibrate_and_write(
    out: Path, rows: list, ok: list, done: dict, acfg: AnomalyConfig, embedder: PatchEmbedder, bank_patches: int
) -> tuple[float, float]:
    """The dataset-level normalisation (lo, hi) from the maps' peaks and quantiles, then ``scores.csv`` (each image's
    raw and normalised peak) and ``anomaly.json``."""
    train = [r for r in rows if r.split == "train"]
    lo, hi, warning = calibrate(
        [done[r.id]["quantiles"] for r in ok],
        [done[r.id]["score"] for r in train if r.labels],
        [done[r.id]["score"] for r in ok],
        acfg,
    )
    if warning:
        click.echo(f"anomaly: warning: {warning}", err=True)
    peaks = np.array([done[r.id]["score"] for r in rows])
    score_rows = [
        {"id": r.id, "score": float(p), "normalised": float(n)}
        for r, p, n in zip(rows, peaks, normalise(peaks, lo, hi), strict=True)
    ]
    write_scores(out / SCORES_FILE, score_rows, ["defect"], columns=("id", "score", "normalised"))
    write_json(
        out / META_FILE,
        {
            "lo": lo,
            "hi": hi,
            "features": acfg.features,
            "layers": embedder.layers,
            "input_size": list(embedder.size),
            "feature_dim": embedder.dim,
            "bank_patches": bank_patches,
            "ok_images": len(ok),
            "images": len(rows),
            "warning": warning,
        },
    )
    return lo, hi


STAGE = register_stage(
    Stage(
        name="anomaly",
        run=run,
        sections=("anomaly", "run.seed"),
        inputs=lambda cfg: ("prepare", "train-classifier") if cfg.anomaly.features == "dfc" else ("prepare",),
        external=lambda cfg: weight_files(cfg.anomaly.backbone.weights) if cfg.anomaly.features == "backbone" else [],
        help="PatchCore-style anomaly maps from a memory bank of the OK training images' patches (label-free prior)",
    )
)
