"""Two tiny stages used to test the stage runner without any model: ``toy-a`` -> ``toy-b``.

``toy-a`` writes ``a.txt`` from ``prepare.split.seed``; with ``TOY_HANG=1`` it first writes a checkpoint and a
``started`` marker, then sleeps (so a test can SIGKILL it mid-stage). It records whether it found the
checkpoint of an earlier attempt (resume). ``toy-b`` reads ``a.txt`` and adds ``evaluate.score_threshold``.
Importing this module registers both stages; run the CLI with ``python -c "import toy_stages; ..."``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from wsss.stages import STAGES, Stage, register_stage


def run_a(cfg, inputs, out: Path):
    resumed = (out / "checkpoint.txt").exists()
    (out / "checkpoint.txt").write_text("epoch 1")
    if os.environ.get("TOY_HANG") == "1":
        (out / "started").write_text("x")
        time.sleep(600)
    if os.environ.get("TOY_FAIL") == "1":
        raise RuntimeError("toy failure")
    (out / "a.txt").write_text(f"seed={cfg.prepare.split.seed} resumed={resumed}")
    (out / "checkpoint.txt").unlink()
    return {"a": out / "a.txt"}


def run_b(cfg, inputs, out: Path):
    a = (inputs["toy-a"] / "a.txt").read_text().split()[0]
    (out / "b.txt").write_text(f"{a} thr={cfg.evaluate.score_threshold}")
    return {"b": out / "b.txt"}


if "toy-a" not in STAGES:
    register_stage(Stage(name="toy-a", run=run_a, sections=("prepare",), help="toy stage a"))
    register_stage(
        Stage(name="toy-b", run=run_b, sections=("evaluate",), help="toy stage b", inputs=lambda cfg: ("toy-a",))
    )


def run_oracle(cfg, inputs, out: Path):
    """A test-only mask writer: copies the ground truth (TOY_EMPTY=1: writes empty masks) with scores."""
    import cv2
    import numpy as np

    from wsss.data.images import read_mask
    from wsss.data.index import read_dataset_info, read_eval_index

    index = inputs["prepare"] / "index.csv"
    threshold = read_dataset_info(index).mask_threshold
    (out / "masks").mkdir()
    lines = ["id,score"]
    for row in read_eval_index(index):
        gt = read_mask(row.mask, threshold)
        mask = np.zeros(gt.shape, np.uint8) if os.environ.get("TOY_EMPTY") == "1" else gt.astype(np.uint8)
        cv2.imwrite(str(out / "masks" / f"{row.id}.png"), mask)
        lines.append(f"{row.id},{0.9 if row.defective else 0.1}")
    (out / "scores.csv").write_text("\n".join(lines) + "\n")
    return {"masks": out / "masks", "scores": out / "scores.csv"}


if "toy-oracle" not in STAGES:
    register_stage(
        Stage(
            name="toy-oracle",
            run=run_oracle,
            sections=("dataset",),
            help="test-only mask writer",
            inputs=lambda cfg: ("prepare",),
            writes_masks=True,
        )
    )
