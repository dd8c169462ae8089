"""Guided cropping module (METHOD.md section 1).

Each training step, a defective image is cropped around its current CAM peak (window side ``crop_frac`` of the
image, centre jittered, clipped to the image) and an OK image at a random place with the same window size; the
crops are resized to the input size and trained with the same labels. The classifier so sees small defects
at a higher resolution and must find the defect itself, not its context.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align


def crop_boxes(
    defect_maps: torch.Tensor,
    defective: torch.Tensor,
    image_size: tuple[int, int],
    crop_frac: float,
    jitter: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop windows (B, 4) as x1, y1, x2, y2 in input pixels.

    ``defect_maps`` (B, h, w) are the current CAMs (detached); ``defective`` (B,) the image labels. Defective
    images are centred on the map's peak plus a uniform jitter of up to ``jitter`` crop sides; OK images on a
    uniformly random point. Windows are shifted (not shrunk) to lie inside the image.
    """
    b, h, w = defect_maps.shape
    height, width = image_size
    ch, cw = max(1.0, crop_frac * height), max(1.0, crop_frac * width)
    dev = defect_maps.device
    rand = torch.rand(b, 4, generator=generator).to(dev)
    peak = defect_maps.flatten(1).argmax(1)
    py = ((peak // w).float() + 0.5) * (height / h)
    px = ((peak % w).float() + 0.5) * (width / w)
    cy = torch.where(defective.bool(), py + (rand[:, 0] * 2 - 1) * jitter * ch, rand[:, 2] * height)
    cx = torch.where(defective.bool(), px + (rand[:, 1] * 2 - 1) * jitter * cw, rand[:, 3] * width)
    y1 = (cy - ch / 2).clamp(0, height - ch)
    x1 = (cx - cw / 2).clamp(0, width - cw)
    return torch.stack([x1, y1, x1 + cw, y1 + ch], dim=1)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Cut each window out of its image and resize it to the input size (bilinear, batched)."""
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    out = roi_align(
        images.float(), rois.float(), output_size=images.shape[-2:], spatial_scale=1.0, sampling_ratio=1, aligned=True
    )
    return out.to(images.dtype)
