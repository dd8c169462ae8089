"""`retrain`: the additional training round(s) of METHOD.md section 5.

Per round: train the multi-task segmenter on the current pseudo-masks of the *training* split (ignore pixels excluded
from the loss), predict every indexed image, fuse with the extended CAM
(``fuse_weight * segmenter probability + (1 - fuse_weight) * CAM``, per class; with anomaly priors the CAM term is
the `pseudo-labels` unary, the CAM fused with the anomaly map), and label the fused map with the
same rule as `pseudo-labels` (dense CRF, ignore regions, gating by the DFC's sample score; ``retrain.bg_prior`` and
``retrain.margin``, where set, replace ``pseudo.bg_prior`` and ``pseudo.margin`` for the fused map). The next round trains
on these masks. Writes the last round's ``masks/``, ``confidence.csv``, ``scores.csv`` (the DFC's, for evaluation)
and its segmenter (``segmenter.safetensors`` + ``segmenter.json``).

The rounds are :func:`wsss.train.self_training.self_training`'s, as the segmenter's own rounds are. A killed run
resumes: a finished round is skipped, the segmenter from its epoch checkpoint, prediction after the last fused map
written.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import click

from wsss import distributed as dist
from wsss.anomaly.io import anomaly_path, read_anomaly, read_range
from wsss.artifacts.masks import CONFIDENCE_FILE, write_confidence
from wsss.artifacts.scores import SCORES_FILE, read_scores
from wsss.cam.gate import read_calls
from wsss.cam.io import cam_path, read_cam, read_cam_meta, write_cam
from wsss.config.tree import Config
from wsss.data.images import read_image
from wsss.data.index import read_dataset_info, read_train_index
from wsss.inference import torch_predictor
from wsss.mask_format import write_labelmap
from wsss.models.segmenter import META_FILE, MODEL_FILE, load_segmenter
from wsss.models.weights import weight_files
from wsss.progress import progress
from wsss.refine.pseudo import LabelTask, label_all
from wsss.refine.unary import unary_map
from wsss.stages import Stage, mask_margin, recorded_margin, register_stage
from wsss.train.segmenter import SegmenterTrainer
from wsss.train.segmenter_data import SegmenterData, reviewed_masks
from wsss.train.self_training import remove_rounds, round_dir, self_training


def _round1_unary(cfg: Config, inputs: dict[str, Path]) -> Callable:
    """``(id, cam) -> map``: the `pseudo-labels` unary of an image (its CAM, or its fusion with the anomaly map)."""
    if cfg.pseudo.unary == "cam":
        return lambda sid, cam: cam

    lo, hi = read_range(inputs["anomaly"])

    def fused(sid: str, cam):
        return unary_map(cam, read_anomaly(anomaly_path(inputs["anomaly"], sid), lo, hi, cam.shape[1:]), cfg.pseudo)

    return fused


def fuse(probs, cam, weight: float):
    """The retrain round's fused map: ``weight * segmenter defect probabilities + (1 - weight) * CAM``, both
    ``(K, H, W)`` over the defect classes (``weight`` 0 = the CAM alone, 1 = the segmenter alone)."""
    return weight * probs + (1 - weight) * cam


def keep_reviewed(reviewed: Path | None, ids: list[str], masks: Path, rows: list[dict]) -> None:
    """A reviewed image's mask is the person's, not the relabelling's: copied over the round's mask (confidence 1)."""
    known = {r["id"]: r for r in rows}
    for sid in ids:
        if sid in known:
            shutil.copyfile(reviewed / f"{sid}.png", masks / f"{sid}.png")
            known[sid]["confidence"] = 1.0


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:
    rounds = RetrainRounds(cfg, inputs)
    if rounds.human:
        click.echo(
            f"retrain: {len(rounds.human)} human-reviewed mask(s) from {rounds.reviewed} replace their pseudo-masks"
        )
    self_training(
        out,
        cfg.retrain.rounds,
        inputs["pseudo-labels"] / "masks",
        rounds.train,
        rounds.relabel,
        announce=lambda k, masks_dir: click.echo(
            f"retrain: round {k}/{cfg.retrain.rounds}: training the segmenter on {masks_dir}"
        ),
    )
    outputs = {"masks": out / "masks", "confidence": out / CONFIDENCE_FILE, "model": out / MODEL_FILE}
    if dist.is_main():  # the last round's masks, confidence and segmenter are the stage's
        last = round_dir(out, cfg.retrain.rounds)
        shutil.move(last / "masks", out / "masks")
        write_labelmap(out / "masks", rounds.classes)
        for src in (last / "model" / MODEL_FILE, last / "model" / META_FILE, last / CONFIDENCE_FILE):
            shutil.move(src, out / src.name)
        remove_rounds(out, cfg.retrain.rounds)
        shutil.copyfile(inputs["cam"] / SCORES_FILE, out / SCORES_FILE)
    return outputs


class RetrainRounds:
    """What every round of the stage shares (the images, the DFC's calls, the reviewed masks, the labelling
    settings of the fused map) and its two steps: :meth:`train` a segmenter, :meth:`relabel` with it."""

    def __init__(self, cfg: Config, inputs: dict[str, Path]):
        self.cfg, self.rcfg, self.inputs = cfg, cfg.retrain, inputs
        self.reviewed = reviewed_masks(self.rcfg.reviewed, "retrain.reviewed")
        self.human = sorted(p.stem for p in self.reviewed.glob("*.png")) if self.reviewed is not None else []
        index = inputs["prepare"] / "index.csv"
        self.cam_dir = inputs["cam"]
        meta = read_cam_meta(self.cam_dir)
        self.classes = list(meta["classes"])
        self.scores = read_scores(self.cam_dir / SCORES_FILE)
        self.called = read_calls(self.cam_dir)  # the cam stage's gate (cam.gate)
        self.in_chans = self.rcfg.backbone.in_chans or read_dataset_info(index).channels
        self.rows = read_train_index(index)
        self.device = dist.resolve_device(cfg.run.device)
        # with anomaly priors, the round-1 unary (CAM fused with the anomaly map) stands in for the CAM in the fused
        # map, which is then labelled as a plain map
        self.unary = _round1_unary(cfg, inputs)
        self.pcfg = dataclasses.replace(
            cfg.pseudo,
            unary="cam",
            bg_prior=cfg.pseudo.bg_prior if self.rcfg.bg_prior is None else self.rcfg.bg_prior,
            margin=mask_margin(cfg, "retrain"),
        )

    def train(self, k: int, masks_dir: Path, model_dir: Path) -> None:
        """Round ``k``'s segmenter, on ``masks_dir``'s masks of the training split, into ``model_dir``."""
        cfg = self.cfg
        data = SegmenterData(
            [r for r in self.rows if r.split == "train"],
            masks_dir,
            self.classes,
            self.in_chans,
            reviewed_dir=self.reviewed,
            # the margin the previous labelling drew is ignored (round 1: the pseudo-labels stage's)
            margin=recorded_margin(self.inputs["pseudo-labels"]) if k == 1 else mask_margin(cfg, "retrain"),
            high_bit_depth=cfg.dataset.high_bit_depth,
            fit=cfg.dataset.fit,
        )
        SegmenterTrainer(self.rcfg, data, model_dir, cfg.seed("retrain") + k - 1, self.device, click.echo).fit()

    def relabel(self, k: int, model_dir: Path, rdir: Path) -> None:
        """The round's segmenter fused with the CAM, then the labelling rule (on rank 0): ``rdir/masks`` and the
        masks' confidence, by which the next round chooses its paste sources (``retrain.inject``)."""
        fused_dir = rdir / "fused"
        t0 = time.perf_counter()
        predicted = self._predict_fused(k, model_dir, fused_dir)
        predict_s = time.perf_counter() - t0
        tasks = [
            LabelTask(
                r.id,
                r.path,
                fused_dir / f"{r.id}.npz",
                rdir / "masks" / f"{r.id}.png",
                self.called[r.id],
                len(self.classes),
                self.pcfg,
                self.cfg.dataset.high_bit_depth,
            )
            for r in self.rows
        ]
        (rdir / "masks").mkdir(exist_ok=True)
        t0 = time.perf_counter()
        label_rows = label_all(tasks, self.cfg.pseudo.workers, click.echo)
        keep_reviewed(self.reviewed, self.human, rdir / "masks", label_rows)
        write_confidence(rdir / CONFIDENCE_FILE, label_rows, self.scores)
        click.echo(
            f"retrain: round {k}: predicted {predicted / max(predict_s, 1e-9):.1f} images/s, "
            f"labelled {len(tasks) / max(time.perf_counter() - t0, 1e-9):.2f} images/s"
        )
        shutil.rmtree(fused_dir)

    def _predict_fused(self, k: int, model_dir: Path, fused_dir: Path) -> int:
        """Every image's fused map (``fuse_weight`` x the segmenter's defect probabilities + the rest x the CAM) in
        ``fused_dir``, resuming after the last one written; returns how many it predicted."""
        predictor = torch_predictor(*load_segmenter(model_dir, self.device), self.device)
        fused_dir.mkdir(parents=True, exist_ok=True)
        todo = [r for r in self.rows if not (fused_dir / f"{r.id}.npz").is_file()]
        size = self.rcfg.batch_size
        for start in progress(range(0, len(todo), size), desc=f"predict round {k}", unit="batch"):
            batch = todo[start : start + size]
            images = [read_image(r.path, self.cfg.dataset.high_bit_depth) for r in batch]
            for r, img, pred in zip(batch, images, predictor(images), strict=True):
                cam = self.unary(r.id, read_cam(cam_path(self.cam_dir, r.id), img.shape[:2], len(self.classes)))
                write_cam(fused_dir / f"{r.id}.npz", fuse(pred.probs[1:], cam, self.rcfg.fuse_weight))
        return len(todo)


STAGE = register_stage(
    Stage(
        name="retrain",
        run=run,
        sections=("retrain", "pseudo", "run.seed"),
        external=lambda cfg: (
            weight_files(cfg.retrain.backbone.weights) + ([Path(cfg.retrain.reviewed)] if cfg.retrain.reviewed else [])
        ),
        inputs=lambda cfg: ("prepare", "cam", "pseudo-labels") + (("anomaly",) if cfg.pseudo.unary != "cam" else ()),
        writes_masks=True,
        help="additional training round(s): a segmenter on the pseudo-masks, fused with the CAM, CRF again",
        distributed=True,
    )
)
