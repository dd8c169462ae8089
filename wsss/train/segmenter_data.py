"""The segmenter's training data: images with their pseudo-masks and, for distillation, the teacher's soft targets.

Supervision is only what weak supervision produced: pseudo-masks (0 background, k class k, 255 ignore), the image
labels of :class:`~wsss.data.index.TrainRow` and, when distilling (METHOD.md 6), the teacher's extended CAMs and
sample scores from the `cam` stage. Ground-truth masks are never read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsss.artifacts.masks import MASK_FIX, read_pseudo_mask
from wsss.cam.io import cam_path, read_cam
from wsss.data.classifier_data import ImageDataset
from wsss.data.images import read_image
from wsss.data.index import TrainRow
from wsss.data.transforms import Augment, fit_image, fit_mask, to_channels, to_tensor
from wsss.errors import ConfigError, DataError
from wsss.labels import IGNORE
from wsss.refine.pseudo import class_probs
from wsss.train.config import InjectConfig
from wsss.train.inject import Injector, PasteSource, paste_sources
from wsss.train.mask_parts import DefectCrop, MaskChoice, paired_geometry


def reviewed_masks(folder: str | Path | None, key: str) -> Path | None:
    """The masks of a `wsss import-review` folder (``<run>/reviewed``) named by setting ``key``, or None when unset;
    a ConfigError when it holds no ``masks/``."""

    if not folder:
        return None
    masks = Path(folder) / "masks"
    if not masks.is_dir():
        raise ConfigError(
            key,
            f"{folder} holds no masks/ folder",
            f"run `wsss import-review ... --run RUN` first, then set {key}=RUN/reviewed",
        )
    return masks


INJECT_STREAM = 1  # appended to (seed, epoch, index): injection draws from its own stream, not augmentation's


@dataclass(frozen=True)
class Teacher:
    """What the student distils from (METHOD.md 6), and how much.

    The teacher's per-pixel class distribution is the pseudo-labelling rule's step 1 applied to the extended CAM,
    ``normalise([bg_prior, cam_1..cam_K])`` (:func:`wsss.refine.pseudo.class_probs`): the refined CAM as
    probabilities, before the CRF turns it into hard labels (our reading of "the teacher's refined CAM
    probabilities"; the CRF's own marginals are not kept by `pseudo-labels`).

    Attributes:
        cam_dir: the `cam` stage's folder (its ``cams/<id>.npz``).
        scores: per image id, the DFC's per-class sample probabilities (K,).
        bg_prior: ``pseudo.bg_prior``.
        kd_weight, temperature: weight and temperature of the per-pixel KL term.
        score_weight: weight of the sample-level term (BCE toward the DFC's scores).
    """

    cam_dir: Path
    scores: dict[str, np.ndarray]
    bg_prior: float
    kd_weight: float
    temperature: float
    score_weight: float

    def cam_at(self, sid: str, shape: tuple[int, ...], k: int, input_size: Sequence[int], fit: str) -> np.ndarray:
        """Image ``sid``'s extended CAM (of an image of ``shape``) placed at ``input_size`` as the image is
        (``fit``; padding is background), as ``uint8`` (H, W, K): what the dataset caches."""
        full = read_cam(cam_path(self.cam_dir, sid), shape[:2], k)
        small = [fit_image(np.ascontiguousarray(c), input_size, fit, fill=0.0) for c in full]
        return np.clip(np.rint(np.stack(small, axis=-1) * 255.0), 0, 255).astype(np.uint8)

    def targets(self, sid: str, cam: np.ndarray) -> dict[str, torch.Tensor]:
        """The item's teacher targets from its ``uint8`` (H, W, K) CAM: ``"teacher"`` (K+1, H, W) class
        probabilities and ``"teacher_score"`` (K,), the DFC's sample probabilities."""
        chw = np.ascontiguousarray(cam.transpose(2, 0, 1)).astype(np.float32) / 255.0
        return {
            "teacher": torch.from_numpy(class_probs(chw, self.bg_prior)),
            "teacher_score": torch.as_tensor(self.scores[sid], dtype=torch.float32),
        }


@dataclass(frozen=True)
class SegmenterData:
    """What a segmenter learns from: training images with their mask set, and what comes with it.

    Attributes:
        rows: the training images (:class:`~wsss.data.index.TrainRow`: no ground truth).
        masks_dir: their mask set (``<id>.png``, :mod:`wsss.artifacts.masks`).
        classes: the defect classes (mask value k = ``classes[k - 1]``).
        in_chans: the images' channels (a backbone's own ``in_chans`` wins).
        val_rows: validation images (with masks in ``masks_dir``) for best-epoch keeping and early stopping.
        teacher: distil from this teacher (METHOD.md 6); None = masks and labels only.
        reviewed_dir: masks a person corrected (``<run>/reviewed/masks``); they replace those images' masks.
        reviewed_repeat: a reviewed image is drawn this many times as often as the others of its kind in an epoch.
        margin: the pixels the mask stage grew ``masks_dir``'s defect regions by
            (:func:`wsss.stages.recorded_margin`): their inner ring is ignored, in training and in the validation
            masks that choose the epoch.
        high_bit_depth: ``dataset.high_bit_depth``.
        fit: how an image meets the input size (``dataset.fit``: stretch, or pad keeping its aspect ratio); recorded
            in ``segmenter.json`` so that predictions place images alike.
    """

    rows: Sequence[TrainRow]
    masks_dir: Path
    classes: Sequence[str]
    in_chans: int
    val_rows: Sequence[TrainRow] = ()
    teacher: Teacher | None = None
    reviewed_dir: Path | None = None
    reviewed_repeat: int = 1
    margin: int = 0
    high_bit_depth: str = "refuse"
    fit: str = "stretch"


class PseudoMaskDataset(ImageDataset):
    """Training images with their pseudo-masks (``masks_dir/<id>.png``), image-level targets and teacher targets.

    Each item is ``{"image": (C, H, W) float, "mask": (H, W) int64 (0..K, 255 = ignore), "target": (K,) float,
    "index": int, "reviewed": 1.0 for a human mask else 0.0, "injected": 1.0 for an injected defect else 0.0}`` at
    ``input_size`` (with ``missed_defects="ignore"`` a mask that misses a labelled defect is all ignore, see
    :meth:`missed`; so is the mask of an image a reviewer rejected, see :func:`wsss.train.mask_parts.rejected_ids`); with a ``teacher`` also
    ``"teacher": (K+1, H, W)`` class probabilities and ``"teacher_score": (K,)``. Only lossless geometry (flips,
    rot90 on square inputs) is applied, to image, mask and teacher map alike, so they stay aligned; the photometric
    part of ``augment`` touches the image only. Seeding, epochs, targets and the in-memory cache are
    :class:`~wsss.data.classifier_data.ImageDataset`'s (the teacher's CAM is cached as ``uint8``).

    With ``ok_background`` (and always with ``inject``) every OK training image (no image label, not reviewed) trains
    as all background, whatever its pseudo-mask says (its image label is known, so this is exact; a pseudo-mask of an
    OK image the DFC called defective has CAM blobs). With ``inject`` enabled (:mod:`wsss.train.inject`) an OK image
    also, with probability ``inject.prob`` per draw gets an injected
    defect, before augmentation: the item's mask is then the injection's exact target, its ``target`` names the
    injected class(es) and ``"injected"`` is 1.0 (the trainer leaves it out of both distillation terms: the teacher
    never saw that defect). Paste sources are the confident regions of the defective training images whose
    ``confidence`` (per id, from the mask stage's ``confidence.csv``; reviewed masks count as 1.0) reaches
    ``inject.min_confidence``, cut once here, most confident images first, at most ``inject.max_sources``. The
    injection draws from ``default_rng([seed, epoch, index, INJECT_STREAM])``: reproducible whatever the workers.

    ``margin``: the pixels the mask stage grew its defect regions by (``pseudo.margin``); their inner ring of that
    width is ignore in every pseudo-mask (:func:`wsss.refine.pseudo.margin_ignored`), never in a reviewed one.
    """

    def __init__(
        self,
        rows: Sequence[TrainRow],
        masks_dir: Path,
        classes: Sequence[str],
        input_size: Sequence[int],
        in_chans: int = 1,
        augment: Augment | None = None,
        seed: int = 0,
        high_bit_depth: str = "refuse",
        teacher: Teacher | None = None,
        reviewed_dir: Path | None = None,
        missed_defects: str = "background",
        ok_background: bool = False,
        inject: InjectConfig | None = None,
        confidence: Mapping[str, float] | None = None,
        crop: Sequence[int] = (0, 0),
        margin: int = 0,
        fit: str = "stretch",
    ):
        super().__init__(rows, classes, input_size, in_chans, augment, seed, high_bit_depth, fit)
        self.choice = MaskChoice(self.rows, masks_dir, reviewed_dir, margin, missed_defects, ok_background)
        self.crop = DefectCrop((int(crop[0]), int(crop[1])), fit == "pad") if min(crop) > 0 else None
        if self.crop is not None and (self.crop.size[0] > input_size[0] or self.crop.size[1] > input_size[1]):
            raise ValueError(f"crop {list(self.crop.size)} is larger than input_size {list(input_size)}")
        self.teacher = teacher
        self.photometric = None
        if augment is not None:
            no_geometry = {"flips": False, "rot90": False, "affine_degrees": 0.0, "affine_scale": 0.0}
            self.photometric = Augment(dataclasses.replace(augment.cfg, **no_geometry, affine_translate=0.0))
        missing = [p for p in (self.mask_path(i) for i in range(len(self.rows))) if not p.is_file()]
        if missing:  # fail before training starts, not in the middle of an epoch
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(missing[0], f"pseudo-mask missing for a training image{more}", MASK_FIX)
        if teacher is not None:
            no_score = [r.id for r in self.rows if r.id not in teacher.scores]
            if no_score:
                raise DataError(
                    teacher.cam_dir / "scores.csv",
                    f"no sample score for {len(no_score)} training image(s), e.g. {no_score[0]!r}",
                    "re-run `wsss run-stage cam`",
                )
        self.inject = inject if inject is not None and inject.enabled else None
        self.injector: Injector | None = None
        if self.inject is not None:
            self.injector = Injector(
                self.inject, self._paste_sources(confidence or {}), 1 if len(self.classes) == 1 else None
            )

    def _paste_sources(self, confidence: Mapping[str, float]) -> list[PasteSource]:
        """The confident regions of the defective training images' masks (see the class docstring)."""
        assert self.inject is not None
        conf = {i: 1.0 if i in self.reviewed else confidence.get(r.id, -1.0) for i, r in enumerate(self.rows)}
        ranked = sorted(
            (
                i
                for i, r in enumerate(self.rows)
                if r.defective and i not in self.rejected and conf[i] >= self.inject.min_confidence
            ),
            key=lambda i: (-conf[i], i),
        )
        sources: list[PasteSource] = []
        for i in ranked:
            img, mask, _ = self.load(i)
            labels = (np.flatnonzero(self._targets[i] > 0) + 1).tolist()
            sources += paste_sources(img, mask, labels, self.inject.min_area, self.inject.blend)
            if len(sources) >= self.inject.max_sources:
                break
        return sources[: self.inject.max_sources]

    @property
    def masks_dir(self) -> Path:
        """The mask set the samples train on (where no person's mask replaces one)."""
        return self.choice.masks_dir

    @property
    def margin(self) -> int:
        return self.choice.margin

    @property
    def reviewed(self) -> set[int]:
        """The samples a person corrected: they train on the human mask."""
        return self.choice.reviewed

    @property
    def rejected(self) -> set[int]:
        return self.choice.rejected

    def ok_background(self, index: int) -> bool:
        """Whether sample ``index`` trains as all background (:meth:`MaskChoice.ok_background`; always with
        injection on)."""
        return self.choice.ok_background(index, self._targets[index], forced=self.inject is not None)

    def mask_path(self, index: int) -> Path:
        return self.choice.path(index)

    def missed(self, index: int, mask: np.ndarray) -> bool:
        return self.choice.missed(index, mask, self._targets[index])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # type: ignore[override]
        """Image, pseudo-mask and teacher CAM (``uint8`` (H, W, K), or None) of sample ``index`` at ``input_size``."""
        if self._cache is not None:
            return self._cache[index]
        img = to_channels(read_image(self.rows[index].path, self.high_bit_depth), self.in_chans)
        mask = read_pseudo_mask(self.mask_path(index), img.shape[:2], len(self.classes))
        mask = self.choice.counted(index, mask, self._targets[index])
        cam = None
        if self.teacher is not None:
            cam = self.teacher.cam_at(self.rows[index].id, img.shape, len(self.classes), self.input_size, self.fit)
        # padded (dataset.fit: pad), the padding is ignore in the mask and background in the teacher's CAM
        size = self.input_size
        return fit_image(img, size, self.fit), fit_mask(mask, size, self.fit, img.shape, IGNORE), cam

    def cache_bytes(self) -> int:
        per_pixel = 1 + (len(self.classes) if self.teacher is not None else 0)
        return super().cache_bytes() + len(self.rows) * self.input_size[0] * self.input_size[1] * per_pixel

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        index = int(index) % len(self.rows) if index < 0 else int(index)
        img, mask, cam = self.load(index)
        target, injected = self._targets[index].copy(), False
        if self.ok_background(index):
            mask = np.zeros_like(mask)
            if self.injector is not None:
                drawn = self.injector(img, np.random.default_rng([self.seed, self.epoch, index, INJECT_STREAM]))
                if drawn is not None:
                    img, mask = drawn
                    present = np.unique(mask[(mask > 0) & (mask != IGNORE)]).astype(int)
                    target[present - 1] = 1.0
                    injected = True
        if self.crop is not None:
            img, mask, cam, target = self.crop((self.seed, self.epoch, index), img, mask, cam, target)
        if self.augment is not None and self.photometric is not None:  # both or neither
            rng, cfg = self.rng(index), self.augment.cfg
            arrays = paired_geometry([img, mask] + ([cam] if cam is not None else []), rng, cfg.flips, cfg.rot90)
            img, mask = self.photometric(np.ascontiguousarray(arrays[0]), rng), arrays[1]
            cam = arrays[2] if cam is not None else None
        item = {
            "image": to_tensor(img),
            "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
            "target": torch.from_numpy(target),
            "index": index,
            "reviewed": torch.tensor(float(index in self.reviewed)),
            "injected": torch.tensor(float(injected)),
        }
        if self.teacher is not None and cam is not None:
            item |= self.teacher.targets(self.rows[index].id, cam)
        return item
