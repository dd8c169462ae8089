"""`train-classifier`: train the Defect Focus Classifier on image-level labels (METHOD.md section 1).

In a pipeline with the `pretrain` stage, the backbone starts from its ``backbone.safetensors`` (anomaly-guided
pretraining, METHOD.md 7b) in place of ``classifier.backbone.weights``.

Writes ``dfc.safetensors`` (the best epoch's state_dict), ``dfc.json`` (what rebuilds the model) and
``metrics.csv``; with ``classifier.ensemble`` = K > 1, members 1..K-1 (other seeds) the same in ``members/<k>/``, and
with ``classifier.ensemble_pick: flip-consistent`` ``ensemble.json``: each member's flip consistency and the one the
`cam` stage takes (:mod:`wsss.cam.consistency`).
Checkpoints live in ``checkpoints/`` while the stage runs, so a killed run resumes from its last epoch (a member
that has finished is skipped); they are removed when training has finished.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from wsss import distributed as dist
from wsss.atomic import write_json
from wsss.cam.consistency import consistency_images, member_consistency
from wsss.config.tree import Config
from wsss.errors import StageError
from wsss.models.classifier import ENSEMBLE_FILE, MEMBER_SEED_STEP, member_dirs
from wsss.models.model_dir import PRETRAINED_FILE as PRETRAINED
from wsss.models.weights import weight_files
from wsss.stages import Stage, in_pipeline, register_stage
from wsss.train.classifier import META_FILE, MODEL_FILE, ClassifierTrainer
from wsss.train.feature_cache import FeatureStore
from wsss.train.loop import CHECKPOINT, METRICS_FILE


def with_pretrained_backbone(cfg: Config, weights: Path) -> Config:
    """``cfg`` with ``classifier.backbone.weights`` set to ``weights``."""
    backbone = dataclasses.replace(cfg.classifier.backbone, weights=str(weights))
    return dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, backbone=backbone))


FINISHED = "finished.json"  # a member's training summary, written when it has finished (a resumed stage skips it)


def member_config(cfg: Config, k: int) -> Config:
    """``cfg`` for ensemble member ``k``: the classifier's seed + ``k * MEMBER_SEED_STEP`` (member 0 is ``cfg``)."""

    if k == 0:
        return cfg
    return dataclasses.replace(
        cfg, classifier=dataclasses.replace(cfg.classifier, seed=cfg.seed("classifier") + k * MEMBER_SEED_STEP)
    )


def classifier_trainer(
    cfg: Config,
    index: Path,
    out: Path,
    echo: Callable[[str], None] = print,
    feature_store: FeatureStore | None = None,
) -> ClassifierTrainer:
    """The trainer of the recipe ``cfg``'s classifier, on the `prepare` index ``index``, into ``out``; with
    ``classifier.cache_features``, ``feature_store`` keeps the frozen stages' features for the next member."""

    return ClassifierTrainer(
        cfg.classifier,
        cfg.dataset,
        index,
        out,
        seed=cfg.seed("classifier"),
        device=cfg.run.device,
        echo=echo,
        feature_store=feature_store,
    )


def pick_consistent(cfg: Config, index: Path, members: list[Path]) -> dict:
    """``classifier.ensemble_pick: flip-consistent``: each member's flip consistency on the defective training images
    (:mod:`wsss.cam.consistency`; image labels only) and the member kept, the most consistent."""
    images = consistency_images(index, cfg.dataset.high_bit_depth)
    if not images:
        raise StageError(index, "no defective training images to pick the ensemble's member on", "check prepare.split")
    device = dist.resolve_device(cfg.run.device)
    scores = [member_consistency(m, images, device, cfg.classifier.channels_last) for m in members]
    kept = int(np.argmax(scores))
    click.echo(
        "train-classifier: flip consistency of the members "
        + ", ".join(f"{s:.3f}" for s in scores)
        + f" on {len(images)} defective training images; member {kept + 1} kept"
    )
    return {"pick": "flip-consistent", "images": len(images), "consistency": scores, "kept": kept}


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:

    if "pretrain" in inputs:
        cfg = with_pretrained_backbone(cfg, inputs["pretrain"] / PRETRAINED)
        if dist.is_main():
            click.echo(f"train-classifier: backbone from the pretrain stage ({inputs['pretrain'] / PRETRAINED})")
    k_all = cfg.classifier.ensemble
    store = FeatureStore()  # with classifier.cache_features, the members share their frozen stages' features
    for k, member in enumerate(member_dirs(out, k_all)):
        if (member / FINISHED).is_file():  # trained before a kill
            continue
        if k_all > 1 and dist.is_main():
            click.echo(f"train-classifier: ensemble member {k + 1} of {k_all}")
        index = inputs["prepare"] / "index.csv"
        trainer = classifier_trainer(member_config(cfg, k), index, member, echo=click.echo, feature_store=store)
        summary = trainer.fit()
        if dist.is_main():  # under torchrun every rank trains (DDP); rank 0 alone writes
            click.echo(f"best epoch {summary['best_epoch'] + 1}: validation image AP {summary['best_val_ap']:.4f}")
            write_json(member / FINISHED, summary)
        dist.barrier()
    if dist.is_main():
        record = out / ENSEMBLE_FILE
        if k_all > 1 and cfg.classifier.ensemble_pick == "flip-consistent":
            write_json(record, pick_consistent(cfg, inputs["prepare"] / "index.csv", member_dirs(out, k_all)))
        else:
            record.unlink(missing_ok=True)
        for member in member_dirs(out, k_all):
            shutil.rmtree(member / CHECKPOINT.parent, ignore_errors=True)
    dist.barrier()
    return {"model": out / MODEL_FILE, "meta": out / META_FILE, "metrics": out / METRICS_FILE}


STAGE = register_stage(
    Stage(
        name="train-classifier",
        run=run,
        sections=("classifier", "run.seed"),
        inputs=lambda cfg: ("prepare", "pretrain") if in_pipeline(cfg, "pretrain") else ("prepare",),
        external=lambda cfg: [] if in_pipeline(cfg, "pretrain") else weight_files(cfg.classifier.backbone.weights),
        help="train the defect focus classifier (CAM head, CLM, GCM) on image-level labels",
        distributed=True,
    )
)
