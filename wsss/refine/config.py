"""The `pseudo` section (dense CRF and the labelling rule) and guided upsampling's settings.

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wsss.fields import (
    ONE,
    choices,
    num,
)

CRF_REACH = 0.1  # the bilateral kernel's reach, a fraction of the shorter image side (``bilateral_sxy: auto``)


def auto_crf_reach(size: Sequence[int]) -> float:
    """The bilateral kernel's reach for images of ``size`` (H, W): :data:`CRF_REACH` of the shorter side."""
    return round(CRF_REACH * min(size[0], size[1]), 1)


@dataclass
class CRFConfig:
    """Dense CRF (pydensecrf2 DenseCRF2D) parameters: Gaussian (smoothness) and bilateral (appearance) kernels."""

    # pydensecrf: pydensecrf2's permutohedral lattice (the reference); torch: our mean-field with a bilateral grid in
    # PyTorch (wsss/refine/torch_crf.py), batched, on `device`
    backend: str = choices("pydensecrf", "torch", default="pydensecrf")
    device: str = choices("cpu", "cuda", default="cpu")  # the torch backend's device
    # mean-field at this fraction of the image size (area-downsampled image and probabilities, kernel widths scaled
    # with it), the refined probabilities upsampled bilinearly; 1 = full resolution (either backend)
    scale: float = num(1.0, gt=0, le=1, fix="a fraction in (0, 1] (1 = full resolution)")
    iterations: int = num(10, ge=1, fix=ONE)
    gauss_sxy: float = num(3.0, gt=0, fix="pixels > 0")
    gauss_compat: float = num(3.0, ge=0, fix="a compatibility >= 0 (0 = no smoothness kernel)")
    # pixels; auto = 0.1 x the median training image's shorter side
    bilateral_sxy: float | str = num(
        "auto", gt=0, auto=True, fix="pixels > 0, or auto (0.1 x the images' shorter side)"
    )
    bilateral_srgb: float = num(13.0, gt=0, fix="intensity levels > 0")
    bilateral_compat: float = num(10.0, ge=0, fix="a compatibility >= 0 (0 = no appearance kernel)")


@dataclass
class PseudoConfig:
    """`pseudo-labels`: refine the extended CAMs into masks (0 background, k class k, 255 ignore)."""

    method: str = choices("crf", "threshold", default="crf")  # threshold: argmax of [bg_prior, CAM] only
    # background score against the normalised CAM (the CAM level where defect = background)
    bg_prior: float = num(0.4, gt=0, lt=1, fix="a value in (0, 1)")
    crf: CRFConfig = field(default_factory=CRFConfig)
    # pixels whose winning probability is below this become 255 (ignore)
    confidence: float = num(0.6, ge=0, le=1, fix="a probability in [0, 1] (0 = no ignore pixels)")
    # background pixels this close to a defect also become 255; 0 = off
    ignore_band: int = num(2, ge=0, fix="pixels >= 0")
    # every defect region grows by this many pixels into the background before the band is drawn: the refined mask
    # follows the defect's own pixels, while annotators draw around them (KSDD's masks are ~2 px wider than what the
    # CRF keeps: docs/lab-notes/benchmarks-log.md); 0 = off
    margin: int = num(0, ge=0, fix="pixels >= 0 (0 = off)")
    # an image called defective that the refinement leaves without a defect pixel (a weak CAM the CRF erased) is
    # labelled where its strongest class's CAM reaches this fraction of its peak, and ranked first for review;
    # 0 = leave it empty (the segmenter then learns background on a defect)
    fallback: float = num(0.0, ge=0, lt=1, fix="a fraction of the CAM's peak in [0, 1) (0 = off)")
    workers: int = num(0, ge=0, fix="0 (every core) or a process count")  # processes for the CRF; 0 = every core
    # what the CRF's unary comes from (METHOD.md 7a): the extended CAM, the `anomaly` stage's map, or their fusion
    unary: str = choices("cam", "anomaly", "fusion", default="cam")
    # fusion rule of two maps in [0, 1]: geometric = cam^(1-w) * anomaly^w, product = cam * anomaly
    fusion: str = choices("geometric", "product", default="geometric")
    anomaly_weight: float = num(0.5, ge=0, le=1, fix="a weight in [0, 1]")  # w of the geometric fusion


@dataclass
class GuidedConfig:
    """Guided upsampling of a segmenter's class probabilities to each image's full size (:mod:`wsss.refine.guided`).

    Off by default: it sharpens a segmenter taught by blob-like pseudo-masks (KSDD fold 1 validation mIoU_def
    +3.7 points at radius 8) but blurs one taught by exact masks (the same fold's ground-truth-trained segmenter:
    -8.4 points at radius 8), so a recipe turns it on where its validation split says so."""

    # window radius in pixels of the network input (scaled to each image's size); 0 = plain bilinear upsampling
    radius: float = num(0.0, ge=0, fix="pixels >= 0 (0 = off), e.g. 8")
    # regulariser: image edges with an intensity variance (in [0, 1] units) well above it are followed
    eps: float = num(1e-4, gt=0, fix="a small variance > 0, e.g. 0.0001")
