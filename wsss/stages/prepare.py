"""`prepare`: find the images, validate every file, split, and write ``index.csv`` + a validation report.

``dataset.json`` also records the training images' sizes, from which the later stages' ``auto`` settings (input
sizes, CAM tiling, the CRF's reach) are resolved (:mod:`wsss.auto`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from wsss.atomic import atomic_write_text, write_json
from wsss.config.tree import Config
from wsss.data.base import DatasetAdapter, Sample, create_adapter
from wsss.data.index import SPLITS, DatasetInfo, EvalRow, write_dataset_info, write_index
from wsss.data.splits import assign_splits
from wsss.data.stats import SizeStats
from wsss.data.validate import validate_samples, warning_lines
from wsss.stages import Stage, register_stage


def make_adapter(cfg: Config, out: Path) -> DatasetAdapter:
    """The configured adapter; the synthetic demo set is generated into this stage's ``data/`` folder."""
    root = out / "data" if cfg.dataset.kind == "synthetic" else Path(cfg.dataset.root)
    return create_adapter(cfg.dataset, root)


def split_table(rows: list[EvalRow]) -> dict[str, dict[str, int]]:
    """Images and defective images per split."""
    table = {}
    for split in SPLITS:
        part = [r for r in rows if r.split == split]
        table[split] = {
            "images": len(part),
            "defective": sum(r.defective for r in part),
            "groups": len({r.group for r in part}),
        }
    return table


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Path]:

    adapter = make_adapter(cfg, out)
    samples: list[Sample] = adapter.scan()
    report = validate_samples(samples, adapter, workers=cfg.prepare.workers, max_megapixels=cfg.prepare.max_megapixels)
    for line in warning_lines(report.warnings):
        click.echo(f"prepare: {line}", err=True)
    assignment = assign_splits(samples, cfg.prepare.split, kind=cfg.dataset.kind)
    rows = [
        EvalRow(
            id=s.id,
            path=s.path,
            labels=s.labels,
            split=assignment[s.id].split,
            group=s.group,
            fold=assignment[s.id].fold,
            mask=s.mask,
        )
        for s in sorted(samples, key=lambda s: s.id)
    ]
    classes = tuple(sorted({lbl for s in samples for lbl in s.labels}))
    info = DatasetInfo(
        kind=cfg.dataset.kind,
        classes=classes,
        mask_threshold=adapter.threshold(),
        channels=report.channels,
        sizes=SizeStats.of_train((r.split, report.sizes[r.id]) for r in rows),
    )
    write_index(out / "index.csv", rows, relative_to=out)
    write_dataset_info(out / "dataset.json", info)

    splits = split_table(rows)
    data = {
        "dataset": info.to_json(),
        "validation": report.to_json(),
        "splits": splits,
        "labels": dict(Counter(";".join(r.labels) or "ok" for r in rows)),
    }
    write_json(out / "report.json", data)
    lines = [report.to_markdown(), "", "## Splits", "", "| split | images | defective | groups |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['images']} | {v['defective']} | {v['groups']} |" for k, v in splits.items()]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return {"index": out / "index.csv", "dataset": out / "dataset.json", "report": out / "report.md"}


def _external(cfg: Config) -> list[Path]:
    return [] if cfg.dataset.kind == "synthetic" else [Path(cfg.dataset.root)]


STAGE = register_stage(
    Stage(
        name="prepare",
        run=run,
        sections=("dataset", "prepare"),
        external=_external,
        help="index the dataset, validate every image and mask, make grouped stratified splits",
    )
)
