"""Benchmark: a trained segmenter's inference settings (flipped views, the guided upsampling radius, the gate) on
finished runs, without training anything.

For every run and ``--setting``, the run's segmenter (its ``train-segmenter``, or ``--stage retrain``) predicts the
split's images as the stage does (:func:`wsss.inference.segment_rows`) into ``OUT/<run>/<setting>/``, which is
scored as `bench/recipe.py` scores a stage (:func:`wsss.evaluation.evaluate_stage`): mIoU_def, Seg_mIoU, image AP,
pixel AP, and the images per second of that prediction, per run and as the mean over the runs. Settings are
``NAME:KEY=VALUE[,KEY=VALUE]`` with keys ``flips`` (true / false), ``guided_radius`` and ``threshold``; a bare
``NAME:`` is the model as recorded. The settings of one run are measured one after another in this process, so
their speeds compare (each run's first setting also warms the caches). Ground-truth masks are read by the scoring
only. Choose on ``val``; ``test`` is for reporting.

    python bench/inference_sweep.py OUT/fold0-s0 OUT/fold1-s0 --out OUT/flips --split val \\
        --setting recorded: --setting flips:flips=true
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from recipe import pct, report_metrics  # noqa: E402  (bench/ is not a package)

KEYS = {"flips": lambda v: {"true": True, "false": False}[v.lower()], "guided_radius": float, "threshold": float}


def parse_setting(text: str) -> tuple[str, dict[str, object]]:
    """``NAME:KEY=VALUE,...`` -> (NAME, {key: value}) for :func:`wsss.inference.load_predictor`."""
    name, _, rest = text.partition(":")
    if not name:
        raise SystemExit(f"--setting {text!r}: give it a name, NAME:KEY=VALUE,... (e.g. flips:flips=true)")
    values: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"--setting {text!r}: unknown key {key!r}; use {', '.join(KEYS)}")
        try:
            values[key] = KEYS[key](value)
        except (KeyError, ValueError):
            raise SystemExit(f"--setting {text!r}: {key}={value!r} is not a valid value") from None
    return name, values


def measure(run: Path, stage: str, split: str, name: str, values: dict[str, object], out: Path) -> dict[str, float]:
    """The split's metrics of the run's segmenter predicting with ``values``, and its images per second."""
    from wsss.config import load_config
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import evaluate_stage
    from wsss.inference import load_predictor, segment_rows

    cfg = load_config(run / "prepare" / "config.yaml", [])
    index = run / "prepare" / "index.csv"
    rows, info = read_eval_index(index, split=split), read_dataset_info(index)
    predictor = load_predictor(
        run / stage,
        "cpu",
        score_threshold=values.get("threshold"),  # type: ignore[arg-type]
        guided_radius=values.get("guided_radius"),  # type: ignore[arg-type]
        flips=values.get("flips"),  # type: ignore[arg-type]
    )
    folder = out / run.name / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    section = cfg.segmenter if stage == "train-segmenter" else cfg.retrain
    speed = segment_rows(predictor, rows, folder, predictor.classes, section.batch_size, cfg.dataset.high_bit_depth)
    return report_metrics(evaluate_stage(rows, info, folder, cfg.evaluate)) | {"img/s": speed}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders with a finished segmenter")
    p.add_argument("--out", type=Path, required=True, help="where each setting's predictions go")
    p.add_argument("--setting", action="append", required=True, help="NAME:KEY=VALUE[,KEY=VALUE] (repeatable)")
    p.add_argument("--split", default="val", choices=["val", "test"], help="choose on val; test only to report")
    p.add_argument("--stage", default="train-segmenter", choices=["train-segmenter", "retrain"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0 = the environment's)")
    args = p.parse_args(argv)
    settings = [parse_setting(s) for s in args.setting]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table: dict[str, list[dict[str, float]]] = {name: [] for name, _ in settings}
    cols = ("miou_def", "seg_miou", "ap", "pixel_ap", "img/s")
    print(f"| run | setting | {' | '.join(cols)} |\n|---|---|" + "---|" * len(cols))
    for run in args.runs:
        for name, values in settings:
            m = measure(run.resolve(), args.stage, args.split, name, values, args.out.resolve())
            table[name].append(m)
            cells = " | ".join(f"{m[c]:.1f}" if c == "img/s" else pct(m[c]) for c in cols)
            print(f"| {run.name} | {name} | {cells} |", flush=True)
    if len(args.runs) > 1:
        for name, rows in table.items():
            means = [np.mean([r[c] for r in rows]) for c in cols]
            cells = " | ".join(f"{v:.1f}" if c == "img/s" else pct(v) for c, v in zip(cols, means, strict=True))
            print(f"| mean of {len(rows)} | {name} | {cells} |")


if __name__ == "__main__":
    main()
