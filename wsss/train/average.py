"""An exponential moving average of a model's weights: what a trainer validates and saves instead of the raw weights.

The raw weights at the end of an epoch carry the last few hundred steps' noise; with a handful of defective validation
images, which epoch happens to score best is then a draw (KSDD fold 0: 5 images, 7 points of test mIoU_def between two
runs that differ only in thread count). The average over the last ``horizon`` steps moves slowly, so neighbouring
epochs agree and the kept weights depend less on the seed. BatchNorm's running statistics are averaged with the
weights (integer buffers are copied), as timm's ``ModelEmaV3`` does.

The decay is ``min(1 - 1 / horizon, 1 - 1 / t)`` at step ``t``: the plain mean of the weights seen so far until ``t``
reaches ``horizon``, the exponential average after, so the first steps' weights do not linger and no warm-up
constant is needed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class WeightAverage:
    """``module``: a frozen copy of ``model`` holding the average; :meth:`update` after each optimiser step."""

    def __init__(self, model: torch.nn.Module, horizon: float):
        if horizon < 1:
            raise ValueError(f"horizon must be at least one step, got {horizon}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.horizon, self.updates = float(horizon), 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold ``model``'s current weights and buffers into the average."""
        self.updates += 1
        decay = min(1.0 - 1.0 / self.horizon, 1.0 - 1.0 / self.updates)
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            new = current[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(new.to(avg.dtype), 1.0 - decay)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
