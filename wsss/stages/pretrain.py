"""`pretrain` (optional, before `train-classifier`): anomaly-guided pretraining of the classifier's backbone
(METHOD.md 7b; the loss is :mod:`wsss.train.pretrain`).

1. A *teacher* that never saw a label, ``pretrain.anomaly.backbone`` (randomly initialised with ``run.seed`` by
   default, or a local self-supervised weights file), embeds the OK training images into a PatchCore memory bank
   and gives every training image a leave-one-out anomaly map (:mod:`wsss.anomaly.patchcore`).
2. The *student*, ``classifier.backbone`` as configured (random init, or its local weights file), is trained on all
   training images, defective or not and without their labels, to put its channel energy where the maps are high.
3. ``backbone.safetensors`` (the student's state_dict) is what `train-classifier` starts from when the pipeline has
   this stage (in place of ``classifier.backbone.weights``); ``pretrain.json`` and ``metrics.csv`` record the run.

The only label involved is which images are OK (for the bank). Not resumable mid-way: a killed stage restarts (the
runner never publishes its partial folder); it is short next to the classifier's training.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from wsss import distributed as dist
from wsss.anomaly.patchcore import QUANTILES, PatchEmbedder, anomaly_grid, calibrate, ok_bank, ok_training_images
from wsss.atomic import write_json
from wsss.config.tree import Config
from wsss.data.images import read_image
from wsss.data.index import read_dataset_info, read_train_index
from wsss.data.transforms import resize, to_channels, to_tensor
from wsss.models.backbone import create_backbone
from wsss.models.model_dir import PRETRAINED_FILE as MODEL_FILE
from wsss.models.state import save_state_dict
from wsss.models.weights import weight_files
from wsss.progress import progress
from wsss.stages import Stage, register_stage
from wsss.train.checkpoint import write_metrics
from wsss.train.pretrain import normalised_targets, pretrain_backbone

META_FILE = "pretrain.json"
METRICS_FILE = "metrics.csv"


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:

    pcfg, acfg = cfg.pretrain, cfg.pretrain.anomaly
    index = inputs["prepare"] / "index.csv"
    info = read_dataset_info(index)
    train = read_train_index(index, "train")
    ok = ok_training_images(train, index)
    device = dist.resolve_device(cfg.run.device)
    t0 = time.perf_counter()

    def read(r):
        return read_image(r.path, cfg.dataset.high_bit_depth)

    torch.manual_seed(cfg.run.seed)
    teacher = create_backbone(acfg.backbone, info.channels, section="pretrain.anomaly.backbone")
    embedder = PatchEmbedder(
        teacher, acfg, acfg.input_size or cfg.classifier.input_size, teacher.in_chans, device, "pretrain.anomaly.layers"
    )
    bank, owner_of = ok_bank(embedder, ok, read, acfg)

    torch.manual_seed(cfg.run.seed + 1)
    student = create_backbone(cfg.classifier.backbone, info.channels)
    size = tuple(cfg.classifier.input_size)
    images, grids = [], []
    for start in progress(range(0, len(train), acfg.batch_size), desc="pretrain targets", unit="batch"):
        batch = train[start : start + acfg.batch_size]
        raw = [read(r) for r in batch]
        for r, img, emb in zip(batch, raw, embedder(raw), strict=True):
            grids.append(anomaly_grid(emb, bank, acfg, owner_of.get(r.id, -1)))
            images.append(to_tensor(resize(to_channels(img, student.in_chans), size)))
    ok_grids = [g for r, g in zip(train, grids, strict=True) if r.id in owner_of]
    # normalised as the anomaly stage does, but with no defect label: 1 = the highest OK peak
    lo, hi, _ = calibrate([np.quantile(g, QUANTILES) for g in ok_grids], [], [float(g.max()) for g in ok_grids], acfg)
    targets = normalised_targets(grids, lo, hi)
    click.echo(
        f"pretrain: teacher bank of {bank.features.shape[0]} patches from {len(ok)} OK images; targets for "
        f"{len(train)} training images ({time.perf_counter() - t0:.1f} s)"
    )
    rows = pretrain_backbone(student, torch.stack(images), targets, pcfg, device, cfg.run.seed, click.echo)
    save_state_dict(student, out / MODEL_FILE)
    write_metrics(out / METRICS_FILE, rows, ("epoch", "loss", "seconds"))
    write_json(
        out / META_FILE,
        {
            "student": cfg.classifier.backbone.name,
            "teacher": acfg.backbone.name,
            "teacher_weights": acfg.backbone.weights,
            "bank_patches": int(bank.features.shape[0]),
            "ok_images": len(ok),
            "images": len(train),
            "lo": lo,
            "hi": hi,
            "first_loss": rows[0]["loss"],
            "last_loss": rows[-1]["loss"],
        },
    )
    return {"model": out / MODEL_FILE, "meta": out / META_FILE, "metrics": out / METRICS_FILE}


STAGE = register_stage(
    Stage(
        name="pretrain",
        run=run,
        sections=("pretrain", "classifier.backbone", "classifier.input_size", "run.seed"),
        inputs=lambda cfg: ("prepare",),
        external=lambda cfg: weight_files(cfg.pretrain.anomaly.backbone.weights, cfg.classifier.backbone.weights),
        help="anomaly-guided pretraining of the classifier's backbone (label-free; optional, before train-classifier)",
    )
)
