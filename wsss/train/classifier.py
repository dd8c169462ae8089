"""Training the Defect Focus Classifier (METHOD.md section 1): the work of the `train-classifier` stage.

One step: the batch goes through the DFC (BCE on the LSE-pooled scores, plus CLM's InfoNCE on CAM-weighted
embeddings); with GCM, crops around each defective image's current CAM peak (random crops for OK images) form a
second half-batch with the same labels (plus the optional consistency loss). The two halves are two
forward/backward passes whose gradients accumulate (``no_sync`` on the first under DDP), so the step costs
about twice a plain one and needs no extra CAM pass. With ``classifier.equivariance`` the first half also trains on
its images flipped, and the two views' CAMs, flipped back, are pulled together (a CAM beside the defect moves under
a flip).

Every epoch: validation image AP and loss (the epoch kept and early stopping follow ``classifier.select``), ``metrics.csv``, and
a checkpoint (model, optimizer, schedule, counters) from which a killed run resumes exactly: data order,
augmentation and crop jitter are all seeded by (seed, epoch), so a resumed run repeats the same steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsss import distributed as dist
from wsss.atomic import write_json
from wsss.cam.gcm import crop_and_resize, crop_boxes
from wsss.data.classifier_data import ImageDataset, target_classes
from wsss.data.config import DatasetConfig
from wsss.data.index import read_dataset_info, read_train_index
from wsss.data.transforms import Augment, FeatureAugment
from wsss.errors import StageError
from wsss.evaluation.metrics import auroc, average_precision
from wsss.models.backbone import backbone_meta, create_backbone
from wsss.models.chunked import forward_chunked
from wsss.models.classifier import DFC, META_FILE, MODEL_FILE
from wsss.models.compile import channels_last_input, maybe_compile, to_channels_last
from wsss.models.prefix import FrozenSplit, split_frozen
from wsss.models.state import save_state_dict
from wsss.progress import progress
from wsss.train.config import ClassifierConfig
from wsss.train.feature_cache import FeatureDataset, FeatureStore, PrefixFirstDFC, SuffixDFC, cache_bytes
from wsss.train.loop import Loop, train_pass
from wsss.train.losses import flip_equivariance, gcm_consistency, supervised_infonce
from wsss.train.sampling import epoch_loader, make_train_sampler, pos_weight
from wsss.train.schedule import warmup_cosine

COLUMNS = (
    "epoch",
    "lr",
    "loss",
    "loss_cls",
    "loss_clm",
    "loss_gcm",
    "loss_eq",
    "val_loss",
    "val_ap",
    "val_auroc",
    "images_per_s",
    "seconds",
)


# --------------------------------------------------------------------------------------------- built from its section
def build_dfc(ccfg: ClassifierConfig, num_classes: int, in_chans: int) -> DFC:
    """A DFC as configured (backbone weights from the configured local file, if any)."""
    backbone = create_backbone(ccfg.backbone, in_chans)
    clm_dim = ccfg.clm.dim if ccfg.clm.enabled else 0
    return DFC(backbone, num_classes, lse_r=ccfg.lse_r, clm_dim=clm_dim, clm_hidden=ccfg.clm.hidden)


def model_meta(ccfg: ClassifierConfig, classes: list[str], in_chans: int, stride: int) -> dict[str, Any]:
    """Everything needed to rebuild the trained DFC from its state_dict (saved as ``dfc.json``)."""
    backbone = backbone_meta(ccfg.backbone, in_chans)
    return {
        "backbone": backbone,
        "classes": classes,
        "in_chans": in_chans,
        "stride": stride,
        "input_size": list(ccfg.input_size),
        "lse_r": ccfg.lse_r,
        "clm": {"enabled": ccfg.clm.enabled, "dim": ccfg.clm.dim, "hidden": ccfg.clm.hidden},
    }


class ClassifierTrainer:
    """Trains one DFC of the ``classifier`` section ``ccfg`` into ``out`` from the index of a finished `prepare` stage
    (``dataset``: how its images are read and placed)."""

    def __init__(
        self,
        ccfg: ClassifierConfig,
        dataset: DatasetConfig,
        index: Path,
        out: Path,
        seed: int = 0,
        device: str = "auto",
        echo: Callable[[str], None] = print,
        feature_store: FeatureStore | None = None,
    ):
        self.ccfg, self.fit_mode, self.out = ccfg, dataset.fit, Path(out)
        self.seed = seed
        self.echo = echo if dist.is_main() else (lambda *_: None)
        self.device = dist.resolve_device(device)
        info = read_dataset_info(index)
        self.classes = target_classes(info.classes, self.ccfg.binary)
        self.in_chans = self.ccfg.backbone.in_chans or info.channels
        train_rows, val_rows = read_train_index(index, "train"), read_train_index(index, "val")
        if not train_rows or not any(r.labels for r in train_rows) or all(r.labels for r in train_rows):
            raise StageError(
                index,
                "the train split needs both defective and defect-free images",
                "check the dataset labels and prepare.split",
            )
        size = tuple(self.ccfg.input_size)
        if len(size) != 2:
            raise StageError("classifier.input_size", f"expected [H, W], got {list(size)}", "e.g. [128, 128]")
        common = {
            "classes": self.classes,
            "input_size": size,
            "in_chans": self.in_chans,
            "seed": self.seed,
            "high_bit_depth": dataset.high_bit_depth,
            "fit": dataset.fit,
        }
        torch.manual_seed(self.seed)
        self.model = build_dfc(self.ccfg, len(self.classes), self.in_chans).to(self.device)
        self.model = to_channels_last(self.model, self.ccfg.channels_last)
        # with classifier.cache_features, the frozen stages run once per image and the rest trains on their features
        frozen = split_frozen(self.model.backbone, self.in_chans)  # None: nothing frozen, or no chain of modules
        self.split = self._feature_split(frozen, train_rows, val_rows, size)
        augment = None if self.split is not None else Augment(self.ccfg.augment)
        self.train_set: ImageDataset | FeatureDataset = ImageDataset(train_rows, augment=augment, **common)
        self.val_set: ImageDataset | FeatureDataset | None = ImageDataset(val_rows, **common) if val_rows else None
        datasets = [d for d in (self.train_set, self.val_set) if d is not None]
        # the images are decoded once into memory, unless the store already holds every feature they would give
        stored = self.split is not None and feature_store is not None
        stored = stored and all(feature_store.holds(d, self.split) for d in datasets)
        if not stored and sum(d.cache_bytes() for d in datasets) <= self.ccfg.cache_mb * 2**20:
            for d in datasets:
                d.preload(threads=max(2, self.ccfg.workers))
        if self.split is not None:
            self.model.eval()
            feature_set = partial(
                FeatureDataset,
                split=self.split,
                device=self.device,
                batch_size=self.ccfg.batch_size,
                channels_last=self.ccfg.channels_last,
                store=feature_store,
            )
            self.train_set = feature_set(self.train_set, augment=FeatureAugment(self.ccfg.augment))
            self.val_set = feature_set(self.val_set, augment=None) if self.val_set is not None else None
        targets = self.train_set.targets()
        self.sampler = make_train_sampler(self.ccfg.balance, targets.max(1) > 0, self.seed)
        self.pos_weight = pos_weight(targets).to(self.device) if self.ccfg.balance == "pos_weight" else None
        # what the training and validation forward passes run: the whole DFC, or its part after the frozen stages
        self.scorer: torch.nn.Module = self.model if self.split is None else SuffixDFC(self.model, self.split)
        # GCM's boxes are in the coordinates of what the network is fed (image pixels, or the prefix's map); the CAM's
        # are at the backbone's stride
        self.box_scale = (self.split.stride if self.split is not None else 1) / self.model.backbone.stride
        # training on images: the frozen prefix runs without gradients, image by image on a CPU (PrefixFirstDFC)
        trained = self.scorer
        if self.split is None and frozen is not None:
            trained = PrefixFirstDFC(self.model, frozen)
        self.net = trained
        if dist.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(trained, device_ids=ids)
        # training forward passes go through this one (classifier.compile); everything else (state_dicts,
        # parameters, no_sync, validation) uses the eager self.model / self.net
        self.train_net = maybe_compile(self.net, self.ccfg.compile, "classifier.compile")
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.ccfg.lr, weight_decay=self.ccfg.weight_decay
        )
        steps = len(self.loader(0))
        self.scheduler = warmup_cosine(self.optimizer, self.ccfg.warmup_epochs * steps, self.ccfg.epochs * steps)
        self.amp = self.ccfg.amp and self.device.type == "cuda"

    # ----------------------------------------------------------------------------------------------- data
    def _feature_split(
        self, split: FrozenSplit | None, train_rows: list, val_rows: list, size: tuple[int, ...]
    ) -> FrozenSplit | None:
        """``split`` (the DFC's backbone split at its frozen stages) when ``classifier.cache_features`` can apply,
        else None (said once, with the reason)."""
        if not self.ccfg.cache_features:
            return None
        why = ""
        if dist.is_distributed():
            why = "one process only (DDP trains the whole network)"
        elif split is None:
            why = "no frozen stages to cache (backbone.freeze > 0), or they are no chain of modules in this backbone"
        else:
            needed = sum(cache_bytes(len(rows), size, split.stride, split.channels) for rows in (train_rows, val_rows))
            if needed > self.ccfg.cache_mb * 2**20:
                why = f"the features need {needed / 2**20:.0f} MiB, over classifier.cache_mb"
        if why:
            self.echo(f"train-classifier: classifier.cache_features off: {why}; training on images")
            return None
        return split

    def loader(self, epoch: int) -> DataLoader:
        return epoch_loader(
            self.train_set, self.sampler, epoch, self.seed, self.ccfg.batch_size, self.ccfg.workers, self.device
        )

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return channels_last_input(x, self.ccfg.channels_last)

    # ----------------------------------------------------------------------------------------------- steps
    def _half_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], Any]:
        out = self.train_net(x)
        loss_cls = F.binary_cross_entropy_with_logits(out.logits, y, pos_weight=self.pos_weight)
        loss, parts = loss_cls, {"loss_cls": loss_cls.item(), "loss_clm": 0.0}
        if self.ccfg.clm.enabled:
            z_fg, z_bg, z_img = self.model.embeddings(out)
            loss_clm = supervised_infonce(z_fg, z_bg, z_img, y.max(1).values > 0, self.ccfg.clm.temperature)
            loss = loss + self.ccfg.clm.weight * loss_clm
            parts["loss_clm"] = loss_clm.item()
        return loss, parts, out

    def _flipped_view(
        self, x: torch.Tensor, y: torch.Tensor, out: Any, parts: dict[str, float], gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``classifier.equivariance``: the batch flipped (one flip per step, drawn from ``gen``) trains beside it, its
        loss parts averaged into ``parts``; returns its loss and the flip-equivariance loss between the two views'
        CAMs (None: off)."""
        parts["loss_eq"] = 0.0
        if self.ccfg.equivariance <= 0:
            return None
        dim = -1 if float(torch.rand(1, generator=gen)) < 0.5 else -2
        loss_f, parts_f, out_f = self._half_loss(x.flip(dim), y)
        loss_e = flip_equivariance(out.cams, out_f.cams.flip(dim), y.max(1).values > 0)
        for k in ("loss_cls", "loss_clm"):  # mean over the two views
            parts[k] = (parts[k] + parts_f[k]) / 2
        parts["loss_eq"] = loss_e.item()
        return loss_f, loss_e

    def train_step(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        gcm = self.ccfg.gcm
        self.optimizer.zero_grad(set_to_none=True)
        sync_later = self.net.no_sync() if (gcm.enabled and dist.is_distributed()) else contextlib.nullcontext()
        with sync_later:
            with autocast:
                loss, parts, out = self._half_loss(x, y)
                flipped = self._flipped_view(x, y, out, parts, gen)
                if flipped is not None:  # the two views' losses averaged, plus the equivariance term
                    loss = (loss + flipped[0]) / 2 + self.ccfg.equivariance * flipped[1]
            (loss * (0.5 if gcm.enabled else 1.0)).backward()
        total, parts["loss_gcm"] = loss.item(), 0.0
        if gcm.enabled:
            cams = out.cams.detach().float()
            boxes = crop_boxes(
                DFC.defect_map(cams), y.max(1).values > 0, tuple(x.shape[-2:]), gcm.crop_frac, gcm.jitter, gen
            )
            with autocast:
                loss_c, parts_c, out_c = self._half_loss(crop_and_resize(x, boxes), y)
                if gcm.consistency_weight > 0:
                    loss_g = gcm_consistency(out_c.cams, cams, boxes, self.box_scale)
                    loss_c = loss_c + gcm.consistency_weight * loss_g
                    parts["loss_gcm"] = loss_g.item()
            (loss_c * 0.5).backward()
            total = (total + loss_c.item()) / 2
            for k in ("loss_cls", "loss_clm"):  # mean over the two half-batches
                parts[k] = (parts[k] + parts_c[k]) / 2
        if self.ccfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.ccfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": total, **parts}

    def train_batch(self, batch: dict[str, Any], gen: torch.Generator) -> dict[str, float]:
        """One optimisation step on a DataLoader batch (moved to the device here); returns the loss parts."""
        return self.train_step(self._to_device(batch["image"]), batch["target"].to(self.device), gen)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.net.train()
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        desc = f"epoch {epoch + 1}/{self.ccfg.epochs}"
        return train_pass(self.model, self.loader(epoch), lambda batch: self.train_batch(batch, gen), desc)

    def validate(self) -> dict[str, float]:
        """Validation loss, image AP and AUROC of the "any defect" score max_k sigmoid(s_k)."""
        if self.val_set is None:
            return {"val_loss": float("nan"), "val_ap": float("nan"), "val_auroc": float("nan")}
        self.net.eval()
        s, lab, loss = score_dataset(
            self.scorer,
            self.val_set,
            self.device,
            self.ccfg.batch_size,
            self.amp,
            self.ccfg.channels_last,
            self.ccfg.workers,
        )
        return {"val_loss": loss, "val_ap": average_precision(lab, s), "val_auroc": auroc(lab, s)}

    # ----------------------------------------------------------------------------------------------- fit
    def _selection_key(self, row: dict[str, float], epoch: int) -> list[float]:
        """Larger is better: validation AP then loss, or the loss alone (classifier.select); the last epoch without
        a validation split."""
        if self.val_set is None:
            return [float(epoch), 0.0]
        if self.ccfg.select == "loss":
            return [-row["val_loss"], row["val_ap"]]
        return [row["val_ap"], -row["val_loss"]]

    def fit(self) -> dict[str, Any]:
        """Train (resuming from ``out/checkpoints/last.pt`` if present); returns a summary."""
        meta = model_meta(self.ccfg, self.classes, self.in_chans, self.model.backbone.stride)
        if self.fit_mode != "stretch":  # how its inputs were placed (the CAM stage places them alike)
            meta["fit"] = self.fit_mode

        def save_best(epoch: int) -> None:
            save_state_dict(self.model, self.out / MODEL_FILE)
            write_json(self.out / META_FILE, meta | {"epoch": epoch})

        def describe(row: dict[str, float], best_epoch: int) -> str:
            return (
                f"epoch {int(row['epoch']) + 1}/{self.ccfg.epochs}: loss {row['loss']:.4f}  val AP {row['val_ap']:.4f}  "
                f"AUROC {row['val_auroc']:.4f}  (best epoch {best_epoch + 1})  {row['images_per_s']:.1f} img/s"
            )

        st = Loop(
            self.out,
            self.ccfg.epochs,
            self.model,
            self.optimizer,
            self.scheduler,
            self.train_epoch,
            self.validate,
            self._selection_key,
            save_best,
            COLUMNS,
            describe,
            patience=self.ccfg.patience if self.val_set is not None else 0,
            stop_message="early stop: no better validation AP",
            echo=self.echo,
        ).run()
        best_row = next((r for r in st.rows if int(float(r["epoch"])) == st.best_epoch), {"val_ap": float("nan")})
        return {"best_epoch": st.best_epoch, "best_val_ap": float(best_row["val_ap"]), "epochs_run": len(st.rows)}


@torch.no_grad()
def score_dataset(
    model: DFC,
    dataset: ImageDataset,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    amp: bool = False,
    channels_last: bool = False,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Sample scores max_k sigmoid(s_k), binary labels and the mean BCE of ``model`` (in eval mode) on ``dataset``."""
    device = torch.device(device)
    scores, labels, loss_sum = [], [], 0.0
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    for batch in progress(loader, desc="score", total=len(loader), unit="batch"):
        x, y = batch["image"].to(device), batch["target"].to(device)
        x = channels_last_input(x, channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = forward_chunked(model, x).logits.float()
        loss_sum += F.binary_cross_entropy_with_logits(logits, y, reduction="sum").item() / y.shape[1]
        scores.append(torch.sigmoid(logits).max(1).values.cpu().numpy())
        labels.append((y.max(1).values > 0).cpu().numpy())
    s, lab = np.concatenate(scores), np.concatenate(labels)
    return s, lab, loss_sum / max(1, len(s))
