"""The pseudo-labelling rule: extended CAM (+ image) -> mask PNG with 0 background, k class k, 255 ignore.

Shared by the `pseudo-labels` stage and the `retrain` stage, so both label images identically. The rule is our
reading of METHOD.md section 4; the parts the method leaves open are our choices, marked "(ours)" below.

Per image:

1. Class probabilities ``P = normalise([bg_prior, cam_1, ..., cam_K])`` over the class axis, with the CAM clipped to
   ``[1e-5, 1]`` (ours: the background competes with the normalised CAM at a constant level ``bg_prior``, so a pixel
   is defect where its CAM exceeds ``bg_prior``, and no per-image min-max normalisation is ever applied).
2. ``pseudo.method == "crf"``: ``P = dense_crf(image, P)``.
3. ``label = argmax P`` (0 = background); pixels whose winning probability is below ``pseudo.confidence`` become 255.
4. ``pseudo.margin > 0`` (ours): every defect region grows by that many pixels into the background (exempt from step 3's
   ignore), the annotation convention of drawing around a defect rather than along its pixels.
5. A band of ``pseudo.ignore_band`` pixels on each side of every defect-class boundary becomes 255 (ours: boundaries
   are where CAM-derived masks are least reliable, and ignoring them costs the retrained segmenter little).
6. An image called OK (sample score below the cam stage's threshold), or one whose CAM is all zero, gets an all-zero
   mask with confidence 1.0, and no CRF is run.
7. ``pseudo.fallback > 0`` (ours): an image called defective that steps 2-3 leave without a defect pixel (a weak CAM
   the CRF erased) is labelled with its strongest class where that class's CAM reaches ``fallback`` x its peak
   (exempt from step 3's ignore; steps 4 and 5 apply). Left empty, it would teach the segmenter background on a defect
   the classifier found.

With anomaly priors (``pseudo.unary`` anomaly or fusion, METHOD.md 7a) the "CAM" of steps 1-6 is
:func:`wsss.refine.unary.unary_map` of the CAM and the anomaly map; the gate of step 6 stays the classifier's.

Confidence (ours), used to rank images for review: the mean winning probability over the defect region dilated by
:data:`CONFIDENCE_RING` pixels, so both a hesitant interior and a soft edge lower it; an image called defective whose
mask has no defect pixel gets the mean background probability instead, and one labelled by step 7 the mean
probability of its class over the labelled core (low, so it ranks first for review).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss.anomaly.io import read_anomaly
from wsss.artifacts.masks import write_mask
from wsss.cam.io import read_cam
from wsss.data.images import read_image
from wsss.errors import StageError, WsssError
from wsss.labels import IGNORE  # the uncertain pixels: ignored in training
from wsss.parallel import pool_size
from wsss.progress import progress
from wsss.refine.config import PseudoConfig
from wsss.refine.crf import dense_crf
from wsss.refine.unary import unary_map

CONFIDENCE_RING = 3  # pixels the defect region is dilated by before averaging its confidence
CAM_FLOOR = 1e-5  # the CAM is clipped to [CAM_FLOOR, 1] so every class keeps a finite unary energy
SHOW_IDS = 5  # ids named in an error message

# Start method of the CRF workers. The parent may hold torch (its OpenMP/intra-op thread pools), OpenCV's pool and
# tqdm's monitor thread; fork()ing a multi-threaded process can deadlock a child on a lock another thread held
# (Python 3.12 warns about it, 3.14 stops defaulting to it), so fork is out. Measured on 2 loaded cores with torch
# loaded in the parent, `label_all` of 8 tiny images on 2 workers: fork 0.2 s; forkserver 0.4 s for the first pool
# (starting the server) and 0.1 s after, because workers fork from a server that has this module (numpy, cv2,
# pydensecrf) imported; spawn 0.6-0.7 s every time. Forkserver it is: safe, and startup is negligible next to a
# 512x512 CRF (0.4-0.6 s per grayscale image here). Caveat of both: workers re-run the main script's top-level
# imports (CPython 3.11 ignores preloading "__main__"), so a script that imports torch at top level costs ~4 s per
# pool; the `wsss` CLI's main imports nothing heavy.
START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


@dataclass(frozen=True)
class LabelResult:
    """One image's pseudo-mask and the numbers that go into ``confidence.csv``."""

    mask: np.ndarray  # uint8 (H, W): 0 background, k class k (1..K), 255 ignore
    confidence: float  # in [0, 1]; low = worth a human look
    defect_fraction: float  # fraction of pixels labelled with a defect class (ignore pixels not included)
    ignore_fraction: float  # fraction of pixels labelled 255


@dataclass(frozen=True)
class LabelTask:
    """Everything a worker process needs to label one image (picklable)."""

    id: str
    image: Path
    cam: Path
    out: Path  # the mask PNG to write
    called_defective: bool
    classes: int  # K, the number of class maps in the CAM
    cfg: PseudoConfig
    high_bit_depth: str = "refuse"  # dataset.high_bit_depth, to read the image as `prepare` validated it
    anomaly: Path | None = None  # the anomaly stage's map, when cfg.unary is not "cam"
    anomaly_range: tuple[float, float] = (0.0, 1.0)  # its normalisation (lo, hi) from anomaly.json


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def class_probs(cam: np.ndarray, bg_prior: float) -> np.ndarray:
    """float32 (K + 1, H, W): ``[bg_prior, cam_1..cam_K]`` normalised over the class axis (step 1 above)."""
    fg = np.clip(cam.astype(np.float32, copy=False), CAM_FLOOR, 1.0)
    p = np.concatenate([np.full((1, *fg.shape[1:]), bg_prior, np.float32), fg])
    return p / p.sum(axis=0, keepdims=True)


def _reaches(labels: np.ndarray, classes: int, width: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, bool (H, W))`` for each defect class k present in ``labels``: the pixels within ``width`` of its region."""
    kernel = _disc(width)
    for k in range(1, classes + 1):
        region = (labels == k).astype(np.uint8)
        if region.any():
            yield k, cv2.dilate(region, kernel) > 0


def boundary_band(labels: np.ndarray, classes: int, width: int) -> np.ndarray:
    """bool (H, W): background pixels within ``width`` of a defect region of any class.

    Only the outer side is marked (ours): an inner band would erase a thin scratch or crack (up to 2 x ``width``
    pixels wide) entirely, and those are the defects CAM-derived masks most often draw too wide, not too narrow.

    The image border is not a boundary: ``cv2.erode`` pads with the maximum, so a defect touching the border keeps
    its pixels there.
    """
    band = np.zeros(labels.shape, bool)
    if width <= 0:
        return band
    for _, reach in _reaches(labels, classes, width):
        band |= reach
    band &= labels == 0
    return band


def grow(labels: np.ndarray, classes: int, margin: int) -> np.ndarray:
    """uint8 (H, W): ``labels`` with every defect region grown by ``margin`` pixels into the background (a pixel
    within reach of two classes takes the lower one); defect pixels keep their class."""
    if margin <= 0:
        return labels
    out = labels.copy()
    for k, reach in _reaches(labels, classes, margin):
        out[reach & (out == 0)] = k
    return out


def margin_ignored(mask: np.ndarray, margin: int) -> np.ndarray:
    """uint8 (H, W): a mask labelled with ``pseudo.margin`` = ``margin``, its ``margin``-pixel inner ring of every
    defect region made ignore (255). The margin is the annotators' convention, not evidence about the defect: a
    segmenter trained on such masks learns the refined region and is free in the ring (trained on the grown regions
    it draws them wider still). A region touching the image border keeps its pixels there."""
    if margin <= 0:
        return mask
    defect = ((mask > 0) & (mask != IGNORE)).astype(np.uint8)
    if not defect.any():
        return mask
    out = mask.copy()
    out[(defect > 0) & (cv2.erode(defect, _disc(margin)) == 0)] = IGNORE
    return out


def label_image(image: np.ndarray, cam: np.ndarray, cfg: PseudoConfig, called_defective: bool) -> LabelResult:
    """Apply the labelling rule of the module docstring to one image and its (K, H, W) CAM in [0, 1]."""
    h, w = image.shape[:2]
    if cam.ndim != 3 or cam.shape[1:] != (h, w):
        raise ValueError(f"CAM shape {cam.shape} does not match image shape {image.shape} (expected (K, {h}, {w}))")
    if not called_defective or not np.any(cam > 0):
        return LabelResult(np.zeros((h, w), np.uint8), 1.0, 0.0, 0.0)
    classes = cam.shape[0]
    p = class_probs(cam, cfg.bg_prior)
    if cfg.method == "crf":
        p = dense_crf(image, p, cfg.crf)
    labels = p.argmax(axis=0).astype(np.uint8)
    p_max = p.max(axis=0)
    defect = labels > 0
    unsure = p_max < cfg.confidence
    if defect.any():
        near = cv2.dilate(defect.astype(np.uint8), _disc(CONFIDENCE_RING)) > 0
        confidence = float(p_max[near].mean())
    elif cfg.fallback > 0:
        labels, confidence = cam_core(cam, p, cfg.fallback)
        unsure &= labels == 0  # the core is labelled although the refinement preferred background there
    else:
        confidence = float(p[0].mean())
    grown = grow(labels, classes, cfg.margin)
    unsure &= grown == labels  # the margin is labelled although the refinement preferred background there
    mask = grown.copy()
    mask[unsure] = IGNORE
    mask[boundary_band(grown, classes, cfg.ignore_band)] = IGNORE
    n = mask.size
    return LabelResult(
        mask=mask,
        confidence=confidence,
        defect_fraction=float(np.count_nonzero((mask > 0) & (mask != IGNORE)) / n),
        ignore_fraction=float(np.count_nonzero(mask == IGNORE) / n),
    )


def cam_core(cam: np.ndarray, p: np.ndarray, fraction: float) -> tuple[np.ndarray, float]:
    """Labels (H, W) of step 7: the strongest class where its CAM reaches ``fraction`` of its peak, and the image's
    confidence (that class's mean refined probability there)."""
    peaks = cam.reshape(cam.shape[0], -1).max(axis=1)
    k = int(peaks.argmax())
    core = cam[k] >= fraction * peaks[k]
    labels = np.zeros(cam.shape[1:], np.uint8)
    labels[core] = k + 1
    return labels, float(p[k + 1][core].mean())


def label_one(task: LabelTask) -> dict[str, Any]:
    """Read one image and its CAM, label it, write the mask PNG; returns its ``confidence.csv`` row (sans score).

    Top-level, so that pool workers can run it. A missing or corrupt image or CAM is a DataError naming the file.
    """

    image = read_image(task.image, task.high_bit_depth)
    cam = read_cam(task.cam, shape=image.shape[:2], classes=task.classes)
    if task.cfg.unary != "cam":
        if task.anomaly is None:
            raise ValueError(f"pseudo.unary={task.cfg.unary} but no anomaly map was given for {task.id}")
        cam = unary_map(cam, read_anomaly(task.anomaly, *task.anomaly_range, shape=image.shape[:2]), task.cfg)
    res = label_image(image, cam, task.cfg, task.called_defective)
    write_mask(task.out, res.mask)
    return {
        "id": task.id,
        "confidence": res.confidence,
        "defect_fraction": res.defect_fraction,
        "ignore_fraction": res.ignore_fraction,
    }


# --------------------------------------------------------------------------------------------------------
# running over many images


def _unexpected(task: LabelTask, e: Exception) -> StageError:
    """The user-facing error for an unexpected exception raised while labelling ``task``."""
    return StageError(
        f"image {task.id!r} ({task.image})",
        f"labelling failed: {type(e).__name__}: {e}",
        "check this image and its CAM; the traceback is in the stage's manifest.json",
    )


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the error raised in the parent."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}"


def _worker_init() -> None:
    # One process per core already: OpenCV's and (for the torch CRF backend) torch's thread pools would only
    # oversubscribe the cores. torch is imported later, lazily, so the variable is set before it reads it.
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _label_in_worker(task: LabelTask) -> tuple[str, Any]:
    """Run :func:`label_one` in a worker, returning failures as plain data.

    Our errors do not survive pickling (their ``__init__`` takes (where, what, fix), pickle passes one message),
    and an exception that fails to unpickle in the parent breaks the whole pool; so failures travel as tuples.
    """
    try:
        return "ok", label_one(task)
    except WsssError as e:
        return "wsss", (type(e), e.where, e.what, e.fix)
    except Exception as e:
        return "error", (type(e).__name__, str(e), traceback.format_exc())


def _raise_remote(task: LabelTask, kind: str, payload: Any) -> None:
    if kind == "wsss":
        cls, where, what, fix = payload
        try:
            err: WsssError = cls(where, what, fix)
        except TypeError:
            err = StageError(where, what, fix)
        raise err
    name, msg, tb = payload
    raise StageError(
        f"image {task.id!r} ({task.image})",
        f"labelling failed in a worker process: {name}: {msg}",
        "check this image and its CAM; the worker's traceback is in the stage's manifest.json",
    ) from _RemoteTraceback(tb)


def _first(ids: list[str]) -> str:
    more = f", ... ({len(ids) - SHOW_IDS} more)" if len(ids) > SHOW_IDS else ""
    return ", ".join(ids[:SHOW_IDS]) + more


def _in_process(tasks: Sequence[LabelTask]) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, task in enumerate(tasks):
        try:
            row = label_one(task)
        except WsssError:
            raise  # already names the file (image or CAM) and the fix
        except Exception as e:
            raise _unexpected(task, e) from e
        yield i, row


def _in_pool(tasks: Sequence[LabelTask], workers: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(task index, row)`` as workers finish; at most ``2 * workers`` tasks are submitted at a time, so a
    dead worker is reported with a short list of images in flight and a failure cancels little work."""
    ctx = mp.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload([__name__])  # workers fork with numpy/cv2/pydensecrf already imported
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    pending: dict[Future, int] = {}
    try:
        submitted = 0
        while submitted < len(tasks) or pending:
            while submitted < len(tasks) and len(pending) < 2 * workers:
                pending[ex.submit(_label_in_worker, tasks[submitted])] = submitted
                submitted += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=pending.__getitem__):
                i = pending[fut]
                try:
                    kind, payload = fut.result()
                except BrokenProcessPool:
                    ids = [tasks[j].id for j in sorted(pending.values())]
                    raise StageError(
                        f"labelling pool of {workers} processes",
                        f"a worker process died (killed, out of memory or crashed) while labelling: {_first(ids)}",
                        "re-run the stage (finished images are kept); if it recurs, lower pseudo.workers or check "
                        "those images",
                    ) from None
                del pending[fut]
                if kind != "ok":
                    _raise_remote(tasks[i], kind, payload)
                yield i, payload
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def label_all(
    tasks: Sequence[LabelTask],
    workers: int,
    echo: Callable[[str], Any],
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run :func:`label_one` over ``tasks``; returns their rows in task order.

    Args:
        workers: processes (0 = every available core); 1 labels in this process, without a pool.
        echo: where the one-line start message goes.
        on_done: called in this process with each row as soon as its image is finished (for resumable logs).

    Raises:
        WsssError: the error of the first image that failed (a StageError naming the image id and path for an
            unexpected exception, or a StageError listing the images in flight when a worker process died).
    """
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    if not tasks:
        return []
    workers = min(pool_size(workers), len(tasks))
    echo(f"labelling {len(tasks)} image(s) (method {tasks[0].cfg.method}) with {workers} process(es)")
    it = _in_process(tasks) if workers == 1 else _in_pool(tasks, workers)
    with contextlib.closing(it):
        for i, row in progress(it, desc="labelling", total=len(tasks)):
            rows[i] = row
            if on_done is not None:
                on_done(row)
    return [r for r in rows if r is not None]
