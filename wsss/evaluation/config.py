"""The `evaluate` section: which masks and scores a run's `evaluate` stage scores, on which split, and how.

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsss.fields import PROBABILITY, choices, num


@dataclass
class EvaluateConfig:
    """`evaluate`: METHOD.md section 8 metrics of a masks folder against ground truth."""

    masks: str = ""  # stage whose masks/ folder to evaluate; empty = the pipeline's last mask-writing stage
    scores: str = ""  # stage whose scores.csv gives sample scores; empty = the masks stage's own, if any
    split: str = choices("test", "val", "train", "all", default="test")
    # sample decision: defective iff score >= threshold
    score_threshold: float = num(0.5, ge=0, le=1, fix=PROBABILITY)
    ignore_as: str = choices("background", "defect", default="background")  # how 255 (ignore) pixels count
    # what the masks' values mean: auto = the folder's labelmap.txt, else a wsss stage's masks are labels (255 =
    # ignore), else decided from the values (0/255 only on a one-class dataset = binary); see wsss/mask_format.py
    mask_format: str = choices("auto", "labels", "binary", default="auto")
