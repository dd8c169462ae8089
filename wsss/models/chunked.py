"""Forward passes without gradients in CPU-sized chunks: the same outputs, several times faster on a CPU.

On a CPU a batch is computed layer by layer over all its images, so a large batch at a high resolution streams its
activations through main memory at every layer, while a chunk of one or two images keeps them in the caches. Measured
for the KSDD classifier (Lite0 cut at stride 16, 640 x 256, one thread): 24 views take 14.6 s in one forward pass,
7.5 s in chunks of 8, 4.9 s of 4, 3.1 s of 2 and 2.8 s of 1. In eval mode every image is computed on its own
(BatchNorm uses its running statistics), so chunking changes no output beyond float rounding. GPUs keep whole
batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

import torch

# input pixels per forward pass on a CPU: one 640 x 256 image (the CAM stage's pass on 32 KSDD images: 3.29x faster
# than one batch of 24 views, 2.87x with two images per chunk; bench/cam_speed.py)
CPU_PIXELS = 640 * 256

T = TypeVar("T")


def forward_chunked(fn: Callable[[torch.Tensor], T], x: torch.Tensor) -> T:
    """``fn(x)`` computed chunk by chunk along the batch on a CPU (whole on other devices). ``fn`` returns a tensor
    or a dataclass of tensors (batch first), concatenated back in order."""
    per = max(1, CPU_PIXELS // max(1, x.shape[-2] * x.shape[-1]))
    if x.device.type != "cpu" or len(x) <= per:
        return fn(x)
    outs = [fn(chunk) for chunk in x.split(per)]
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)  # type: ignore[return-value]
    return type(first)(**{f.name: torch.cat([getattr(o, f.name) for o in outs]) for f in dataclasses.fields(first)})
