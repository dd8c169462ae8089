"""The parts a segmenter's training item is made of, each one concern of :class:`wsss.train.segmenter_data.
PseudoMaskDataset`: which mask an image trains on and what of it counts (:class:`MaskChoice`), the training window
(:class:`DefectCrop`) and the geometry that image, mask and teacher map share (:func:`paired_geometry`).

Supervision is only what weak supervision produced, or what a person reviewed: ground-truth masks are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsss.artifacts.masks import REJECTED_FILE, pseudo_mask_path
from wsss.data.index import TrainRow
from wsss.labels import IGNORE
from wsss.refine.pseudo import margin_ignored

# what a pseudo-mask that misses a labelled defect trains as (see MaskChoice.missed)
MISSED_DEFECTS = ("background", "ignore")
CROP_STREAM = 2  # appended to (seed, epoch, index): training crops draw from their own stream


def rejected_ids(reviewed_dir: Path | None) -> set[str]:
    """The ids of ``rejected.txt`` beside ``reviewed_dir`` (``<run>/reviewed/masks``): images whose pseudo-mask a
    reviewer rejected (`wsss import-review --format decisions`).

    Their mask is all ignore, so CE and Dice skip them, but their image label still trains the image head (and, when
    distilling, the teacher's soft targets): the reviewer judged the mask, not the label. A human mask of the same
    image wins (it is not rejected), and an OK image that was rejected is not forced to background."""
    path = Path(reviewed_dir).parent / REJECTED_FILE if reviewed_dir is not None else None
    if path is None or not path.is_file():
        return set()
    return {ln for ln in path.read_text(encoding="utf-8").splitlines() if ln}


@dataclass
class MaskChoice:
    """Which mask each training image trains on, and what of it counts.

    - A reviewed image (its ``<id>.png`` in ``reviewed_dir``) trains on the person's mask, as drawn.
    - A rejected one (:func:`rejected_ids`) on an all-ignore mask.
    - Every other one on its pseudo-mask in ``masks_dir``, with the inner ring of width ``margin`` of its defect
      regions ignored (the pixels the mask stage grew them by: :func:`wsss.refine.pseudo.margin_ignored`), and, with
      ``missed_defects="ignore"``, all ignore where it misses a class the image label names (:meth:`missed`).
    - With ``ok_background``, an OK image (no label, not reviewed, not rejected) trains as all background whatever
      its pseudo-mask says: its image label is known, so this is exact.
    """

    rows: Sequence[TrainRow]
    masks_dir: Path
    reviewed_dir: Path | None = None
    margin: int = 0
    missed_defects: str = "background"
    ok_background_on: bool = False
    reviewed: set[int] = field(init=False)
    rejected: set[int] = field(init=False)

    def __post_init__(self) -> None:
        if self.missed_defects not in MISSED_DEFECTS:
            raise ValueError(f"missed_defects must be one of {MISSED_DEFECTS}, got {self.missed_defects!r}")
        self.masks_dir = Path(self.masks_dir)
        self.reviewed_dir = Path(self.reviewed_dir) if self.reviewed_dir is not None else None
        self.margin = int(self.margin)
        self.reviewed = {  # images a person corrected (`wsss import-review`): their masks replace the pseudo-masks
            i
            for i, r in enumerate(self.rows)
            if self.reviewed_dir is not None and (self.reviewed_dir / f"{r.id}.png").is_file()
        }
        rejected = rejected_ids(self.reviewed_dir)
        self.rejected = {i for i, r in enumerate(self.rows) if r.id in rejected and i not in self.reviewed}

    def path(self, index: int) -> Path:
        """The human mask of a reviewed image, else its pseudo-mask."""
        if index in self.reviewed and self.reviewed_dir is not None:
            return pseudo_mask_path(self.reviewed_dir, self.rows[index].id)
        return pseudo_mask_path(self.masks_dir, self.rows[index].id)

    def counted(self, index: int, mask: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Sample ``index``'s mask as read (at the image's size) with what does not count set to ignore: the margin
        ring of a pseudo-mask; all of a rejected mask, or of one that missed a labelled defect (``"ignore"``)."""
        if self.margin and index not in self.reviewed:
            mask = margin_ignored(mask, self.margin)
        if index in self.rejected or (self.missed_defects == "ignore" and self.missed(index, mask, target)):
            mask = np.full_like(mask, IGNORE)
        return mask

    def missed(self, index: int, mask: np.ndarray, target: np.ndarray) -> bool:
        """Whether the pseudo-mask of sample ``index`` has no pixel of a class its image label (``target``) names.

        Pseudo-labelling missed that defect (the CRF erased a weak CAM, or the CAM was empty), so "background" there
        is not known, and trained as is such masks push the student to erase defects. With
        ``missed_defects="ignore"`` the whole mask is ignore (the image still trains the classification head and,
        when distilling, the teacher's soft targets); OK images and human-reviewed masks are always trained as is.
        Off by default: on KSDD it did not help (docs/lab-notes/benchmarks-log.md).
        """
        if index in self.reviewed:
            return False
        labelled = np.flatnonzero(target > 0) + 1  # class k is mask value k
        return bool(labelled.size) and not np.isin(labelled, mask).all()

    def ok_background(self, index: int, target: np.ndarray, forced: bool = False) -> bool:
        """Whether sample ``index`` (image label ``target``) trains as all background: an OK image (no label, no
        human mask, not rejected), with ``ok_background`` on or ``forced`` (defect injection needs it)."""
        on = self.ok_background_on or forced
        return on and index not in self.reviewed and index not in self.rejected and not target.any()


@dataclass(frozen=True)
class DefectCrop:
    """A ``size`` (H, W) training window that keeps the image label true.

    With defect pixels in the mask (pseudo, human or injected) the window holds one of them, drawn at random and
    placed at a random position in the window; otherwise it is anywhere (padded inputs, ``pad``: anywhere it holds a
    pixel of the image, not padding alone). A class whose pixels the mask shows but the window leaves out is dropped
    from the target; a labelled class the mask lacks (a missed defect) is kept: where it is is not known. The draw
    comes from ``default_rng([seed, epoch, index, CROP_STREAM])``: reproducible whatever the workers."""

    size: tuple[int, int]
    pad: bool = False

    def __call__(
        self,
        rng_key: Sequence[int],
        img: np.ndarray,
        mask: np.ndarray,
        cam: np.ndarray | None,
        target: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        rng = np.random.default_rng([*rng_key, CROP_STREAM])
        (ch, cw), (h, w) = self.size, mask.shape[:2]
        defect = np.flatnonzero(((mask > 0) & (mask != IGNORE)).ravel())
        inside = np.flatnonzero((mask != IGNORE).ravel()) if not defect.size and self.pad else defect
        if inside.size:
            y, x = divmod(int(inside[rng.integers(inside.size)]), w)
            top = int(np.clip(y - rng.integers(ch), 0, h - ch))
            left = int(np.clip(x - rng.integers(cw), 0, w - cw))
        else:
            top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        window = (slice(top, top + ch), slice(left, left + cw))
        shown = {int(v) for v in np.unique(mask) if 0 < v != IGNORE}
        kept = {int(v) for v in np.unique(mask[window]) if 0 < v != IGNORE}
        target = target.copy()
        for k in shown - kept:
            target[k - 1] = 0.0
        return img[window], mask[window], None if cam is None else cam[window], target


def paired_geometry(arrays: list[np.ndarray], rng: np.random.Generator, flips: bool, rot90: bool) -> list[np.ndarray]:
    """The same lossless geometry (a horizontal and a vertical flip, each with probability 1/2; a quarter turn on
    square inputs) applied to every array of ``arrays`` (image, mask, teacher map), so they stay aligned."""
    if flips:
        if rng.random() < 0.5:
            arrays = [a[:, ::-1] for a in arrays]
        if rng.random() < 0.5:
            arrays = [a[::-1] for a in arrays]
    if rot90 and arrays[0].shape[0] == arrays[0].shape[1]:
        k = int(rng.integers(4))
        arrays = [np.rot90(a, k) for a in arrays]
    return arrays
