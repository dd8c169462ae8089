"""PatchCore-style anomaly maps (Roth et al., CVPR 2022; METHOD.md 7, after AGSSP).

1. **Patch features.** The image standardised (``standardise``: zero mean, unit variance), then chosen stages of a
   backbone (``anomaly.layers``; resnet: layer2 + layer3), each averaged over a ``patch`` x ``patch`` neighbourhood
   (local context), upsampled to the finest chosen stage and concatenated: one D-dimensional feature per cell of an
   (h, w) grid.
2. **Memory bank.** Patches of the OK training images, ``max_patches`` sampled evenly over the images (so the memory
   stays bounded however many images there are: 200k x 384 floats = 0.3 GB), then greedy k-center subsampled to
   ``coreset`` patches in a ``coreset_dims`` random projection (each new centre is the patch farthest from every
   centre so far; the bank covers the normal appearance with few patches). Each bank patch remembers its image.
3. **Anomaly map.** Per query patch, the Euclidean distance to its nearest bank patch (``torch.cdist`` in chunks of
   ``chunk`` queries, so memory is chunk x bank floats), leaving out the patches of the query's own image (an OK
   training image is in the bank: without this its map would be ~0 and say nothing about normal variation), Gaussian
   smoothed by ``smooth`` cells. The image score is the map's maximum.

No labels are used beyond which images are OK (image level), and never a ground-truth mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from wsss.anomaly.config import AnomalyConfig
from wsss.data.transforms import resize, to_channels, to_tensor
from wsss.errors import ConfigError, StageError
from wsss.models.backbone import Backbone
from wsss.progress import progress


class PatchEmbedder:
    """Locally aggregated, multi-stage patch features of a frozen backbone: (B, D, h, w) float32 on the CPU."""

    def __init__(
        self,
        backbone: Backbone,
        cfg: AnomalyConfig,
        input_size: Sequence[int],
        in_chans: int,
        device: torch.device | str = "cpu",
        where: str = "anomaly.layers",
    ):
        n = len(backbone.channels)
        bad = [i for i in cfg.layers if not -n <= i < n]
        if bad:
            raise ConfigError(where, f"stage(s) {bad} out of range", f"{backbone.name} has stages 0..{n - 1} here")
        self.layers = [i % n for i in cfg.layers]
        self.backbone = backbone.eval().to(device)
        self.size = (int(input_size[0]), int(input_size[1]))
        self.patch, self.in_chans, self.device = cfg.patch, in_chans, torch.device(device)
        self.standardise = cfg.standardise
        self.dim = sum(backbone.channels[i] for i in self.layers)

    def tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.stack([to_tensor(resize(to_channels(img, self.in_chans), self.size)) for img in images])
        if self.standardise:
            x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True).clamp_min(1e-3)
        return x

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.embed(self.tensor(images).to(self.device)).float().cpu()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.backbone.forward_stages(x)
        picked = [stages[i].float() for i in self.layers]
        r = self.patch // 2
        picked = [F.avg_pool2d(f, self.patch, 1, r, count_include_pad=False) if r else f for f in picked]
        h, w = max(f.shape[-2] for f in picked), max(f.shape[-1] for f in picked)
        up = [f if f.shape[-2:] == (h, w) else F.interpolate(f, (h, w), mode="bilinear") for f in picked]
        return torch.cat(up, 1)


def greedy_coreset(features: torch.Tensor, n: int, dims: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` rows of ``features`` (N, D) chosen by greedy k-center in a random ``dims``-D projection."""
    total = features.shape[0]
    if n <= 0 or n >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    z = features.float()
    if z.shape[1] > dims:  # Johnson-Lindenstrauss: distances kept up to a small factor, k-center much cheaper
        z = z @ (torch.randn(z.shape[1], dims, generator=gen) / math.sqrt(dims))
    sq = (z * z).sum(1)
    first = int(torch.randint(total, (1,), generator=gen))
    chosen = torch.empty(n, dtype=torch.long)
    chosen[0] = first
    nearest = (sq - 2 * (z @ z[first]) + sq[first]).clamp_min_(0)
    for k in range(1, n):
        i = int(nearest.argmax())
        chosen[k] = i
        torch.minimum(nearest, (sq - 2 * (z @ z[i]) + sq[i]).clamp_min_(0), out=nearest)
    return chosen


@dataclass
class MemoryBank:
    """Normal patch features (M, D) and the index of the image each came from (M,)."""

    features: torch.Tensor
    owner: torch.Tensor

    def distances(self, queries: torch.Tensor, owner: int = -1, chunk: int = 2048) -> torch.Tensor:
        """(Q,) distance of each query (Q, D) to its nearest bank patch, ignoring the patches of image ``owner``."""
        keep = self.owner != owner
        if not bool(keep.any()):
            raise ValueError("every bank patch comes from the query's own image: the bank needs two OK images")
        bank = self.features if bool(keep.all()) else self.features[keep]
        out = torch.empty(queries.shape[0])
        for start in range(0, queries.shape[0], chunk):
            q = queries[start : start + chunk]
            out[start : start + q.shape[0]] = torch.cdist(q, bank).min(1).values
        return out


def build_bank(
    embedder: PatchEmbedder, images: Sequence, read, cfg: AnomalyConfig, progress=lambda it, desc: it
) -> MemoryBank:
    """The memory bank of the OK images ``images`` (anything ``read`` turns into an image array): ``max_patches``
    patches sampled evenly over them, then the greedy k-center coreset."""
    per_image = max(1, cfg.max_patches // max(1, len(images)))
    rng = np.random.default_rng(cfg.seed)
    feats, owners = [], []
    starts = range(0, len(images), cfg.batch_size)
    for start in progress(starts, "anomaly bank"):
        batch = [read(x) for x in images[start : start + cfg.batch_size]]
        emb = embedder(batch)  # (B, D, h, w)
        flat = emb.flatten(2).transpose(1, 2)  # (B, h*w, D)
        for j, f in enumerate(flat):
            take = rng.choice(f.shape[0], min(per_image, f.shape[0]), replace=False)
            feats.append(f[torch.from_numpy(np.sort(take))])
            owners.append(torch.full((len(take),), start + j, dtype=torch.long))
    features, owner = torch.cat(feats), torch.cat(owners)
    keep = greedy_coreset(features, cfg.coreset, cfg.coreset_dims, cfg.seed)
    return MemoryBank(features[keep].contiguous(), owner[keep].contiguous())


def anomaly_grid(embedding: torch.Tensor, bank: MemoryBank, cfg: AnomalyConfig, owner: int = -1) -> np.ndarray:
    """The smoothed (h, w) float32 nearest-neighbour distance map of one image's (D, h, w) patch features."""
    d, h, w = embedding.shape
    dist = bank.distances(embedding.reshape(d, -1).T.contiguous(), owner, cfg.chunk).view(h, w).numpy()
    if cfg.smooth > 0:
        dist = cv2.GaussianBlur(dist, (0, 0), cfg.smooth, borderType=cv2.BORDER_REFLECT)
    return dist.astype(np.float32)


def upsample(grid: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A feature-grid map at an image's (H, W), bilinearly."""
    return cv2.resize(grid, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


QUANTILES = np.linspace(0.0, 1.0, 101)


def pooled_percentile(quantiles: Sequence[Sequence[float]], q: float) -> float:
    """The ``q``-th percentile of the union of several maps' pixels, from each map's :data:`QUANTILES` (equal-weight
    samples of its distribution): images count equally whatever their size, and nothing but 101 numbers per image
    has to be kept (so a resumed stage needs no maps back)."""
    return float(np.percentile(np.concatenate([np.asarray(x, np.float64) for x in quantiles]), q))


def calibrate(
    ok_quantiles: Sequence[Sequence[float]],
    defect_peaks: Sequence[float],
    ok_peaks: Sequence[float],
    cfg: AnomalyConfig,
) -> tuple[float, float, str]:
    """Dataset-level (lo, hi) of :func:`wsss.anomaly.io.normalise` from image labels only, and a warning ("" when none).

    lo = the ``ok_percentile`` percentile of the OK training images' pixels (leave-one-out maps); hi = the
    ``norm_percentile`` percentile of the defective training images' peaks (the highest OK peak when there is no
    defective training image)."""
    lo = pooled_percentile(ok_quantiles, cfg.ok_percentile)
    warning = ""
    if defect_peaks:
        hi = float(np.percentile(defect_peaks, cfg.norm_percentile))
    else:
        hi = float(max(ok_peaks))
        warning = "no defective training image: the normalised map's 1 is the highest OK training peak"
    if hi <= lo:
        warning = (
            f"the defective training images' peaks ({hi:.4g}) do not rise above the OK images' "
            f"{cfg.ok_percentile:g}th percentile ({lo:.4g}): these anomaly maps do not separate the defects"
        )
        hi = lo + max(abs(lo), 1e-6) * 1e-3
    return lo, hi, warning


def ok_training_images(rows: list, index: Path) -> list:
    ok = [r for r in rows if r.split == "train" and not r.labels]
    if len(ok) < 2:
        raise StageError(
            index,
            f"the training split has {len(ok)} OK (defect-free) image(s): anomaly priors need defect-free images to "
            "build their memory bank from (at least 2)",
            "add OK images to the training split, or run without anomaly priors (pseudo.unary=cam, no pretrain)",
        )
    return ok


def ok_bank(embedder, ok: list, read, acfg):
    """The memory bank of the OK training images ``ok`` and, per image id, its owner index in the bank (for the
    leave-one-out query); -1 for images not in it is the caller's ``.get(id, -1)``."""
    bank = build_bank(embedder, ok, read, acfg, lambda it, desc: progress(it, desc=desc, unit="batch"))
    return bank, {r.id: i for i, r in enumerate(ok)}  # build_bank numbers the OK images in this order
