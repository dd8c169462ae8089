"""CAM extraction with test-time augmentation (METHOD.md section 2).

Each image (or each window of it, with tiling) is resized to every configured scale of the classifier's input size,
run through the DFC as is and flipped horizontally and vertically, the class maps (``cam.method``, a registered
:class:`wsss.cam.methods.CamMethod`; by default the CAM head's score map) are flipped back, upsampled
bilinearly to the window's original size and averaged over views; windows are pasted back (overlaps averaged).
Sample scores are the mean over views of sigmoid(s_k); with tiling an image's score is its highest window's (a
defect in one window makes the image defective).

The flipped views cost two forward passes each window, and most windows of an inspection set are OK: their maps are
zeroed by the gate, only their scores are kept. With ``cam.flip_floor`` > 0 a window whose unflipped score is under
it keeps its unflipped view alone (map and score); the others get all three. Off by default: the masks and calls
stay, but single-view scores rank the uncertain images less well (docs/benchmarks.md).

The raw CAM returned here is ``relu`` of the averaged score map, in logit units and unnormalised: the `cam` stage
divides by a dataset-level scale afterwards (never per-image min-max, which would give OK images full-strength maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wsss.cam.config import CamConfig
from wsss.cam.methods import get_cam_method
from wsss.data.transforms import fit_image, placement, to_channels, to_tensor, unfit
from wsss.fields import AUTO
from wsss.models.classifier import DFC
from wsss.models.compile import channels_last_input, folded_if_equal, maybe_compile, to_channels_last


@dataclass(frozen=True)
class Window:
    y0: int
    x0: int
    y1: int
    x1: int


def windows(shape: tuple[int, int], tile: Sequence[int], overlap: float) -> list[Window]:
    """Windows of ``tile`` (H, W) covering ``shape`` with at least ``overlap`` between neighbours.

    ``tile`` 0 (or larger than the image) in a dimension means the whole extent; the last window of a row or column
    is aligned to the image's end, so every pixel is covered and no window leaves the image.
    """
    h, w = shape

    def starts(size: int, t: int) -> list[int]:
        if t <= 0 or t >= size:
            return [0]
        step = max(1, int(t * (1 - overlap)))
        out = list(range(0, size - t, step))
        return [*out, size - t]

    th = tile[0] if 0 < tile[0] < h else h
    tw = tile[1] if 0 < tile[1] < w else w
    return [Window(y, x, y + th, x + tw) for y in starts(h, tile[0]) for x in starts(w, tile[1])]


def tile_size(cfg: CamConfig) -> Sequence[int]:
    """``cam.tile_size``; an unresolved ``auto`` (library use without a prepared dataset) means whole images."""
    return (0, 0) if cfg.tile_size == AUTO else cfg.tile_size


class CamExtractor:
    """Multi-scale, flip-averaged CAMs of a trained DFC (or the average of several: a seed ensemble, as
    ``classifier.ensemble`` trains), batched over images and windows.

    Args:
        model: the DFC (eval mode), or a sequence of DFCs of the same classes, input and stride whose maps and
            probabilities are averaged view by view.
        input_size: the classifier's (H, W); scales multiply it.
        in_chans: the classifier's input channels (images are converted to it).
        cfg: the `cam` section (scales, flips, tiling, batch size, compile).
        fit: how a window meets the input size, as the classifier was trained (``dataset.fit``, its ``dfc.json``):
            stretched, or padded to keep its aspect ratio (the maps of the padding are cut away).
    """

    def __init__(
        self,
        model: DFC | Sequence[DFC],
        input_size: Sequence[int],
        in_chans: int,
        cfg: CamConfig,
        device: torch.device | str,
        fit: str = "stretch",
    ):
        members = model if isinstance(model, Sequence) else [model]
        example = channels_last_input(torch.randn(1, in_chans, *input_size), cfg.channels_last).to(device)
        # forward passes only: each BatchNorm folded into its convolution where that gives the same maps
        self.models = [folded_if_equal(to_channels_last(m, cfg.channels_last), example) for m in members]
        self.model, self.cfg, self.in_chans, self.fit = self.models[0], cfg, in_chans, fit
        self.nets = [maybe_compile(m, cfg.compile, "cam.compile") for m in self.models]  # forward passes only
        self.method = get_cam_method(cfg.method)
        self.device = torch.device(device)
        self.num_classes = self.model.num_classes
        stride = int(getattr(self.model.backbone, "stride", 8))
        self.sizes = [
            (max(stride, round(input_size[0] * s)), max(stride, round(input_size[1] * s))) for s in cfg.scales
        ]

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class maps and probabilities of a batch (``cam.method``), on the model's device and memory format; the
        ensemble's mean over its members."""
        x = channels_last_input(x.to(self.device), self.cfg.channels_last)
        outs = [self.method(m, net, x) for m, net in zip(self.models, self.nets, strict=True)]
        if len(outs) == 1:
            return outs[0]
        return torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip-averaged class maps (B, K, h, w) and probabilities (B, K) of a batch at one scale: the flipped views
        only for the windows whose unflipped score reaches ``cam.flip_floor``."""
        maps, probs = self.views(x)
        flip = probs.max(1).values >= self.cfg.flip_floor
        if self.cfg.flips and bool(flip.any()):
            sel = flip.nonzero().flatten()
            xs = x[sel.cpu()]
            m, p = self.views(torch.cat([xs.flip(-1), xs.flip(-2)]))
            (mh, mv), (ph, pv) = m.chunk(2), p.chunk(2)
            maps, probs = maps.clone(), probs.clone()
            maps[sel] = (maps[sel] + mh.flip(-1) + mv.flip(-2)) / 3
            probs[sel] = (probs[sel] + ph + pv) / 3
        return maps.cpu(), probs.cpu()

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Raw CAMs, each (K, H, W) float32 >= 0 at its image's size, and sample scores (N, K) in [0, 1]."""
        k = self.num_classes
        tile = tile_size(self.cfg)
        items = [
            (i, win) for i, img in enumerate(images) for win in windows(img.shape[:2], tile, self.cfg.tile_overlap)
        ]
        canvas = [np.zeros((k, *img.shape[:2]), np.float32) for img in images]
        weight = [np.zeros(img.shape[:2], np.float32) for img in images]
        win_scores = np.zeros((len(items), k), np.float32)
        crops = [to_channels(images[i][w.y0 : w.y1, w.x0 : w.x1], self.in_chans) for i, w in items]
        n_scales = len(self.sizes)
        for size in self.sizes:
            for start in range(0, len(items), self.cfg.batch_size):
                chunk = range(start, min(start + self.cfg.batch_size, len(items)))
                x = torch.stack([to_tensor(fit_image(crops[j], size, self.fit)) for j in chunk])
                maps, probs = self._forward(x)
                win_scores[start : chunk.stop] += probs.numpy() / n_scales
                for j, m in zip(chunk, maps, strict=True):
                    i, w = items[j]
                    up = unfit(m[None], placement(crops[j].shape, size, self.fit), (w.y1 - w.y0, w.x1 - w.x0))
                    canvas[i][:, w.y0 : w.y1, w.x0 : w.x1] += up[0].numpy() / n_scales
                    weight[i][w.y0 : w.y1, w.x0 : w.x1] += 1.0 / n_scales
        scores = np.zeros((len(images), k), np.float32)
        for j, (i, _) in enumerate(items):
            scores[i] = np.maximum(scores[i], win_scores[j])
        cams = [np.maximum(c / np.maximum(wt, 1e-6)[None], 0.0) for c, wt in zip(canvas, weight, strict=True)]
        return cams, scores


def normalise_cam(raw: np.ndarray, present: np.ndarray, scale: float, lift_floor: float | None = None) -> np.ndarray:
    """A raw (K, H, W) CAM in [0, 1] by the dataset-level ``scale``, with every class not ``present`` ((K,) bool, the
    gate of :func:`wsss.cam.gate.present_classes`) zeroed, so an image called OK has an all-zero CAM (METHOD.md
    section 2).

    ``lift_floor`` (``cam.lift``): a class called present whose CAM peak is below ``scale`` is divided by its own peak
    instead, but never by less than ``lift_floor``, so a weak but well-placed CAM reaches the level of a strong one
    while a CAM no stronger than the OK images' is not stretched. Never a per-image min-max: the gate still empties
    every class called absent, and strong CAMs keep the dataset scale."""
    gate = np.asarray(present, bool).reshape(-1)
    if gate.shape[0] != raw.shape[0]:
        raise ValueError(f"{gate.shape[0]} gate values for a CAM of {raw.shape[0]} classes")
    divisor = np.full(raw.shape[0], scale, np.float32)
    if lift_floor is not None:
        peaks = raw.reshape(raw.shape[0], -1).max(1).astype(np.float32)
        divisor = np.where(peaks < scale, np.maximum(peaks, max(lift_floor, 1e-12)), scale)
    return np.clip(raw.astype(np.float32) / divisor[:, None, None], 0.0, 1.0) * gate[:, None, None].astype(np.float32)
