"""Benchmark: what could choose the segmenter's epoch, scored epoch by epoch against the ground truth.

The `train-segmenter` stage keeps the epoch whose validation Seg_mIoU against the validation images' *pseudo-masks*
is highest. This trains the stage's segmenter (its first round, as `wsss run` does) on a finished run and, after
every epoch, segments the validation and test images with that epoch's weights (their moving average with
``segmenter.ema_epochs``) as the stage would, then prints per epoch what each candidate judge sees (nothing but the
pseudo-masks and the image labels) beside the ground truth:

- ``pseudo``: the stage's own judge, validation Seg_mIoU against the pseudo-masks;
- ``img AP``: the segmenter's image score ranked against the validation images' labels;
- ``calls``: how well its gated masks sort the validation images: the mean of the share of defective images that
  get a mask and the share of OK images that stay empty (balanced accuracy, labels only);
- ``OK px``: the mean defect area the masks put on OK validation images (lower is better, labels only);
- the validation and test mIoU_def against the ground truth (what a judge should follow; test for the report only).

Then which epoch each judge keeps (of tied epochs the earliest), and ``last``, with the validation and test figures
each would give. Ground truth is read only here, for scoring.

    python bench/segmenter_epochs.py --config configs/ksdd.yaml --run OUT/fold0-s0 --out OUT/epochs0
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="the recipe the run was made with")
    p.add_argument("--run", type=Path, required=True, help="a run folder whose mask stages are finished")
    p.add_argument("--out", type=Path, required=True, help="scratch folder (each epoch's masks, the table)")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE overrides of the recipe (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from wsss.artifacts.scores import SCORES_FILE, read_class_scores
    from wsss.config import load_config
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import evaluate_stage
    from wsss.evaluation.metrics import average_precision
    from wsss.inference import segment_rows, torch_predictor
    from wsss.mask_format import read_mask_png
    from wsss.runs import Run
    from wsss.stages import get_stage
    from wsss.stages.train_segmenter import Distillation, masks_input

    run = Run(args.run, load_config(args.config, args.set), echo=lambda *_: None)
    cfg = run.cfg  # `auto` sizes resolved from the run's prepare, as the stage sees them
    d = Distillation(cfg, run.inputs_of(get_stage("train-segmenter")))
    t = d.trainer(1, d.inputs[masks_input(cfg)] / "masks", args.out / "model")
    meta = t.meta()
    index = args.run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    evals = {split: read_eval_index(index, split=split) for split in ("val", "test")}
    val_rows = d.val_rows
    scored = val_rows + [r for r in d.rows if r.split == "test"]
    labels = {r.id: bool(r.labels) for r in val_rows}
    rows = []
    for epoch in range(t.epochs):
        t0 = time.perf_counter()
        row = t.train_epoch(epoch) | t.validate()
        folder = args.out / f"epoch{epoch + 1}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        # what the stage validates and keeps: the weights, or their moving average (segmenter.ema_epochs)
        predictor = torch_predictor(copy.deepcopy(t.kept).eval(), meta, d.device)
        segment_rows(predictor, scored, folder, d.classes, cfg.segmenter.batch_size, cfg.dataset.high_bit_depth)
        scores = read_class_scores(folder / SCORES_FILE, d.classes)
        y = np.array([labels[r.id] for r in val_rows])
        s = np.array([float(np.max(scores[r.id])) for r in val_rows])
        area = {r.id: float(np.mean(read_mask_png(folder / "masks" / f"{r.id}.png") > 0)) for r in val_rows}
        got = np.array([area[r.id] > 0 for r in val_rows])
        gt = {split: evaluate_stage(rs, info, folder, cfg.evaluate).miou_def for split, rs in evals.items()}
        rows.append(
            {
                "epoch": epoch + 1,
                "pseudo": row["val_seg_miou"],
                "img AP": average_precision(y, s),
                "calls": (got[y].mean() + (~got[~y]).mean()) / 2,
                "OK px": float(np.mean([area[r.id] for r in val_rows if not labels[r.id]])),
                "val GT": gt["val"],
                "test GT": gt["test"],
                "seconds": time.perf_counter() - t0,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(folder / "probs", ignore_errors=True)
    (args.out / "epochs.json").write_text(json.dumps(rows, indent=1))
    print(f"{args.config}, run {args.run}, {args.threads} thread(s)")
    print("| epoch | pseudo | img AP | calls | OK px | val mIoU_def | test mIoU_def |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['epoch']} | {r['pseudo']:.4f} | {r['img AP']:.4f} | {r['calls']:.4f} | {r['OK px']:.5f} | "
            f"{100 * r['val GT']:.2f}% | {100 * r['test GT']:.2f}% |"
        )
    judges = {"pseudo": 1, "img AP": 1, "calls": 1, "OK px": -1}
    print("| judge | epoch kept | val mIoU_def | test mIoU_def |")
    print("|---|---|---|---|")
    for name, sign in judges.items():
        best = max(rows, key=lambda r: (sign * r[name], -r["epoch"]))
        print(f"| {name} | {best['epoch']} | {100 * best['val GT']:.2f}% | {100 * best['test GT']:.2f}% |")
    last = rows[-1]
    print(f"| last | {last['epoch']} | {100 * last['val GT']:.2f}% | {100 * last['test GT']:.2f}% |")


if __name__ == "__main__":
    main()
