"""Losses of the Defect Focus Classifier (METHOD.md section 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


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
