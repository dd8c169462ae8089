"""IEM, the inpainting extension module (METHOD.md section 3).

A CAM fires on the most discriminative part of a defect. For each image called defective, round t = 1..T:

1. R_t = pixels (not erased yet) where the current defect map >= ``theta_peak`` x its maximum;
2. x_t = ``cv2.inpaint(x_{t-1}, dilate(R_t))``: the peak region is painted over with surrounding texture;
3. the DFC looks at x_t again (same test-time augmentation); if its sample score falls below ``tau_stop`` the
   defect is gone and the image stops;
4. otherwise CAM_ext = max(CAM_ext, CAM(x_t)) on the pixels not erased so far (erased pixels hold inpainted
   texture, whose CAM means nothing), and the next round looks at CAM(x_t).

Rounds run batched across all images still active. Within a round the inpainting (step 2) runs on a pool of
``workers`` CPU threads (cv2 releases the GIL) while the DFC looks at the images already done: the round's images
are cut, in order, into chunks of at least ``cam.batch_size`` windows (``cam.batch_size`` images without tiling),
and each chunk goes to the extractor as soon as its images are inpainted, so the CPU inpainting of later chunks
overlaps the (GPU) forward passes of earlier ones. The chunks are the same whatever ``workers`` is, so the results
are bit-identical to the serial run (``workers`` = 1, no pool).
Our choices: the defect map of several classes is their maximum; the dilation radius is a fraction of the image's
shorter side (so one config fits 64 px tiles and 1263 px KSDD images); an image whose CAM has no positive peak
stops at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import cv2
import numpy as np

from wsss import parallel
from wsss.cam.config import IEMConfig
from wsss.cam.extract import CamExtractor, tile_size, windows

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
    threads = parallel.pool_size(cfg.workers, cap=4)  # inpainting threads
    pool = ThreadPoolExecutor(threads, thread_name_prefix="iem-inpaint") if threads > 1 else None
    try:
        return _extend(extractor, images, cams, active, cfg, pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)  # after an error: drop the inpaintings not started yet


def _extend(
    extractor: CamExtractor,
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    active: Sequence[bool],
    cfg: IEMConfig,
    pool: ThreadPoolExecutor | None,
) -> tuple[list[np.ndarray], list[int]]:
    ext = [c.copy() for c in cams]
    current = [c.max(0) for c in cams]  # defect map the next region is taken from
    work = [np.ascontiguousarray(img) for img in images]
    erased = [np.zeros(img.shape[:2], bool) for img in images]
    rounds = [0] * len(images)
    live = [i for i, a in enumerate(active) if a]
    for _ in range(cfg.rounds):
        todo, regions = [], []
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
            todo.append(i)
            regions.append(region)
        if not todo:
            break
        new_cams, scores = _inpaint_and_look(extractor, work, todo, regions, cfg, pool)
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


def _inpaint(image: np.ndarray, region: np.ndarray, cfg: IEMConfig) -> np.ndarray:
    return cv2.inpaint(image, region, cfg.radius, _METHODS[cfg.method])


def _chunks(extractor: CamExtractor, shapes: Sequence[tuple[int, ...]]) -> list[range]:
    """Consecutive index ranges holding at least ``batch_size`` of the extractor's windows each (the last: the rest)."""
    c = extractor.cfg
    out, start, n = [], 0, 0
    for k, shape in enumerate(shapes):
        n += len(windows(shape[:2], tile_size(c), c.tile_overlap))
        if n >= c.batch_size or k == len(shapes) - 1:
            out.append(range(start, k + 1))
            start, n = k + 1, 0
    return out


def _inpaint_and_look(
    extractor: CamExtractor,
    work: list[np.ndarray],
    todo: list[int],
    regions: list[np.ndarray],
    cfg: IEMConfig,
    pool: ThreadPoolExecutor | None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Inpaint ``work[todo[k]]`` over ``regions[k]`` (in place in ``work``) and run the extractor on the results,
    chunk by chunk in order: with a pool every inpainting is queued at once and a chunk is looked at as soon as its
    own images are done, while the pool goes on with the next chunks."""
    jobs = [partial(_inpaint, work[i], r, cfg) for i, r in zip(todo, regions, strict=True)]
    if pool is not None:  # queue them all; a job becomes its future's result()
        jobs = [pool.submit(job).result for job in jobs]
    new_cams: list[np.ndarray] = []
    scores = []
    for chunk in _chunks(extractor, [work[i].shape for i in todo]):
        for k in chunk:
            work[todo[k]] = jobs[k]()
        c, s = extractor([work[todo[k]] for k in chunk])
        new_cams.extend(c)
        scores.append(s)
    return new_cams, np.concatenate(scores)
