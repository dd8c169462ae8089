"""Training the multi-task segmenter on pseudo-masks: the `retrain` round (METHOD.md 5) and the distillation (6).

Supervision is only what weak supervision produced (:mod:`wsss.train.segmenter_data`): pseudo-masks, image labels and,
when distilling, the teacher's CAMs and sample scores; ground-truth masks are never read. Loss: CE + Dice on the
pseudo-masks (ignore excluded) + image-level BCE, plus with a :class:`~wsss.train.segmenter_data.Teacher` the per-pixel
KL toward the teacher's class distribution and the BCE toward the DFC's sample scores. With ``inject`` on
(:mod:`wsss.train.inject`), OK training images train as all background, and those given an injected defect train CE +
Dice on its exact mask (at full weight, as any labelled pixel) and the image BCE as defective, but neither
distillation term: the teacher's CAM and score never saw the injected defect.

With validation rows (`train-segmenter`), every epoch scores Seg_mIoU of the gated prediction against the
validation images' *pseudo-masks* (ignore pixels excluded); with ``select: val`` it keeps the best epoch's weights and
stops early after ``patience`` epochs without improvement, with ``select: last`` it trains every epoch and keeps the
last (validation only logged). Without validation rows (`retrain`), the configured epochs are trained and the last
weights kept. With ``ema_epochs`` > 0 the weights validated and kept are their moving average
(:mod:`wsss.train.average`) over about that many epochs.

Every epoch writes ``metrics.csv`` and a checkpoint (model, optimizer, schedule, epoch, best so far) from which a
killed run resumes exactly: data order and augmentation are seeded by (seed, epoch[, index]).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsss import distributed as dist
from wsss.artifacts.masks import CONFIDENCE_FILE, read_confidence
from wsss.atomic import write_json
from wsss.data.transforms import Augment
from wsss.errors import ConfigError, StageError
from wsss.evaluation.metrics import SegAccumulator
from wsss.labels import IGNORE
from wsss.models.backbone import backbone_meta, create_backbone
from wsss.models.chunked import forward_chunked
from wsss.models.compile import channels_last_input, maybe_compile, to_channels_last
from wsss.models.segmenter import META_FILE, MODEL_FILE, Segmenter, gate_labels
from wsss.models.state import load_trained_state, save_state_dict
from wsss.train.average import WeightAverage
from wsss.train.checkpoint import write_metrics
from wsss.train.config import SegTrainConfig
from wsss.train.inject import check_inject, describe_injection
from wsss.train.loop import METRICS_FILE, NO_KEY, Loop, train_pass
from wsss.train.losses import distillation_kl, score_distillation, segmentation_loss
from wsss.train.sampling import epoch_loader, make_train_sampler, pos_weight
from wsss.train.schedule import epochs_for_steps, warmup_cosine
from wsss.train.segmenter_data import PseudoMaskDataset, SegmenterData

GRAD_CLIP = 5.0  # max gradient norm
COLUMNS = (
    "epoch",
    "lr",
    "loss",
    "loss_seg",
    "loss_cls",
    "loss_kd",
    "loss_score_kd",
    "val_loss",
    "val_seg_miou",
    "images_per_s",
    "seconds",
)


# --------------------------------------------------------------------------------------------- built from its section
def build_segmenter(scfg: SegTrainConfig, num_classes: int, in_chans: int, section: str = "retrain") -> Segmenter:
    """A segmenter as configured by a `retrain` or `segmenter` section (encoder weights from its local file, if any)."""
    backbone = create_backbone(scfg.backbone, in_chans, section=f"{section}.backbone")
    return Segmenter(backbone, num_classes, scfg.decoder_channels, scfg.cls_lse_r, scfg.cls_source)


def segmenter_meta(
    scfg: SegTrainConfig, classes: Sequence[str], in_chans: int, score_threshold: float = 0.5
) -> dict[str, Any]:
    """Everything needed to rebuild and run the trained segmenter (saved as ``segmenter.json``)."""
    chans = scfg.backbone.in_chans or in_chans
    return {
        "backbone": backbone_meta(scfg.backbone, chans),
        "classes": list(classes),
        "in_chans": chans,
        "input_size": list(scfg.input_size),
        "decoder_channels": scfg.decoder_channels,
        "cls_lse_r": float(scfg.cls_lse_r),
        "cls_source": scfg.cls_source,
        "score_threshold": float(score_threshold),
        "guided": {"radius": float(scfg.guided.radius), "eps": float(scfg.guided.eps)},
        "flips": bool(scfg.flips),
    }


# ----------------------------------------------------------------------------------------------------- trainer
class SegmenterTrainer:
    """Trains one segmenter into ``out`` on the pseudo-masks in ``masks_dir`` for ``rows_train``.

    Writes ``segmenter.safetensors`` + ``segmenter.json`` (the best validation epoch's weights, or the last epoch's
    without validation rows), ``metrics.csv`` and ``checkpoints/last.pt`` (every epoch; the caller removes it when
    done). Under DDP only rank 0 writes.

    Args:
        scfg: the `retrain` or `segmenter` section.
        data: the images, their mask set and what comes with it (:class:`~wsss.train.segmenter_data.SegmenterData`).
        out: the folder it writes.
        patience: stop after this many epochs without a better validation Seg_mIoU (0 = never).
        val_every: validate every this many epochs (and the last one), as `segmenter.val_every`.
        score_threshold: the gate used for validation predictions (and recorded in ``segmenter.json``).
        section: the config section, for error messages.
    """

    def __init__(
        self,
        scfg: SegTrainConfig,
        data: SegmenterData,
        out: Path,
        seed: int = 0,
        device: str | torch.device = "auto",
        echo: Callable[[str], None] = print,
        cache_mb: int = 2048,
        patience: int = 0,
        val_every: int = 1,
        score_threshold: float = 0.5,
        section: str = "retrain",
    ):
        rows_train, masks_dir, teacher = data.rows, data.masks_dir, data.teacher
        self.scfg, self.out, self.seed, self.classes = scfg, Path(out), int(seed), list(data.classes)
        self.teacher, self.patience, self.score_threshold = teacher, patience, score_threshold
        self.val_every, self.section = val_every, section
        self.echo = echo if dist.is_main() else (lambda *_: None)
        self.device = dist.resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.in_chans = scfg.backbone.in_chans or data.in_chans
        size = tuple(scfg.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(
                f"{section}.input_size", f"expected [H, W] with positive sizes, got {list(size)}", "e.g. [128, 128]"
            )
        if not rows_train:
            raise StageError(masks_dir, "no training images to train the segmenter on", "check the train split")
        common = {"classes": self.classes, "input_size": size, "in_chans": self.in_chans, "seed": self.seed}
        common |= {"high_bit_depth": data.high_bit_depth, "reviewed_dir": data.reviewed_dir}
        common |= {"missed_defects": scfg.missed_defects, "ok_background": scfg.ok_background}
        common |= {"margin": data.margin, "fit": data.fit}
        self.input_fit = data.fit
        inject = {}
        if scfg.inject.enabled:
            check_inject(scfg.inject, section)
            inject = {"inject": scfg.inject, "confidence": read_confidence(Path(masks_dir).parent / CONFIDENCE_FILE)}
        crop = tuple(scfg.crop)
        if min(crop) > 0 and (crop[0] > size[0] or crop[1] > size[1]):
            raise ConfigError(
                f"{section}.crop", f"{list(crop)} is larger than input_size {list(size)}", "use a crop <= input_size"
            )
        self.train_set = PseudoMaskDataset(
            rows_train, masks_dir, augment=Augment(scfg.augment), teacher=teacher, crop=crop, **common, **inject
        )
        if self.train_set.injector is not None:
            n_ok = int((self.train_set.targets().max(1) == 0).sum())
            self.echo(describe_injection(self.train_set.injector, n_ok, len(self.classes), section, masks_dir))
        # the masks a person drew are the best ground truth a run has: validation scores them too (the reviewed
        # training images with their human masks), so a fine-tuning that learns them is not judged by the pseudo-masks
        # of the validation images alone, which the model it starts from was selected to match
        human = [rows_train[i] for i in sorted(self.train_set.reviewed)]
        val_rows = [*data.val_rows, *human] if data.val_rows else []
        self.val_set = PseudoMaskDataset(val_rows, masks_dir, **common) if val_rows else None
        datasets = [d for d in (self.train_set, self.val_set) if d is not None]
        if sum(d.cache_bytes() for d in datasets) <= cache_mb * 2**20:
            for d in datasets:
                d.preload(threads=max(2, scfg.workers))
        targets = self.train_set.targets()
        repeats = np.ones(len(targets), np.int64)
        repeats[sorted(self.train_set.reviewed)] = data.reviewed_repeat
        self.sampler = make_train_sampler(scfg.balance, targets.max(1) > 0, self.seed, repeats)
        self.pos_weight = pos_weight(targets).to(self.device) if scfg.balance == "pos_weight" else None

        torch.manual_seed(self.seed)
        self.model = build_segmenter(scfg, len(self.classes), self.in_chans, section)
        if scfg.init_from:
            self._init_from(Path(scfg.init_from), section)
        self.model = self.model.to(self.device)
        self.model = to_channels_last(self.model, scfg.channels_last)
        self.net: torch.nn.Module = self.model
        if dist.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # training forward passes go through this one (`section`.compile); state_dicts, parameters and validation
        # use the eager self.model / self.net
        self.train_net = maybe_compile(self.net, scfg.compile, f"{section}.compile")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=scfg.lr, weight_decay=scfg.weight_decay)
        steps = len(self.loader(0))
        self.epochs = epochs_for_steps(scfg.epochs, steps, scfg.min_steps)
        if self.epochs > scfg.epochs:
            self.patience = math.ceil(patience * self.epochs / scfg.epochs)
            self.echo(
                f"{section}: {scfg.epochs} epochs of {steps} steps are under min_steps {scfg.min_steps}: training "
                f"{self.epochs} epochs" + (f", patience {self.patience}" if patience else "")
            )
        self.scheduler = warmup_cosine(self.optimizer, scfg.warmup_epochs * steps, self.epochs * steps)
        self.amp = scfg.amp and self.device.type == "cuda"
        # what validation scores and what is saved: the weights' moving average (segmenter.ema_epochs) or the weights
        self.average = WeightAverage(self.model, max(1.0, scfg.ema_epochs * steps)) if scfg.ema_epochs > 0 else None
        self.kept = self.average.module if self.average is not None else self.model
        # the best validation epoch is kept (and training stops early), or the last epoch
        self.selects = self.val_set is not None and scfg.select == "val"
        # a fine-tuning validates the weights it starts from first (epoch -1) and keeps them when no epoch beats them
        self.baseline = bool(scfg.init_from) and self.selects
        # a review round (segmenter.reviewed) without a human mask among its images has nothing to be judged by
        self.unjudged = self.baseline and data.reviewed_dir is not None and not human

    def _init_from(self, folder: Path, section: str) -> None:
        """Load ``folder``'s trained segmenter weights into the freshly built model (``section.init_from``)."""

        key = f"{section}.init_from"
        fix = f"point {key} at a train-segmenter (or retrain) folder of a run with the same recipe and classes"
        meta_path = folder / META_FILE
        if not (meta_path.is_file() and (folder / MODEL_FILE).is_file()):
            raise ConfigError(key, f"{folder} holds no {MODEL_FILE} + {META_FILE}", fix)
        classes = json.loads(meta_path.read_text()).get("classes")
        if classes != self.classes:
            raise ConfigError(key, f"{folder} was trained for classes {classes}, this run has {self.classes}", fix)
        load_trained_state(self.model, folder / MODEL_FILE, fix)
        self.echo(f"{section}: starting from the weights in {folder}")

    def loader(self, epoch: int) -> DataLoader:
        return epoch_loader(
            self.train_set, self.sampler, epoch, self.seed, self.scfg.batch_size, self.scfg.workers, self.device
        )

    def _input(self, batch: dict[str, Any]) -> torch.Tensor:
        x = batch["image"].to(self.device, non_blocking=True)
        return channels_last_input(x, self.scfg.channels_last)

    def losses(self, out, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every loss term of one batch (on the device) and their weighted sum, ``"loss"``."""
        mask, y = batch["mask"].to(self.device), batch["target"].to(self.device)
        parts = {
            "loss_seg": segmentation_loss(out.mask_logits, mask, self.scfg.dice_weight, self.scfg.dice_over),
            "loss_cls": F.binary_cross_entropy_with_logits(out.cls_logits.float(), y, pos_weight=self.pos_weight),
        }
        loss = parts["loss_seg"] + self.scfg.cls_weight * parts["loss_cls"]
        t = self.teacher
        if t is not None and "teacher" in batch:
            w = 1.0 - batch["reviewed"].to(self.device)  # a person's mask outranks the teacher
            if "injected" in batch:  # the teacher never saw an injected defect
                w = w * (1.0 - batch["injected"].to(self.device))
            parts["loss_kd"] = distillation_kl(out.mask_logits, batch["teacher"].to(self.device), t.temperature, w)
            parts["loss_score_kd"] = score_distillation(out.cls_logits, batch["teacher_score"].to(self.device), w)
            loss = loss + t.kd_weight * parts["loss_kd"] + t.score_weight * parts["loss_score_kd"]
        return {"loss": loss, **parts}

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.train_net(self._input(batch))
        parts = self.losses(out, batch)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        return {k: v.item() for k, v in parts.items()}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.net.train()
        return train_pass(self.model, self.loader(epoch), self.train_step, f"epoch {epoch + 1}/{self.epochs}")

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss and Seg_mIoU of the gated prediction against the pseudo-masks (ignore excluded).

        Seg_mIoU is undefined (nan) when neither the pseudo-masks nor the predictions have a defect pixel.
        """
        if self.val_set is None:
            return {"val_loss": float("nan"), "val_seg_miou": float("nan")}
        self.net.eval()
        self.kept.eval()
        acc, loss_sum = SegAccumulator(), 0.0
        loader = DataLoader(self.val_set, batch_size=self.scfg.batch_size, num_workers=self.scfg.workers)
        for batch in loader:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = forward_chunked(self.kept, self._input(batch))
            loss_sum += self.losses(out, batch)["loss"].item() * len(batch["image"])
            probs = torch.softmax(out.mask_logits.float(), 1).cpu().numpy()
            cls = torch.sigmoid(out.cls_logits.float()).cpu().numpy()
            for p, c, m in zip(probs, cls, batch["mask"].numpy(), strict=True):
                valid = m != IGNORE
                pred = gate_labels(p, c, self.score_threshold)
                acc.add((pred > 0) & valid, (m > 0) & valid)
        return {"val_loss": loss_sum / len(self.val_set), "val_seg_miou": acc.seg_miou()}

    def meta(self) -> dict[str, Any]:
        """What rebuilds and runs the segmenter this trainer trains (``segmenter.json`` without the training record)."""
        meta = segmenter_meta(self.scfg, self.classes, self.in_chans, self.score_threshold)
        if self.input_fit != "stretch":
            meta["fit"] = self.input_fit
        return meta

    def _save_model(self, epoch: int) -> None:
        """Save the kept weights; ``kept_epoch`` in the meta says which epoch they are (-1: the weights it started
        from, when no epoch of a fine-tuning validated better)."""
        save_state_dict(self.kept, self.out / MODEL_FILE)
        write_json(self.out / META_FILE, self.meta() | {"epochs": self.epochs, "seed": self.seed, "kept_epoch": epoch})

    def _selection_key(self, row: dict[str, float], epoch: int) -> list[float]:
        """Larger is better: validation Seg_mIoU (an undefined one counts as 0), lower loss breaking ties. Without
        validation rows, or with ``select: last``, no epoch is "best": the model is saved once, after the last epoch
        (:meth:`fit`)."""
        if not self.selects:
            return list(NO_KEY)
        miou = row["val_seg_miou"]
        return [0.0 if np.isnan(miou) else miou, -row["val_loss"]]

    def _describe(self, row: dict[str, float], best_epoch: int) -> str:
        val = ""
        if self.val_set is not None and "val_seg_miou" in row:
            kept = f"best epoch {best_epoch + 1}" if best_epoch >= 0 else "best: the weights it started from"
            kept = kept if self.selects else "the last epoch is kept"
            val = f"  val Seg_mIoU {row['val_seg_miou']:.4f} ({kept})"
        return (
            f"epoch {int(row['epoch']) + 1}/{self.epochs}: loss {row['loss']:.4f} (seg {row['loss_seg']:.4f}, "
            f"cls {row['loss_cls']:.4f}){val}  {row['images_per_s']:.1f} img/s"
        )

    def fit(self) -> dict[str, Any]:
        """Train (resuming from ``out/checkpoints/last.pt`` if present) and save the model; returns a summary. A
        review round (``reviewed`` and ``init_from`` set) with no reviewed mask among its images keeps its start."""
        if self.unjudged:
            # pseudo-masks cannot judge a fine-tuning on the pseudo-masks: it learns their errors. On KSDD's three
            # folds such a round's epoch chosen on them moved test mIoU_def by 0 / +7.1 / -0.7 points, and chosen
            # with a bootstrap interval above zero, by -2.8 on the last fold: nothing a review round can stand on
            self.echo(
                f"{self.section}: no reviewed mask to judge the fine-tuning by: the weights it starts from are kept"
            )
            if dist.is_main():
                write_metrics(self.out / METRICS_FILE, [], COLUMNS)
                self._save_model(-1)
            dist.barrier()
            return {"epochs_run": 0, "best_epoch": -1, "final_loss": float("nan")}
        st = Loop(
            self.out,
            self.epochs,
            self.model,
            self.optimizer,
            self.scheduler,
            self.train_epoch,
            self.validate,
            self._selection_key,
            self._save_model,
            COLUMNS,
            self._describe,
            patience=self.patience if self.selects else 0,
            val_every=self.val_every,
            stop_message="early stop: no better validation Seg_mIoU",
            echo=self.echo,
            average=self.average,
            baseline=self.baseline,  # a fine-tuning never ends below its start
        ).run()
        if not self.selects and dist.is_main():
            self._save_model(len(st.rows) - 1)
        dist.barrier()
        return {
            "epochs_run": len(st.rows),
            "best_epoch": st.best_epoch if self.selects else len(st.rows) - 1,
            "final_loss": st.rows[-1]["loss"] if st.rows else float("nan"),
        }
