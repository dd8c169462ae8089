"""IEM, the inpainting extension module (METHOD.md section 3).

A CAM fires on the most discriminative part of a defect. For each image called defective, round t = 1..T:

1. R_t = pixels (not erased yet) where the current defect map >= ``theta_peak`` x its maximum;
2. x_t = ``cv2.inpaint(x_{t-1}, dilate(R_t))``: the peak region is painted over with surrounding texture;
3. the DFC looks at x_t again (same test-time augmentation); if its sample score falls below ``tau_stop`` the
   defect is gone and the image stops;
4. otherwise CAM_ext = max(CAM_ext, CAM(x_t)) on the pixels not erased so far (erased pixels hold inpainted
   texture, whose CAM means nothing), and the next round looks at CAM(x_t).

Rounds run batched across all images still active, so each round is one batched forward pass.
Our choices: the defect map of several classes is their maximum; the dilation radius is a fraction of the image's
shorter side (so one config fits 64 px tiles and 1263 px KSDD images); an image whose CAM has no positive peak
stops at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from wsss.cam.extract import CamExtractor
from wsss.config import IEMConfig

_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


def dilation_kernel(shape: tuple[int, int], frac: float) -> np.ndarray | None:
    radius = int(round(frac * min(shape)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)) if radius > 0 else None


def extend_cams(
    extractor: CamExtractor,
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    active: Sequence[bool],
    cfg: IEMConfig,
) -> tuple[list[np.ndarray], list[int]]:
    """Extended CAMs (same shapes as ``cams``) and the rounds each image used (0 for inactive ones)."""
    ext = [c.copy() for c in cams]
    current = [c.max(0) for c in cams]  # defect map the next region is taken from
    work = [np.ascontiguousarray(img) for img in images]
    erased = [np.zeros(img.shape[:2], bool) for img in images]
    rounds = [0] * len(images)
    live = [i for i, a in enumerate(active) if a]
    for _ in range(cfg.rounds):
        todo = []
        for i in live:
            m = np.where(erased[i], 0.0, current[i])
            peak = float(m.max())
            if peak <= 0:
                continue
            region = (m >= cfg.theta_peak * peak).astype(np.uint8)
            kernel = dilation_kernel(region.shape, cfg.dilation)
            if kernel is not None:
                region = cv2.dilate(region, kernel)
            erased[i] |= region > 0
            work[i] = cv2.inpaint(work[i], region, cfg.radius, _METHODS[cfg.method])
            todo.append(i)
        if not todo:
            break
        new_cams, scores = extractor([work[i] for i in todo])
        live = []
        for i, cam, score in zip(todo, new_cams, scores, strict=True):
            if float(score.max()) < cfg.tau_stop:
                continue
            keep = ~erased[i]
            ext[i] = np.where(keep[None], np.maximum(ext[i], cam), ext[i])
            current[i] = cam.max(0)
            rounds[i] += 1
            live.append(i)
    return ext, rounds
