"""A fast dense CRF in PyTorch: the mean-field inference of pydensecrf2 with a bilateral grid (CPU or GPU).

Same model and updates as :func:`wsss.refine.crf.dense_crf` (Kraehenbuehl & Koltun; pydensecrf2 stays the
reference): unary ``U = -log P``, Potts pairwise terms with a Gaussian kernel (``gauss_sxy``, ``gauss_compat``) and a
bilateral kernel (``bilateral_sxy``, ``bilateral_srgb``, ``bilateral_compat``), and ``iterations`` mean-field steps

    Q <- softmax(-U + gauss_compat * G(Q) + bilateral_compat * B(Q)),

where G and B are normalised kernel averages (pydensecrf2's symmetric normalisation gives messages of the same
scale). What differs is how the kernels are evaluated:

- G: a separable Gaussian blur at full resolution (exact; truncated at 3 sigma, normalised at the borders).
- B: a bilateral grid (Chen, Paris & Durand 2007) instead of the permutohedral lattice. Values are splatted into a
  grid over (y / sxy, x / sxy, colour / srgb) at two cells per standard deviation, blurred there with a separable
  binomial Gaussian and sliced back multilinearly (:class:`BilateralGrid`). For a grayscale image repeated to three
  channels (how pydensecrf2 sees ours) the colour distance is sqrt(3) times the gray difference, so one range axis,
  ``sqrt(3) * gray``, gives the same kernel. A colour image is expressed in its principal colour axes (a rotation of
  RGB, which keeps colour distances): the grid takes the widest axis, and the next ones where the image spans more
  than one kernel width along them and the grid stays under :data:`MAX_GRID_CELLS` (:func:`colour_ranges`). With
  every axis kept the kernel is pydensecrf2's; a dropped axis only loses differences that the kernel barely sees or
  that the memory budget cannot hold. A defect that differs from its surroundings in hue only (the same brightness)
  is thereby still an edge.

The splat weights are computed once per image, so an iteration costs a few tensor ops: fast on a CPU and batched
on a GPU.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import warnings

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from wsss.errors import ConfigError
from wsss.fields import AUTO
from wsss.refine.config import CRFConfig, auto_crf_reach

CLIP = 1e-5  # as pydensecrf2's unary_from_softmax(clip=1e-5)
CELLS_PER_SIGMA = 2  # grid resolution: two cells per kernel standard deviation in every dimension
GRID_BLUR = torch.tensor([1.0, 8.0, 28.0, 56.0, 70.0, 56.0, 28.0, 8.0, 1.0]) / 256.0  # binomial(8): std 2 cells
MARGIN = GRID_BLUR.numel() // 2 + 1  # empty cells on both sides of every grid axis
# per image: a colour axis beyond the first is kept only while the grid stays below this (2M cells: ~0.1 s per
# mean-field iteration on one CPU core, the grid of two colour axes of a 256 x 256 image of random colours)
MAX_GRID_CELLS = 1 << 21


def _gauss_1d(sigma: float, device: torch.device) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (B, C, H, W) with a Gaussian of ``sigma`` pixels (3-sigma support, zero outside the image).

    On CUDA a separable convolution; on the CPU OpenCV's SIMD filter (about 50x faster there than torch's thin
    convolutions, measured on 256 x 256: 0.3 ms against 17 ms per two channels).
    """
    if x.is_cuda:
        k = _gauss_1d(sigma, x.device)
        b, c, h, w = x.shape
        y = F.conv2d(x.reshape(b * c, 1, h, w), k.view(1, 1, 1, -1), padding=(0, k.numel() // 2))
        return F.conv2d(y, k.view(1, 1, -1, 1), padding=(k.numel() // 2, 0)).view(b, c, h, w)

    size = 2 * max(1, int(math.ceil(3 * sigma))) + 1
    a = x.detach().float().cpu().numpy()
    out = np.empty_like(a)
    for i in np.ndindex(a.shape[:2]):
        out[i] = cv2.GaussianBlur(a[i], (size, size), sigma, borderType=cv2.BORDER_CONSTANT)
    return torch.from_numpy(out)


def _separable(x: torch.Tensor, kernel: torch.Tensor, dims: int) -> torch.Tensor:
    """Blur (B, C, *spatial) along its last ``dims`` axes with the same 1-D kernel, zero-padded (the small grid).

    On CUDA a depthwise convolution per axis (up to 3 axes); otherwise a sum of shifted slices, twice as fast on the CPU
    as torch's depthwise ``conv3d`` (measured on a (1, 2, 61, 30, 78) grid: 1.6 ms against 3.4 ms, one thread).
    """
    c, r = x.shape[1], kernel.numel() // 2
    taps = kernel.tolist()  # read once, not once per slice (a device sync on CUDA)
    for axis in range(dims):
        if x.is_cuda and dims <= 3:  # no conv4d: deeper grids (two colour axes) take the shifted slices
            shape = [1] * dims
            shape[axis] = kernel.numel()
            weight = kernel.view(1, 1, *shape).expand(c, 1, *shape).contiguous()
            pad = [0] * dims
            pad[axis] = r
            x = (F.conv2d if dims == 2 else F.conv3d)(x, weight, padding=tuple(pad), groups=c)
            continue
        d = x.ndim - dims + axis
        pad = [0, 0] * (x.ndim - 2)
        pad[2 * (x.ndim - 1 - d)] = pad[2 * (x.ndim - 1 - d) + 1] = r  # F.pad counts from the last dimension
        padded = F.pad(x, pad)
        out = padded.narrow(d, 0, x.shape[d]) * taps[0]
        for i in range(1, len(taps)):
            out.add_(padded.narrow(d, i, x.shape[d]), alpha=taps[i])  # in place: no temporary per tap
        x = out
    return x


class BilateralGrid:
    """Splat / blur / slice over (y, x, colour axes) for a batch of same-size images.

    The grid has :data:`CELLS_PER_SIGMA` cells per kernel standard deviation. A pixel is splatted into its nearest
    cell (one ``index_add_`` per iteration; the position error, at most a quarter of a standard deviation, is small
    next to the kernel), the grid is blurred with a separable binomial of two cells' std, and every pixel is
    sliced back by multilinear interpolation: one sparse CSR product, built directly (rows are pixels, one column per
    corner of its cell: 8 with one colour axis).

    Args:
        ranges: (B, D, H, W) colour coordinates in kernel standard deviations, >= 0 (:func:`colour_ranges`).
        sxy: the kernel's spatial standard deviation in pixels.
    """

    def __init__(self, ranges: torch.Tensor, sxy: float):
        b, d, h, w = ranges.shape
        dev = ranges.device
        k = CELLS_PER_SIGMA
        ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1).expand(b, h, w) * (k / sxy)
        xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w).expand(b, h, w) * (k / sxy)
        coords = [c + MARGIN for c in (ys, xs, *(ranges[:, i].float() * k for i in range(d)))]
        self.size = [int(math.ceil(float(c.max()))) + MARGIN + 1 for c in coords]  # cells per axis
        self.b, self.h, self.w = b, h, w
        self.cells = math.prod(self.size)
        offset = (torch.arange(b, device=dev) * self.cells).view(b, 1, 1)

        def cell(index: list[torch.Tensor]) -> torch.Tensor:
            flat = index[0]
            for size, i in zip(self.size[1:], index[1:], strict=True):
                flat = flat * size + i
            return flat.long() + offset

        self.nearest = cell([c.round() for c in coords]).reshape(-1)  # (B*N,) splat target
        base = [c.floor() for c in coords]
        frac = [c - f for c, f in zip(coords, base, strict=True)]
        cols, vals = [], []
        for corner in itertools.product((0, 1), repeat=len(coords)):
            weights = [f if up else 1 - f for f, up in zip(frac, corner, strict=True)]
            cols.append(cell([f + up for f, up in zip(base, corner, strict=True)]).reshape(-1))
            vals.append(functools.reduce(operator.mul, weights).reshape(-1))
        n, corners = b * h * w, len(cols)
        crow = torch.arange(0, corners * n + 1, corners, device=dev)
        col, val = torch.stack(cols, 1).reshape(-1), torch.stack(vals, 1).reshape(-1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
            warnings.simplefilter("ignore", UserWarning)
            self.slice = torch.sparse_csr_tensor(crow, col, val, (n, b * self.cells))
        self.kernel = GRID_BLUR.to(dev)
        self.norm = self.filter(torch.ones(b, 1, h, w, device=dev), normalise=False).clamp_min(1e-12)

    def filter(self, values: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        """Bilateral-filter (B, C, H, W) values; normalised by the kernel mass when ``normalise``."""
        b, c = values.shape[:2]
        grid = torch.zeros(b * self.cells, c, device=values.device)
        grid.index_add_(0, self.nearest, values.permute(0, 2, 3, 1).reshape(-1, c).float())
        n = len(self.size)
        grid = grid.view(b, *self.size, c).permute(0, n + 1, *range(1, n + 1)).contiguous()  # (B, C, y, x, ...)
        grid = _separable(grid, self.kernel, dims=n).permute(0, *range(2, n + 2), 1).reshape(b * self.cells, c)
        out = (self.slice @ grid).view(b, self.h, self.w, c).permute(0, 3, 1, 2)
        return out / self.norm if normalise else out


def colour_ranges(images: torch.Tensor, srgb: float, sxy: float) -> torch.Tensor:
    """The (B, D, H, W) colour coordinates of uint8 ``images`` for :class:`BilateralGrid`, in units of ``srgb``.

    (B, H, W) grayscale, or colour whose channels are all equal: one axis, ``sqrt(3) * gray``, exactly the distance
    pydensecrf2 sees between gray pixels repeated to RGB. (B, H, W, 3) colour: each image's RGB projected on its
    principal colour axes (eigenvectors of its colour covariance, widest first), shifted to start at 0; the widest
    axis always, each next one while the batch spans more than one ``srgb`` along it and the grid (at ``sxy``) stays
    under :data:`MAX_GRID_CELLS`. D is the same for the whole batch.
    """
    if images.ndim == 4 and _equal_channels(images):
        images = images[..., 0]
    if images.ndim == 3:
        return (images.float() * (math.sqrt(3.0) / srgb))[:, None]
    b, h, w, _ = images.shape
    x = images.reshape(b, h * w, 3).double()
    centred = x - x.mean(1, keepdim=True)
    _, axes = torch.linalg.eigh(centred.transpose(1, 2) @ centred)  # eigenvalues ascending
    proj = centred @ axes.flip(-1)  # (B, N, 3), widest axis first
    proj = ((proj - proj.amin(1, keepdim=True)) / srgb).float()
    spread = proj.amax(1).amax(0).tolist()  # per axis, in kernel widths, over the batch
    cells = math.prod(side * CELLS_PER_SIGMA / sxy + 2 * MARGIN + 1 for side in (h, w))
    cells *= spread[0] * CELLS_PER_SIGMA + 2 * MARGIN + 1
    keep = 1
    for extent in spread[1:]:
        cells *= extent * CELLS_PER_SIGMA + 2 * MARGIN + 1
        if extent <= 1.0 or cells > MAX_GRID_CELLS:
            break
        keep += 1
    return proj[..., :keep].permute(0, 2, 1).reshape(b, keep, h, w)


def dense_crf_torch(images: torch.Tensor, probs: torch.Tensor, cfg: CRFConfig) -> torch.Tensor:
    """Mean-field CRF of a batch: ``images`` (B, H, W) or (B, H, W, 3) uint8, ``probs`` (B, C, H, W) summing to 1
    over C; returns the refined (B, C, H, W) probabilities on the inputs' device."""
    dev = probs.device
    sxy = auto_crf_reach(images.shape[1:3]) if cfg.bilateral_sxy == AUTO else float(cfg.bilateral_sxy)
    grid = BilateralGrid(colour_ranges(images.to(dev), cfg.bilateral_srgb, sxy), sxy)
    b, c, h, w = probs.shape
    gauss_norm = gaussian_blur(torch.ones(b, 1, h, w, device=dev), cfg.gauss_sxy).to(dev).clamp_min(1e-12)
    unary = -probs.float().clamp(CLIP, 1.0).log()
    q = torch.softmax(-unary, dim=1)
    for _ in range(cfg.iterations):
        message = cfg.gauss_compat * gaussian_blur(q, cfg.gauss_sxy).to(dev) / gauss_norm
        message = message + cfg.bilateral_compat * grid.filter(q)
        q = torch.softmax(-unary + message, dim=1)
    return q


def _equal_channels(images: torch.Tensor) -> bool:
    return bool((images[..., 0] == images[..., 1]).all() and (images[..., 0] == images[..., 2]).all())


def dense_crf_fast(image: np.ndarray, probs: np.ndarray, cfg: CRFConfig, device: str = "cpu") -> np.ndarray:
    """:func:`dense_crf_torch` for one numpy image (H, W[, 3]) uint8 and probabilities (C, H, W): float32 (C, H, W)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("pseudo.crf.device", "cuda requested but no CUDA device is available", "use cpu")
    img = torch.from_numpy(np.array(image, copy=True, order="C"))[None].to(device)  # read-only inputs included
    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None].to(device)
    with torch.no_grad():
        return dense_crf_torch(img, p, cfg)[0].cpu().numpy()
