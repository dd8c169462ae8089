"""`evaluate`: METHOD.md section 8 metrics of a mask-writing stage's ``masks/`` against the ground truth.

The only stage that reads ground-truth masks. Which masks: ``evaluate.masks`` names the stage, or by default the
last mask-writing stage of the configured pipeline. Sample scores for gating and image AP come from that stage's
``scores.csv`` (or the stage named by ``evaluate.scores``); without one, an image's score is 1 if its predicted
mask is non-empty, else 0. When that stage also wrote ``probs/`` (soft defect-probability maps, as `train-segmenter`
does), pixel AP and pixel AUROC are computed from them; `wsss evaluate` takes such a folder as ``--probs``.

The stage writes ``report.json``, ``report.md`` and ``per_image.csv`` into ``runs/<name>/evaluate/``. `wsss evaluate`
writes the same three files into ``--out``, by default beside what it evaluates and never into a stage folder (a
finished stage's folder is its recorded output): ``runs/<name>/evaluate-<stage>/`` for the masks of a stage
(``runs/<name>/<stage>/masks``), ``evaluate-<folder>/`` beside any other masks folder.
"""

from __future__ import annotations

from pathlib import Path

import click

from wsss.artifacts.scores import read_scores
from wsss.config.tree import Config
from wsss.data.index import read_dataset_info, read_eval_index
from wsss.errors import ConfigError
from wsss.evaluation import evaluate_masks, write_report
from wsss.evaluation.config import EvaluateConfig
from wsss.evaluation.report import pct
from wsss.hashing import read_manifest
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


def stage_folder(path: Path) -> Path | None:
    """The run stage folder that ``path`` is or lies in (a folder whose ``manifest.json`` names its stage), if any."""

    path = Path(path).resolve()
    for folder in (path, *path.parents):
        manifest = read_manifest(folder)
        if isinstance(manifest, dict) and "stage" in manifest:
            return folder
    return None


def report_dir(masks_dir: Path, out: Path | None) -> Path:
    """Where `wsss evaluate` writes its report: ``out``, else ``evaluate-<stage>`` beside the stage folder holding
    ``masks_dir``, else ``evaluate-<folder>`` beside ``masks_dir``. Never inside a stage folder: writing there would
    change a finished stage's outputs."""
    masks_dir = Path(masks_dir).resolve()
    stage = stage_folder(masks_dir)
    default = (stage or masks_dir).parent / f"evaluate-{(stage or masks_dir).name}"
    if out is None:
        return default
    inside = stage_folder(out)
    if inside is not None:
        raise ConfigError(
            f"--out {out}",
            f"lies in the stage folder {inside}, whose files are that stage's recorded outputs",
            f"choose a folder outside the run's stage folders, or leave --out out to write into {default}",
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}", "exists and is not a folder", "choose another --out folder")
    return out


def evaluate_index(
    index_csv: Path,
    masks_dir: Path,
    scores_csv: Path | None,
    cfg: EvaluateConfig,
    out: Path,
    probs_dir: Path | None = None,
):
    """Evaluate ``masks_dir`` (and the probability maps of ``probs_dir``) against the index's ground truth and
    write the report files into ``out``."""

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
    report = evaluate_masks(rows, read_dataset_info(index_csv), Path(masks_dir), scores, cfg, probs_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_report(report, out)
    return report


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:
    masks_dir = inputs[masks_stage(cfg)]
    probs_dir = masks_dir / "probs"
    scores_csv = (inputs[cfg.evaluate.scores] if cfg.evaluate.scores else masks_dir) / "scores.csv"
    report = evaluate_index(
        inputs["prepare"] / "index.csv",
        masks_dir / "masks",
        scores_csv if scores_csv.is_file() else None,
        cfg.evaluate,
        out,
        probs_dir if probs_dir.is_dir() else None,
    )
    pixel = f", pixel AP {pct(report.pixel_ap)}" if report.pixel_ap is not None else ""
    click.echo(
        f"evaluate: mIoU_def {pct(report.miou_def)}, image AP {pct(report.ap)}{pixel} ({published(out) / 'report.md'})"
    )
    return {"report": out / "report.json", "summary": out / "report.md", "per_image": out / "per_image.csv"}


STAGE = register_stage(
    Stage(
        name="evaluate",
        run=run,
        sections=("evaluate",),
        inputs=_inputs,
        help="score a stage's masks against ground truth (image AP/AUROC, mIoU_def, Seg_mIoU, Seg_Recall, pixel AP)",
    )
)
