"""One picture of how a run did: test images as rows, image | ground truth | pseudo-mask | segmenter mask as columns.

The rows are the best, the median and the worst defective image by the final stage's IoU against the ground truth,
so the picture shows the spread rather than a chosen success. Without ground truth (a team's own images) they are
the test images the segmenter is most sure, midway and least sure are defective, among those it calls defective
(:func:`pick_by_score`), and the ground-truth column stays bare. Masks are drawn over their image
(:func:`wsss.export.overlay.overlay`: class colours, ignore pixels grey); a title band names the columns and each
row's label carries its IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from wsss.data.images import read_image
from wsss.data.index import EvalRow
from wsss.evaluation import read_pred_mask
from wsss.evaluation.report import ImageResult
from wsss.export.overlay import overlay, write_rgb_png

COLUMNS = ("image", "ground truth", "pseudo-mask", "segmenter")
TILE = 192  # every tile's side in pixels: the demo's 128 px images upscaled, large enough to see a 1 px scratch
TITLE = 22  # height of the column-title band and of each row's label strip, pixels
FONT = cv2.FONT_HERSHEY_SIMPLEX


def pick_rows(results: Sequence[ImageResult]) -> list[tuple[str, ImageResult]]:
    """The best, median and worst images by IoU among those with a ground-truth defect (fewer if fewer exist)."""
    scored = sorted((r for r in results if r.iou is not None and r.gt_area), key=lambda r: (-r.iou, r.id))
    if not scored:
        return []
    picks = {"best": scored[0], "median": scored[len(scored) // 2], "worst": scored[-1]}
    seen: set[str] = set()
    out = []
    for name, r in picks.items():
        if r.id not in seen:
            seen.add(r.id)
            out.append((name, r))
    return out


def pick_by_score(scores: dict[str, float], threshold: float) -> list[tuple[str, str]]:
    """(row label, id) of the images called defective (score >= ``threshold``) with the highest, the median and the
    lowest score; fewer when fewer are called defective."""
    called = sorted(((s, i) for i, s in scores.items() if s >= threshold), key=lambda t: (-t[0], t[1]))
    if not called:
        return []
    picks = {"surest": called[0], "median": called[len(called) // 2], "least sure": called[-1]}
    out, seen = [], set()
    for name, (score, sid) in picks.items():
        if sid not in seen:
            seen.add(sid)
            out.append((f"{name}: {sid}, segmenter score {score:.2f}", sid))
    return out


def _tile(image: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    rgb = overlay(image, labels) if labels is not None else overlay(image, np.zeros(image.shape[:2], np.uint8))
    return cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_NEAREST)


def _text(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x + 4, y + TITLE - 7), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def grid_shape(n_rows: int) -> tuple[int, int, int]:
    """(H, W, 3) of an overview with ``n_rows`` image rows."""
    return TITLE + n_rows * (TITLE + TILE), len(COLUMNS) * TILE, 3


def write_overview(
    out: Path,
    rows: Sequence[EvalRow],
    results: Sequence[ImageResult],
    pseudo_dir: Path,
    final_dir: Path,
    picks: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Write the overview PNG to ``out``: the rows :func:`pick_rows` takes from the final stage's per-image
    ``results``, or the given ``picks`` ((row label, id), e.g. :func:`pick_by_score`'s)."""
    by_id = {r.id: r for r in rows}
    if picks is None:
        picks = [(f"{name}: {r.id}, segmenter IoU {r.iou:.2f}", r.id) for name, r in pick_rows(results)]
    canvas = np.zeros(grid_shape(len(picks)), np.uint8)
    for j, name in enumerate(COLUMNS):
        _text(canvas, name, j * TILE, 0)
    for i, (label, sid) in enumerate(picks):
        row = by_id[sid]
        image = read_image(row.path)
        gt = (read_pred_mask(row.mask) > 0).astype(np.uint8) if row.mask is not None else None
        masks = [gt, read_pred_mask(pseudo_dir / f"{row.id}.png"), read_pred_mask(final_dir / f"{row.id}.png")]
        y = TITLE + i * (TITLE + TILE)
        _text(canvas, label, 0, y)
        for j, labels in enumerate([None, *masks]):
            canvas[y + TITLE : y + TITLE + TILE, j * TILE : (j + 1) * TILE] = _tile(image, labels)
    write_rgb_png(out, canvas)
    return out
