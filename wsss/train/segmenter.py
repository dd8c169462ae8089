"""Training the multi-task segmenter on pseudo-masks (METHOD.md section 5; the distillation of section 6 reuses it).

Supervision is only what weak supervision produced: the pseudo-masks (0 background, k class k, 255 ignore) and the
image labels of :class:`~wsss.data.index.TrainRow`; ground-truth masks are never read. There is no validation
(nothing to validate against without ground truth), so the configured number of epochs is trained and the last
weights are kept.

Every epoch writes ``metrics.csv`` and a checkpoint (model, optimizer, schedule, epoch) from which a killed run
resumes exactly: data order and augmentation are seeded by (seed, epoch[, index]), so a resumed run repeats the
same steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsss.atomic import write_json
from wsss.config import RetrainConfig
from wsss.data.images import read_image
from wsss.data.index import TrainRow
from wsss.data.torch_data import ImageDataset
from wsss.data.transforms import Augment, resize, to_channels, to_tensor
from wsss.errors import ConfigError, DataError, StageError
from wsss.models.backbone import save_state_dict
from wsss.models.segmenter import META_FILE, MODEL_FILE, build_segmenter, segmenter_meta
from wsss.progress import progress
from wsss.train import dist
from wsss.train.checkpoint import load_checkpoint, read_metrics, save_checkpoint, write_metrics
from wsss.train.sampling import make_train_sampler
from wsss.train.schedule import warmup_cosine

IGNORE = 255  # pseudo-mask value excluded from every loss
DICE_SMOOTH = 1.0
GRAD_CLIP = 5.0  # max gradient norm
METRICS_FILE = "metrics.csv"
CHECKPOINT = Path("checkpoints") / "last.pt"
COLUMNS = ("epoch", "lr", "loss", "loss_seg", "loss_cls", "images_per_s", "seconds")
MASK_FIX = "re-run `wsss run-stage pseudo-labels`"


# ----------------------------------------------------------------------------------------------------- data
def pseudo_mask_path(masks_dir: Path, sample_id: str) -> Path:
    return Path(masks_dir) / f"{sample_id}.png"


def read_pseudo_mask(path: Path, shape: Sequence[int] | None = None, num_classes: int | None = None) -> np.ndarray:
    """A pseudo-mask as ``uint8`` (H, W); ``shape`` (H, W) and the value range {0..K, 255} are checked when given.

    A missing, unreadable, mis-sized or out-of-range file is a DataError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "pseudo-mask missing for a training image", MASK_FIX)
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        what = "unreadable pseudo-mask" if mask is None else f"pseudo-mask is {mask.dtype} {mask.shape}, not 8-bit gray"
        raise DataError(path, what, MASK_FIX)
    if shape is not None and mask.shape != tuple(shape[:2]):
        raise DataError(path, f"pseudo-mask is {mask.shape} but its image is {tuple(shape[:2])}", MASK_FIX)
    if num_classes is not None:
        bad = np.unique(mask[(mask > num_classes) & (mask != IGNORE)])
        if bad.size:
            what = f"pseudo-mask values {bad[:5].tolist()} are neither 0..{num_classes} nor {IGNORE} (ignore)"
            raise DataError(path, what, MASK_FIX)
    return mask


class PseudoMaskDataset(ImageDataset):
    """Training images with their pseudo-masks (``masks_dir/<id>.png``) and image-level targets.

    Each item is ``{"image": (C, H, W) float, "mask": (H, W) int64 (0..K, 255 = ignore), "target": (K,) float,
    "index": int}`` at ``input_size``. Only lossless geometry (flips, rot90 on square inputs) is applied, to image and
    mask alike, so the mask stays exact; the photometric part of ``augment`` touches the image only. Seeding, epochs,
    targets and the in-memory cache are :class:`~wsss.data.torch_data.ImageDataset`'s.
    """

    def __init__(
        self,
        rows: Sequence[TrainRow],
        masks_dir: Path,
        classes: Sequence[str],
        input_size: Sequence[int],
        in_chans: int = 1,
        augment: Augment | None = None,
        seed: int = 0,
        high_bit_depth: str = "refuse",
    ):
        super().__init__(rows, classes, input_size, in_chans, augment, seed, high_bit_depth)
        self.masks_dir = Path(masks_dir)
        self.photometric = None
        if augment is not None:
            no_geometry = {"flips": False, "rot90": False, "affine_degrees": 0.0, "affine_scale": 0.0}
            self.photometric = Augment(dataclasses.replace(augment.cfg, **no_geometry, affine_translate=0.0))
        missing = [p for p in (self.mask_path(i) for i in range(len(self.rows))) if not p.is_file()]
        if missing:  # fail before training starts, not in the middle of an epoch
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(missing[0], f"pseudo-mask missing for a training image{more}", MASK_FIX)

    def mask_path(self, index: int) -> Path:
        return pseudo_mask_path(self.masks_dir, self.rows[index].id)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """Image (``uint8``) and pseudo-mask of sample ``index`` at ``input_size``, before augmentation."""
        if self._cache is not None:
            return self._cache[index]
        img = to_channels(read_image(self.rows[index].path, self.high_bit_depth), self.in_chans)
        mask = read_pseudo_mask(self.mask_path(index), img.shape[:2], len(self.classes))
        h, w = self.input_size
        return resize(img, self.input_size), cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)

    def cache_bytes(self) -> int:
        return super().cache_bytes() + len(self.rows) * self.input_size[0] * self.input_size[1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        index = int(index) % len(self.rows) if index < 0 else int(index)
        img, mask = self.load(index)
        if self.augment is not None and self.photometric is not None:  # both or neither
            rng, cfg = self.rng(index), self.augment.cfg
            if cfg.flips:
                if rng.random() < 0.5:
                    img, mask = img[:, ::-1], mask[:, ::-1]
                if rng.random() < 0.5:
                    img, mask = img[::-1], mask[::-1]
            if cfg.rot90 and img.shape[0] == img.shape[1]:
                k = int(rng.integers(4))
                img, mask = np.rot90(img, k), np.rot90(mask, k)
            img = self.photometric(np.ascontiguousarray(img), rng)
        return {
            "image": to_tensor(img),
            "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
            "target": torch.from_numpy(self._targets[index].copy()),
            "index": index,
        }


# ----------------------------------------------------------------------------------------------------- losses
def segmentation_loss(mask_logits: torch.Tensor, mask: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy over the K+1 classes plus ``dice_weight`` x soft Dice over the K defect classes.

    Pixels labelled 255 count in neither term (they are where the pseudo-mask is unsure). CE is the mean over the
    labelled pixels (0 when there are none). Dice is computed per defect class over the whole batch (so an OK image
    does not produce an ill-defined per-image Dice), smoothed by 1, and averaged over the classes; it counters the
    pixel imbalance of small defects that CE alone under-weights.

    Args:
        mask_logits: (B, K+1, H, W) logits; channel 0 = background.
        mask: (B, H, W) int64 in {0..K, 255}.
    """
    logits = mask_logits.float()
    valid = mask != IGNORE
    ce = F.cross_entropy(logits, mask, ignore_index=IGNORE, reduction="sum") / valid.sum().clamp(min=1)
    if dice_weight <= 0:
        return ce
    k1 = logits.shape[1]
    v = valid.unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1)[:, 1:] * v
    target = F.one_hot(torch.where(valid, mask, 0), k1).permute(0, 3, 1, 2)[:, 1:].to(logits.dtype)
    inter = (probs * target).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + target.sum((0, 2, 3))
    dice = 1.0 - (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)
    return ce + dice_weight * dice.mean()


# ----------------------------------------------------------------------------------------------------- trainer
class SegmenterTrainer:
    """Trains one segmenter into ``out`` on the pseudo-masks in ``masks_dir`` for ``rows_train``.

    Writes ``segmenter.safetensors`` + ``segmenter.json`` (after the last epoch), ``metrics.csv`` and
    ``checkpoints/last.pt`` (every epoch; the caller removes it when done). Under DDP only rank 0 writes.
    """

    def __init__(
        self,
        rcfg: RetrainConfig,
        rows_train: Sequence[TrainRow],
        masks_dir: Path,
        classes: Sequence[str],
        in_chans: int,
        out: Path,
        seed: int = 0,
        device: str | torch.device = "auto",
        echo: Callable[[str], None] = print,
        high_bit_depth: str = "refuse",
        cache_mb: int = 2048,
    ):
        self.rcfg, self.out, self.seed, self.classes = rcfg, Path(out), int(seed), list(classes)
        self.echo = echo if dist.is_main() else (lambda *_: None)
        self.device = dist.resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.in_chans = rcfg.backbone.in_chans or in_chans
        size = tuple(rcfg.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(
                "retrain.input_size", f"expected [H, W] with positive sizes, got {list(size)}", "e.g. [128, 128]"
            )
        if not rows_train:
            raise StageError(masks_dir, "no training images to train the segmenter on", "check the train split")
        augment = Augment(rcfg.augment)
        self.train_set = PseudoMaskDataset(
            rows_train, masks_dir, self.classes, size, self.in_chans, augment, self.seed, high_bit_depth
        )
        if self.train_set.cache_bytes() <= cache_mb * 2**20:
            self.train_set.preload(threads=max(2, rcfg.workers))
        self.sampler = make_train_sampler("none", np.zeros(len(rows_train), dtype=bool), self.seed)

        torch.manual_seed(self.seed)
        self.model = build_segmenter(rcfg, len(self.classes), self.in_chans).to(self.device)
        if rcfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: torch.nn.Module = self.model
        if dist.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=rcfg.lr, weight_decay=rcfg.weight_decay)
        steps = len(self.loader(0))
        self.scheduler = warmup_cosine(self.optimizer, rcfg.warmup_epochs * steps, rcfg.epochs * steps)
        self.amp = rcfg.amp and self.device.type == "cuda"

    def loader(self, epoch: int) -> DataLoader:
        self.train_set.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return DataLoader(
            self.train_set,
            batch_size=self.rcfg.batch_size,
            sampler=self.sampler,
            shuffle=self.sampler is None,
            generator=gen,
            drop_last=len(self.train_set) > self.rcfg.batch_size,
            num_workers=self.rcfg.workers,
            pin_memory=self.device.type == "cuda",
        )

    def train_step(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(x)
        loss_seg = segmentation_loss(out.mask_logits, mask, self.rcfg.dice_weight)
        loss_cls = F.binary_cross_entropy_with_logits(out.cls_logits.float(), y)
        loss = loss_seg + self.rcfg.cls_weight * loss_cls
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss.item(), "loss_seg": loss_seg.item(), "loss_cls": loss_cls.item()}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.net.train()
        sums: dict[str, float] = {}
        n_images, t0 = 0, time.perf_counter()
        loader = self.loader(epoch)
        for batch in progress(loader, desc=f"epoch {epoch + 1}/{self.rcfg.epochs}", total=len(loader), unit="batch"):
            x = batch["image"].to(self.device, non_blocking=True)
            if self.rcfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            mask, y = batch["mask"].to(self.device), batch["target"].to(self.device)
            for k, v in self.train_step(x, mask, y).items():
                sums[k] = sums.get(k, 0.0) + v * len(x)
            n_images += len(x)
        seconds = time.perf_counter() - t0
        return {k: v / max(1, n_images) for k, v in sums.items()} | {
            "images_per_s": n_images * dist.world_size() / seconds,
            "seconds": seconds,
        }

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
        }

    def fit(self) -> dict[str, Any]:
        """Train (resuming from ``out/checkpoints/last.pt`` if present), then save the model; returns a summary."""
        start, rows = 0, []
        state = load_checkpoint(self.out / CHECKPOINT)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            start = int(state["epoch"]) + 1
            rows = [r for r in read_metrics(self.out / METRICS_FILE) if int(r["epoch"]) < start]
            self.echo(f"resuming after epoch {start}")
        for epoch in range(start, self.rcfg.epochs):
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]} | self.train_epoch(epoch)
            rows.append(row)
            if dist.is_main():
                write_metrics(self.out / METRICS_FILE, rows, COLUMNS)
                save_checkpoint(self.out / CHECKPOINT, self._state(epoch))
            self.echo(
                f"epoch {epoch + 1}/{self.rcfg.epochs}: loss {row['loss']:.4f} (seg {row['loss_seg']:.4f}, "
                f"cls {row['loss_cls']:.4f})  {row['images_per_s']:.1f} img/s"
            )
            dist.barrier()
        if dist.is_main():
            save_state_dict(self.model, self.out / MODEL_FILE)
            meta = segmenter_meta(self.rcfg, self.classes, self.in_chans)
            write_json(self.out / META_FILE, meta | {"epochs": self.rcfg.epochs, "seed": self.seed})
        dist.barrier()
        return {"epochs_run": len(rows), "final_loss": rows[-1]["loss"] if rows else float("nan")}
