"""`evaluate`: METHOD.md section 8 metrics of a mask-writing stage's ``masks/`` against the ground truth.

The only stage that reads ground-truth masks. Which masks: ``evaluate.masks`` names the stage, or by default the
last mask-writing stage of the configured pipeline. Sample scores for gating and image AP come from that stage's
``scores.csv`` (or the stage named by ``evaluate.scores``); without one, an image's score is 1 if its predicted
mask is non-empty, else 0.
"""

from __future__ import annotations

from pathlib import Path

import click

from wsss.config import Config, EvaluateConfig
from wsss.errors import ConfigError
from wsss.eval_report import pct
from wsss.stages import Stage, mask_source, published, register_stage


def masks_stage(cfg: Config) -> str:
    """The stage whose masks are evaluated (``evaluate.masks``, else the pipeline's last mask writer before it)."""
    try:
        return mask_source(cfg, "evaluate", cfg.evaluate.masks, "evaluate.masks")
    except ConfigError as e:
        raise ConfigError(e.where, e.what, f"{e.fix}, or use `wsss evaluate --masks DIR`") from None


def _inputs(cfg: Config) -> tuple[str, ...]:
    names = ["prepare", masks_stage(cfg)]
    if cfg.evaluate.scores and cfg.evaluate.scores not in names:
        names.append(cfg.evaluate.scores)
    return tuple(names)


def evaluate_index(index_csv: Path, masks_dir: Path, scores_csv: Path | None, cfg: EvaluateConfig, out: Path):
    """Evaluate ``masks_dir`` against the index's ground truth and write the report files into ``out``."""
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import evaluate_masks, read_scores, write_report

    split = None if cfg.split == "all" else cfg.split
    rows = read_eval_index(index_csv, split=split)
    if not rows:
        raise ConfigError(
            "evaluate.split",
            f"no images in split {cfg.split!r} of {index_csv}",
            "choose a split that has images, or `all`",
        )
    if not Path(masks_dir).is_dir():
        raise ConfigError(masks_dir, "masks folder not found", "pass the folder holding <id>.png masks")
    scores = read_scores(scores_csv) if scores_csv is not None else None
    report = evaluate_masks(rows, read_dataset_info(index_csv), Path(masks_dir), scores, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_report(report, out)
    return report


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:
    masks_dir = inputs[masks_stage(cfg)]
    scores_csv = (inputs[cfg.evaluate.scores] if cfg.evaluate.scores else masks_dir) / "scores.csv"
    report = evaluate_index(
        inputs["prepare"] / "index.csv",
        masks_dir / "masks",
        scores_csv if scores_csv.is_file() else None,
        cfg.evaluate,
        out,
    )
    click.echo(f"evaluate: mIoU_def {pct(report.miou_def)}, image AP {pct(report.ap)} ({published(out) / 'report.md'})")
    return {"report": out / "report.json", "summary": out / "report.md", "per_image": out / "per_image.csv"}


STAGE = register_stage(
    Stage(
        name="evaluate",
        run=run,
        sections=("evaluate",),
        inputs=_inputs,
        reads="prepare, a mask-writing stage",
        help="score a stage's masks against ground truth (image AP/AUROC, mIoU_def, Seg_mIoU, Seg_Recall)",
    )
)
