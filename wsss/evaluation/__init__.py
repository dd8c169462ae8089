"""Evaluation (METHOD.md section 8): a folder of predicted masks (and probability maps) against the index's ground
truth. ``inputs.py`` reads and checks what is evaluated, ``metrics.py`` holds the metrics (plain numpy, streaming),
``evaluate.py`` computes a report and ``report.py`` says how it is written.
"""

from __future__ import annotations

from wsss.evaluation.evaluate import evaluate_masks, evaluate_stage
from wsss.evaluation.inputs import check_masks, prob_file, read_pred_mask, read_prob_map
from wsss.evaluation.report import REPORT_FILES, ClassResult, EvalReport, ImageResult, pct, write_report

__all__ = [
    "REPORT_FILES",
    "ClassResult",
    "EvalReport",
    "ImageResult",
    "check_masks",
    "evaluate_masks",
    "evaluate_stage",
    "pct",
    "prob_file",
    "read_pred_mask",
    "read_prob_map",
    "write_report",
]
