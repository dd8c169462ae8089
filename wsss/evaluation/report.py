"""The evaluation report: what :func:`wsss.evaluation.evaluate_masks` returns, and how it is written.

``report.json`` holds every number (undefined values as ``null``), ``report.md`` the same as readable tables
(undefined values as ``n/a``, rates as percentages), ``per_image.csv`` one row per evaluated image.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsss.atomic import atomic_write_text

WORST_SHOWN = 10  # report.md lists this many defective images with the lowest IoU
REPORT_FILES = ("report.json", "report.md", "per_image.csv")  # what write_report writes


@dataclass(frozen=True)
class ImageResult:
    """One image: its label, sample score and decision, and its gated mask against the ground truth.

    ``iou``/``gt_area`` are None when the image is labelled defective but has no ground-truth mask (it then
    counts in the image-level metrics only). ``iou`` is 1.0 for an empty prediction on an empty ground truth.
    """

    id: str
    labels: tuple[str, ...]
    score: float
    decision: bool  # True = called defective (score >= threshold)
    iou: float | None
    gt_area: int | None
    pred_area: int  # after gating by the decision

    @property
    def defective(self) -> bool:
        return bool(self.labels)


@dataclass(frozen=True)
class ClassResult:
    """Per-class segmentation over images labelled with the class whose ground-truth mask is non-empty.

    Ground-truth masks are binary, so ``miou`` and ``seg_recall_0_5`` compare "any defect class" predictions
    with them. ``class_agreement`` is the share of those images' predicted defect pixels whose value is this
    class's index (value k = ``classes[k - 1]``): nan when nothing was predicted, or when the masks name no class
    (a binary run's one ``defect`` value over a dataset of several classes).
    """

    name: str
    n_images: int
    miou: float
    seg_recall_0_5: float
    class_agreement: float


@dataclass
class EvalReport:
    """METHOD.md section 8 metrics of one masks folder; nan = undefined (see :mod:`wsss.evaluation.metrics`)."""

    masks_dir: str
    score_source: str  # "scores" (a scores file) or "masks" (1.0 if the predicted mask is non-empty, else 0.0)
    ignore_as: str  # how predicted 255 (ignore) pixels counted: "background" or "defect"
    threshold: float
    n_images: int  # all evaluated images (image-level metrics)
    n_defective: int  # labelled defective
    n_no_gt: int  # labelled defective without a ground-truth mask: excluded from pixel metrics
    n_seg_images: int  # images in the pixel metrics
    n_gt_defective: int  # of those, with a non-empty ground-truth mask (mIoU_def, Seg_Recall)
    ap: float
    auroc: float
    accuracy: float
    fpr: float
    fnr: float
    tp: int
    fp: int
    tn: int
    fn: int
    miou_def: float
    pooled_iou: float
    seg_miou: float
    seg_recall_0_1: float
    seg_recall_0_5: float
    pixel_ap: float | None = None  # AP_loc of the ungated probability maps; None without them (--probs)
    pixel_auroc: float | None = None  # of the same maps; None without them
    probs_dir: str | None = None  # the probability maps' folder, if any
    mask_format: str = "labels"  # how the folder's values were read (wsss.mask_format): labels, binary, labelmap
    mask_note: str = ""  # one line when a foreign folder's meaning was inferred from its values
    per_class: list[ClassResult] = field(default_factory=list)
    images: list[ImageResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Every number as JSON-safe data (nan -> None). Per-image rows are left to ``per_image.csv``."""
        d = {k: v for k, v in asdict(self).items() if k not in ("images", "per_class")}
        d["seg_recall@0.1"] = d.pop("seg_recall_0_1")
        d["seg_recall@0.5"] = d.pop("seg_recall_0_5")
        d["per_class"] = [asdict(c) for c in self.per_class]
        for c in d["per_class"]:
            c["seg_recall@0.5"] = c.pop("seg_recall_0_5")
        return _json_safe(d)

    def to_markdown(self) -> str:
        """Readable tables: image-level, segmentation, per class (several classes only), worst images."""
        c = self
        lines = [
            "# Evaluation report",
            "",
            f"Masks: `{c.masks_dir}`. Images: {c.n_images} ({c.n_defective} labelled defective, {c.n_no_gt} of them "
            f"without ground truth). Sample score from {c.score_source}, threshold {c.threshold:g}; "
            f"ignore pixels counted as {c.ignore_as}. Mask values read as {c.mask_format}.",
            *(["", f"Note: {c.mask_note}."] if c.mask_note else []),
            *(
                ["", f"Pixel AP and AUROC: of the ungated defect-probability maps in `{c.probs_dir}`."]
                if c.probs_dir is not None
                else []
            ),
            "",
            "## Image level",
            "",
            "| metric | value |",
            "|---|---|",
            f"| AP | {pct(c.ap)} |",
            f"| AUROC | {pct(c.auroc)} |",
            f"| accuracy | {pct(c.accuracy)} |",
            f"| FPR | {pct(c.fpr)} |",
            f"| FNR | {pct(c.fnr)} |",
            f"| TP / FP / TN / FN | {c.tp} / {c.fp} / {c.tn} / {c.fn} |",
            "",
            "## Segmentation",
            "",
            f"{c.n_seg_images} images with ground truth, {c.n_gt_defective} with a non-empty ground-truth mask.",
            "",
            "| metric | value |",
            "|---|---|",
            f"| mIoU_def | {pct(c.miou_def)} |",
            f"| pooled IoU | {pct(c.pooled_iou)} |",
            f"| Seg_mIoU | {pct(c.seg_miou)} |",
            f"| Seg_Recall@0.1 | {pct(c.seg_recall_0_1)} |",
            f"| Seg_Recall@0.5 | {pct(c.seg_recall_0_5)} |",
            f"| pixel AP | {pct(c.pixel_ap)} |",
            f"| pixel AUROC | {pct(c.pixel_auroc)} |",
        ]
        if len(c.per_class) > 1:
            lines += [
                "",
                "## Per class",
                "",
                "| class | images | mIoU | Seg_Recall@0.5 | class agreement |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {k.name} | {k.n_images} | {pct(k.miou)} | {pct(k.seg_recall_0_5)} | {pct(k.class_agreement)} |"
                for k in c.per_class
            ]
        worst = sorted((r for r in c.images if r.iou is not None and r.gt_area), key=lambda r: (r.iou, r.id))
        if worst:
            lines += [
                "",
                f"## Lowest IoU (defective images, up to {WORST_SHOWN})",
                "",
                "| id | IoU | score | gt area | pred area |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {r.id} | {pct(r.iou)} | {r.score:.4g} | {r.gt_area} | {r.pred_area} |" for r in worst[:WORST_SHOWN]
            ]
        return "\n".join(lines) + "\n"

    def per_image_csv(self) -> str:
        """``per_image.csv`` text: id, label, classes, score, decision, iou, gt_area, pred_area."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "label", "classes", "score", "decision", "iou", "gt_area", "pred_area"])
        for r in self.images:
            w.writerow(
                [
                    r.id,
                    "defect" if r.defective else "ok",
                    ";".join(r.labels),
                    f"{r.score:.6g}",
                    "defect" if r.decision else "ok",
                    "" if r.iou is None else f"{r.iou:.6f}",
                    "" if r.gt_area is None else r.gt_area,
                    r.pred_area,
                ]
            )
        return buf.getvalue()


def pct(x: float | None) -> str:
    """``0.41734`` -> ``41.73%``; None or nan -> ``n/a``."""
    if x is None or math.isnan(x):
        return "n/a"
    return f"{100.0 * x:.2f}%"


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``per_image.csv`` into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {
        "report.json": json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n",
        "report.md": report.to_markdown(),
        "per_image.csv": report.per_image_csv(),
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = out_dir / name
        atomic_write_text(paths[name], text)
    return paths
