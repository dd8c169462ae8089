"""`train-segmenter`: distil the pseudo-mask pipeline into the fast multi-task segmenter (METHOD.md section 6).

Trains on the training split's pseudo-masks (from ``segmenter.masks``, by default the pipeline's last mask-writing
stage before this one: `retrain` in the full method), with the image labels, the teacher's refined CAM
probabilities and the DFC's sample scores (see :mod:`wsss.train.segmenter_data`); early stopping on the validation
split's Seg_mIoU against its *pseudo-masks*. Ground truth is never read.

With ``segmenter.rounds`` > 1 it self-trains: round k > 1 trains a fresh segmenter (seed + k - 1) on round k-1's
masks of the training and validation images (:func:`round_mask`: the image labels decide which classes an image may
hold, the round's ungated probabilities where); the last round's segmenter is the stage's. A finished round keeps
its model and masks in ``round<k>/`` until the stage is done, so a killed run resumes at the round it was in.

Then it segments every indexed image with the trained model (mask gated by its own classification head) and
writes ``masks/<id>.png`` + ``scores.csv`` (its image probabilities), so `evaluate` scores the segmenter like any
mask-writing stage, and ``probs/<id>.png``: the ungated per-pixel defect probability (1 - P(background)) as a 16-bit
PNG, value ``round(p * 65535)``, from which `evaluate` computes pixel AP and pixel AUROC. Outputs:
``segmenter.safetensors`` + ``segmenter.json``, ``metrics.csv``, ``masks/``, ``probs/``, ``scores.csv``. A killed
run resumes from its epoch checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import click
import cv2
import numpy as np

from wsss import distributed as dist
from wsss.artifacts.masks import CONFIDENCE_FILE, write_mask
from wsss.artifacts.scores import SCORES_FILE, read_class_scores
from wsss.atomic import atomic_path
from wsss.cam.io import read_cam_meta
from wsss.config.tree import Config
from wsss.data.classifier_data import label_matrix
from wsss.data.images import read_image
from wsss.data.index import read_dataset_info, read_train_index
from wsss.inference import segment_rows, torch_predictor
from wsss.mask_format import write_labelmap
from wsss.models.segmenter import META_FILE, MODEL_FILE, load_segmenter
from wsss.models.weights import weight_files
from wsss.progress import progress
from wsss.refine.pseudo import CONFIDENCE_RING
from wsss.stages import Stage, mask_source, recorded_margin, register_stage
from wsss.train.loop import CHECKPOINT, METRICS_FILE
from wsss.train.segmenter import SegmenterTrainer
from wsss.train.segmenter_data import SegmenterData, Teacher, reviewed_masks
from wsss.train.self_training import remove_rounds, self_training


def masks_input(cfg: Config) -> str:
    return mask_source(cfg, "train-segmenter", cfg.segmenter.masks, "segmenter.masks")


def round_mask(probs: np.ndarray, labelled: Sequence[int]) -> tuple[np.ndarray, float]:
    """A self-training round's mask of one image from the previous round's per-pixel class probabilities ``probs``
    ``(K+1, H, W)`` and the classes ``labelled`` (1..K) its image label names, with its ``confidence.csv`` value.

    The image label is exact where the pixels are not: an OK image is background everywhere (confidence 1); a
    defective one takes the argmax over background and its labelled classes, ungated (its label says the defect is
    there even where the image head doubted it), and its confidence is the mean winning probability on its defect
    pixels and a ring around them, as `pseudo-labels` rates its masks (the background's mean when the mask is empty).
    """

    if not len(labelled):
        return np.zeros(probs.shape[1:], np.uint8), 1.0
    keep = np.asarray([0, *sorted(labelled)])
    sub = probs[keep]
    mask = keep.astype(np.uint8)[sub.argmax(axis=0)]
    defect = mask > 0
    if not defect.any():
        return mask, float(probs[0].mean())
    ring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * CONFIDENCE_RING + 1,) * 2)
    near = cv2.dilate(defect.astype(np.uint8), ring) > 0
    return mask, float(sub.max(axis=0)[near].mean())


def _write_round_masks(
    model_dir: Path, rows, classes: Sequence[str], out: Path, device, batch_size: int, high_bit_depth: str
) -> None:
    """Round masks (:func:`round_mask`) of ``rows`` into ``out/masks`` and their ``confidence.csv`` (paste sources for
    `segmenter.inject`)."""

    predictor = torch_predictor(*load_segmenter(model_dir, device), device)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    write_labelmap(out / "masks", classes)
    targets = label_matrix(rows, classes)
    conf_rows = []
    for start in progress(range(0, len(rows), batch_size), desc="round masks", unit="batch"):
        batch = rows[start : start + batch_size]
        images = [read_image(r.path, high_bit_depth) for r in batch]
        for j, (r, pred) in enumerate(zip(batch, predictor(images), strict=True)):
            mask, confidence = round_mask(pred.probs, (np.flatnonzero(targets[start + j] > 0) + 1).tolist())
            write_mask(out / "masks" / f"{r.id}.png", mask)
            conf_rows.append(f"{r.id},{confidence:.6g}")
    with atomic_path(out / CONFIDENCE_FILE) as tmp:
        tmp.write_text("id,confidence\n" + "".join(f"{line}\n" for line in conf_rows))


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:
    scfg = cfg.segmenter
    d = Distillation(cfg, inputs)
    click.echo(f"train-segmenter: distilling into {scfg.backbone.name} from {d.masks}")
    if d.reviewed is not None:
        n = len(list(d.reviewed.glob("*.png")))
        click.echo(f"train-segmenter: {n} human-reviewed mask(s) from {d.reviewed} replace their pseudo-masks")
    # self-training rounds before the last (segmenter.rounds): each relabels the training and validation images
    masks = self_training(
        out,
        scfg.rounds - 1,
        d.masks,
        train=lambda k, masks_dir, model_dir: d.trainer(k, masks_dir, model_dir).fit(),
        relabel=d.relabel,
        announce=lambda k, masks_dir: click.echo(f"train-segmenter: round {k}/{scfg.rounds}: training on {masks_dir}"),
    )
    if scfg.rounds > 1:
        click.echo(f"train-segmenter: round {scfg.rounds}/{scfg.rounds}: training on {masks}")
    summary = d.trainer(scfg.rounds, masks, out).fit()
    outputs = {
        "model": out / MODEL_FILE,
        "meta": out / META_FILE,
        "metrics": out / METRICS_FILE,
        "masks": out / "masks",
        "probs": out / "probs",
        "scores": out / SCORES_FILE,
    }
    if not dist.is_main():  # under torchrun every rank trained (DDP); rank 0 segments the images
        return outputs
    best = summary["best_epoch"]
    if summary["epochs_run"] == 0:  # a review round with no reviewed mask to judge it by
        click.echo("train-segmenter: the weights it started from are kept, untrained")
    else:
        kept = (
            f"best epoch {best + 1}" if best >= 0 else "the weights it started from validate best (no epoch beat them)"
        )
        click.echo(f"train-segmenter: {kept} of {summary['epochs_run']}")
    predictor = torch_predictor(*load_segmenter(out, d.device), d.device)
    speed = segment_rows(predictor, d.rows, out, d.classes, scfg.batch_size, cfg.dataset.high_bit_depth)
    click.echo(f"train-segmenter: segmented {len(d.rows)} images, {speed:.1f} images/s")
    shutil.rmtree(out / CHECKPOINT.parent, ignore_errors=True)
    remove_rounds(out, scfg.rounds - 1)
    return outputs


class Distillation:
    """What the segmenter's training rounds share (the images, the masks they start from, the CAM teacher, the
    reviewed masks) and their two steps: a :meth:`trainer` per round, :meth:`relabel` between rounds."""

    def __init__(self, cfg: Config, inputs: dict[str, Path]):
        self.cfg, self.inputs = cfg, inputs
        scfg = cfg.segmenter
        index = inputs["prepare"] / "index.csv"
        cam_dir = inputs["cam"]
        self.classes = list(read_cam_meta(cam_dir)["classes"])
        self.masks = inputs[masks_input(cfg)] / "masks"
        self.rows = read_train_index(index)
        self.in_chans = scfg.backbone.in_chans or read_dataset_info(index).channels
        self.teacher = Teacher(
            cam_dir=cam_dir,
            scores=read_class_scores(cam_dir / SCORES_FILE, self.classes),
            bg_prior=cfg.pseudo.bg_prior,
            kd_weight=scfg.kd_weight,
            temperature=scfg.kd_temperature,
            score_weight=scfg.score_kd_weight,
        )
        self.device = dist.resolve_device(cfg.run.device)
        self.reviewed = reviewed_masks(scfg.reviewed, "segmenter.reviewed")
        self.train_rows = [r for r in self.rows if r.split == "train"]
        self.val_rows = [r for r in self.rows if r.split == "val"]

    def trainer(self, k: int, masks_dir: Path, model_dir: Path) -> SegmenterTrainer:
        """Round ``k``'s trainer, on ``masks_dir``'s masks, into ``model_dir``."""
        cfg, scfg = self.cfg, self.cfg.segmenter
        data = SegmenterData(
            self.train_rows,
            masks_dir,
            self.classes,
            self.in_chans,
            val_rows=self.val_rows,
            teacher=self.teacher,
            reviewed_dir=self.reviewed,
            reviewed_repeat=scfg.reviewed_repeat,
            # the margin the mask stage drew is ignored; a self-training round's own masks have none
            margin=recorded_margin(self.inputs[masks_input(cfg)]) if k == 1 else 0,
            high_bit_depth=cfg.dataset.high_bit_depth,
            fit=cfg.dataset.fit,
        )
        return SegmenterTrainer(
            scfg,
            data,
            model_dir,
            cfg.seed("segmenter") + k - 1,
            self.device,
            click.echo,
            patience=scfg.patience,
            val_every=scfg.val_every,
            score_threshold=scfg.score_threshold,
            section="segmenter",
        )

    def relabel(self, k: int, model_dir: Path, rdir: Path) -> None:
        """The round's masks of the training and validation images (:func:`round_mask`) into ``rdir``."""
        rows = self.train_rows + self.val_rows
        scfg = self.cfg.segmenter
        _write_round_masks(
            model_dir, rows, self.classes, rdir, self.device, scfg.batch_size, self.cfg.dataset.high_bit_depth
        )


STAGE = register_stage(
    Stage(
        name="train-segmenter",
        run=run,
        # the teacher's background prior; the masks' margin travels with them (recorded_margin)
        sections=("segmenter", "pseudo.bg_prior", "run.seed"),
        inputs=lambda cfg: ("prepare", "cam", masks_input(cfg)),
        external=lambda cfg: (
            weight_files(cfg.segmenter.backbone.weights)
            + ([Path(cfg.segmenter.reviewed)] if cfg.segmenter.reviewed else [])
        ),
        writes_masks=True,
        help="distil into the fast multi-task segmenter (KD from the CAM teacher), then segment every image",
        distributed=True,
    )
)
