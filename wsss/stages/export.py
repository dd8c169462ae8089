"""`export`: the review package of a run's masks (:mod:`wsss.export.review`): overlays, ``index.html``, and the
annotation tools' import files (``export.formats``). The masks are ``export.masks``'s, by default the pipeline's
last mask-writing stage before this one; the summary table comes from `evaluate` when it ran before."""

from __future__ import annotations

from pathlib import Path

import click

from wsss.config.pipelines import load_pipeline
from wsss.config.tree import Config
from wsss.export.review import ReviewSource, build_review, review_classes
from wsss.progress import progress
from wsss.stages import Stage, mask_source, published, register_stage


def masks_input(cfg: Config) -> str:
    return mask_source(cfg, "export", cfg.export.masks, "export.masks")


def _inputs(cfg: Config) -> tuple[str, ...]:

    stages = load_pipeline(cfg.run.pipeline).stages
    before = stages[: stages.index("export")] if "export" in stages else stages
    names = ["prepare", masks_input(cfg)] + [s for s in ("cam", "evaluate") if s in before]
    return tuple(dict.fromkeys(names))


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:

    report = inputs["evaluate"] / "report.json" if "evaluate" in inputs else None
    src = ReviewSource(
        index=inputs["prepare"] / "index.csv",
        masks_stage=inputs[masks_input(cfg)],
        cam_stage=inputs.get("cam"),
        report=report,
        classes=review_classes(inputs["cam"].parent if "cam" in inputs else inputs["prepare"].parent),
    )
    written = build_review(src, out, cfg.export, progress)
    click.echo(f"export: review package of {src.masks_stage.name} masks; open {published(out) / 'index.html'}")
    return {name: Path(p) for name, p in written.items()}


STAGE = register_stage(
    Stage(
        name="export",
        run=run,
        sections=("export",),
        inputs=_inputs,
        help="review package: overlays, index.html, masks/, coco.json, cvat.zip, labelstudio.json",
    )
)
