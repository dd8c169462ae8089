"""The `cam` section: CAM extraction and the inpainting extension module (IEM).

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsss.fields import (
    ONE,
    PROBABILITY,
    choices,
    num,
)


@dataclass
class IEMConfig:
    """Inpainting extension module (METHOD.md 3): erase the CAM's peak region, look again, keep what lights up."""

    enabled: bool = True
    # T: at most this many erase-and-look-again rounds
    rounds: int = num(3, ge=1, fix="at least 1 (or cam.iem.enabled=false)")
    # R_t = pixels where the current CAM >= theta_peak * max(CAM)
    theta_peak: float = num(0.5, gt=0, le=1, fix="a fraction in (0, 1]")
    # R_t is dilated by this fraction of the image's shorter side before inpainting
    dilation: float = num(0.02, ge=0, lt=0.5, fix="a fraction of the shorter side in [0, 0.5)")
    # stop when the inpainted image's sample score falls below this (the defect is gone)
    tau_stop: float = num(0.5, ge=0, le=1, fix=PROBABILITY)
    method: str = choices("telea", "ns", default="telea")  # cv2.inpaint: Telea or Navier-Stokes
    radius: int = num(5, ge=1, fix="pixels >= 1")  # cv2.inpaint neighbourhood radius, pixels
    # threads that inpaint while the CAM passes run (results do not depend on it); 0 = min(4, cores), 1 = serial
    workers: int = num(0, ge=0, fix="0 (up to 4 cores), 1 (serial) or a thread count")


@dataclass
class CamConfig:
    """`cam`: CAMs from the trained DFC with test-time augmentation, normalised, gated, extended by IEM."""

    # how a batch becomes class maps: a registered CAM method (wsss/cam/methods.py): score-map (the CAM head's map,
    # one forward pass) or grad-cam (the last features weighted by the score's gradients)
    method: str = "score-map"
    # x classifier.input_size
    scales: list[float] = num([0.75, 1.0, 1.5], gt=0, min_items=1, fix="positive factors, e.g. [1.0]")
    flips: bool = True  # also horizontally and vertically flipped views
    # the flipped views only for windows whose unflipped score reaches this (0 = every window). A window under it is
    # called OK and its map zeroed by the gate, so its flips only refine its score; skipping them runs the stage up
    # to 1.7x as fast with the same masks and calls, but a single view ranks the uncertain images less well (KSDD
    # fold 0: test image AP 99.07% -> 95.31% at 0.25): docs/benchmarks.md
    flip_floor: float = num(0.0, ge=0, le=1, fix=PROBABILITY + " (0 = flip every window)")
    # the classifier's output stride for its CAMs: 0 = as trained; 8 or 16 = the same weights with their deeper
    # stages dilated (a finer map, more compute per view; a stage timm cannot dilate fails with a fix)
    output_stride: int = num(0, among=(0, 8, 16, 32), fix="0 (as trained), 8, 16 or 32")
    # [H, W] windows (original pixels); [0, 0] = off; auto = off unless images are shrunk over 4x (wsss/auto.py)
    tile_size: list[int] | str = num("auto", ge=0, lengths=(2,), auto=True, fix="[H, W] >= 0 ([0, 0] = off), or auto")
    # overlap of neighbouring windows, fraction of the window
    tile_overlap: float = num(0.25, ge=0, lt=1, fix="a fraction in [0, 1)")
    # dataset scale: this percentile of the CAM peaks of defective training images
    norm_percentile: float = num(50.0, gt=0, le=100, fix="a percentile in (0, 100]")
    # images whose sample score is below get an all-zero CAM (called OK)
    score_threshold: float = num(0.5, ge=0, le=1, fix=PROBABILITY)
    # what decides which images keep their CAM: score (the sample score against score_threshold, METHOD.md 2) or
    # labels (on the training and validation images their image label, exact where the DFC errs; the score
    # elsewhere): wsss/cam/gate.py
    gate: str = choices("score", "labels", default="score")
    # a weak CAM of an image called defective (peak below the dataset scale) divided by its own peak, never by less
    # than the OK training images' 99th-percentile peak: it then reaches the background prior like a strong one
    # instead of vanishing (KSDD fold 0: 7 of 15 called-defective test images had their CAM under it)
    lift: bool = False
    iem: IEMConfig = field(default_factory=IEMConfig)
    batch_size: int = num(8, ge=1, fix=ONE)  # images per forward batch (every view of each)
    compile: bool = False  # torch.compile the DFC for the CAM forward passes (GPU; off on the CPU by default)
    channels_last: bool = True  # the NHWC memory format for the forward passes (wsss/models/compile.py)
