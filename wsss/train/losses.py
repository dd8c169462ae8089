"""Losses: the Defect Focus Classifier's (METHOD.md 1) and the segmenter's (METHOD.md 5-6: CE + Dice on pseudo-masks,
distillation from the teacher)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from wsss.labels import IGNORE  # pseudo-mask value excluded from the segmentation loss

DICE_SMOOTH = 1.0


def supervised_infonce(
    z_fg: torch.Tensor, z_bg: torch.Tensor, z_img: torch.Tensor, defective: torch.Tensor, temperature: float
) -> torch.Tensor:
    """CLM's supervised InfoNCE over one batch of L2-normalised embeddings (each (B, d)).

    Anchors are the defective images' z_fg. An anchor's positives are the z_fg of the *other* defective images;
    its negatives are every image's z_bg and the whole-image embedding z_img of every OK image. Per anchor
    (SupCon form): -mean_p log(exp(s_p / tau) / (sum_p' exp(s_p' / tau) + sum_n exp(s_n / tau))). Anchors without
    a positive (fewer than two defective images in the batch) contribute nothing; with no valid anchor the loss
    is a zero that still carries the graph.
    """
    defective = defective.bool()
    idx = torch.nonzero(defective).flatten()
    if idx.numel() < 2:
        return z_fg.sum() * 0.0
    anchors = z_fg[idx]  # (P, d)
    negatives = torch.cat([z_bg, z_img[~defective]], dim=0)  # (N, d)
    pos_logits = anchors @ anchors.T / temperature  # (P, P); the diagonal is the anchor itself
    neg_logits = anchors @ negatives.T / temperature  # (P, N)
    self_mask = torch.eye(len(idx), dtype=torch.bool, device=z_fg.device)
    pos_logits = pos_logits.masked_fill(self_mask, float("-inf"))
    denom = torch.logsumexp(torch.cat([pos_logits, neg_logits], dim=1), dim=1, keepdim=True)  # (P, 1)
    log_prob = (pos_logits - denom).masked_fill(self_mask, 0.0)
    return -(log_prob.sum(1) / (len(idx) - 1)).mean()


def gcm_consistency(
    crop_cams: torch.Tensor, full_cams: torch.Tensor, boxes: torch.Tensor, scale: float
) -> torch.Tensor:
    """Consistency between each crop's CAM and the same region of its full-image CAM (GCM, optional).

    ``boxes`` (B, 4) are x1, y1, x2, y2 in input pixels; ``scale`` maps pixels to CAM cells (1 / stride).
    The full-image region is resampled to the crop CAM's size (roi_align); the loss is the mean squared
    difference of their sigmoids, with the full-image side detached (it is the guide the crop must agree with).
    """
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    region = roi_align(
        full_cams.float().detach(),
        rois.float(),
        output_size=crop_cams.shape[-2:],
        spatial_scale=scale,
        sampling_ratio=1,
        aligned=True,
    )
    return F.mse_loss(torch.sigmoid(crop_cams.float()), torch.sigmoid(region))


def flip_equivariance(cams: torch.Tensor, flipped_back: torch.Tensor, defective: torch.Tensor) -> torch.Tensor:
    """How far a batch's CAMs move when the images are flipped (``classifier.equivariance``).

    ``cams`` (B, K, h, w) are the class maps of the images, ``flipped_back`` those of the flipped images flipped back
    onto them; the loss is the mean absolute difference of their positive parts, each image divided by the larger of
    its two peaks (detached, so the loss moves where the maps fire, not their scale), over the images labelled
    ``defective`` (B,) only: an OK image's map is pulled to zero by the classification loss already. 0 without any.
    A CAM on the defect does not move under a flip; one beside it lands on the other side (wsss/cam/consistency.py).
    """
    if not bool(defective.any()):
        return cams.sum() * 0.0
    a, b = cams[defective].float().relu(), flipped_back[defective].float().relu()
    peak = torch.maximum(a.flatten(1).amax(1), b.flatten(1).amax(1)).detach().clamp_min(1e-6)
    return ((a - b).abs().flatten(1).mean(1) / peak).mean()


def segmentation_loss(
    mask_logits: torch.Tensor, mask: torch.Tensor, dice_weight: float = 1.0, dice_over: str = "batch"
) -> torch.Tensor:
    """Cross-entropy over the K+1 classes plus ``dice_weight`` x soft Dice over the K defect classes.

    Pixels labelled 255 count in neither term (they are where the pseudo-mask is unsure). CE is the mean over the
    labelled pixels (0 when there are none). Dice, smoothed by 1, counters the pixel imbalance of small defects that
    CE alone under-weights; ``dice_over`` says over what it is computed:

    - ``"batch"``: per defect class over the whole batch, averaged over the classes (an OK image does not produce
      an ill-defined per-image Dice); a large defect outweighs a small one in the batch;
    - ``"image"``: per image and defect class where the target has pixels of that class, averaged over those pairs,
      so each defect weighs the same whatever its size, as in mIoU_def (the mean of per-image IoUs); a batch without
      any defect pixel falls back to the batch Dice (its predicted defect pixels are all false positives).

    Args:
        mask_logits: (B, K+1, H, W) logits; channel 0 = background.
        mask: (B, H, W) int64 in {0..K, 255}.
    """
    logits = mask_logits.float()
    valid = mask != IGNORE
    ce = F.cross_entropy(logits, mask, ignore_index=IGNORE, reduction="sum") / valid.sum().clamp(min=1)
    if dice_weight <= 0:
        return ce
    k1 = logits.shape[1]
    v = valid.unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1)[:, 1:] * v
    target = F.one_hot(torch.where(valid, mask, 0), k1).permute(0, 3, 1, 2)[:, 1:].to(logits.dtype)
    if dice_over == "image":
        inter = (probs * target).sum((2, 3))  # (B, K)
        area = target.sum((2, 3))
        present = area > 0
        if present.any():
            dice = 1.0 - (2.0 * inter + DICE_SMOOTH) / (probs.sum((2, 3)) + area + DICE_SMOOTH)
            return ce + dice_weight * dice[present].mean()
    elif dice_over != "batch":
        raise ValueError(f"dice_over must be 'batch' or 'image', got {dice_over!r}")
    inter = (probs * target).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + target.sum((0, 2, 3))
    dice = 1.0 - (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)
    return ce + dice_weight * dice.mean()


def distillation_kl(
    mask_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(teacher || student) of the per-pixel class distributions, both softened by ``temperature`` (METHOD.md 6).

    The student's distribution is ``softmax(logits / T)``; the teacher's probabilities are softened the same way,
    ``p^(1/T)`` renormalised (the softmax of its log-probabilities over T). The KL is summed over classes, averaged
    over pixels and scaled by T^2, so its gradient does not shrink as T grows (Hinton et al.). Every pixel counts,
    ignore pixels included: the soft target is defined where the hard pseudo-mask is not.

    Args:
        mask_logits: (B, K+1, H, W) student logits.
        teacher_probs: (B, K+1, H, W) teacher class probabilities (rows sum to 1).
        weights: (B,) per-image weights (e.g. 0 for images a person labelled); the loss is their weighted mean.
    """
    t = temperature
    log_student = F.log_softmax(mask_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_probs.float().clamp_min(1e-8).log() / t, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1).mean(dim=(1, 2))  # (B,)
    if weights is None:
        return kl.mean() * t * t
    w = weights.float()
    return (kl * w).sum() / w.sum().clamp(min=1e-6) * t * t


def score_distillation(
    cls_logits: torch.Tensor, teacher_scores: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sample-level distillation: BCE of the classification head toward the DFC's sample probabilities (B, K),
    as the ``weights`` (B,)-weighted mean over images when given."""
    bce = F.binary_cross_entropy_with_logits(cls_logits.float(), teacher_scores.float(), reduction="none").mean(1)
    if weights is None:
        return bce.mean()
    w = weights.float()
    return (bce * w).sum() / w.sum().clamp(min=1e-6)
