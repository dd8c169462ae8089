"""Benchmark: the ceiling ladder: where the mask IoU is lost between the CAM and the distilled segmenter.

On finished recipe runs (``bench/recipe.py``'s ``OUT/fold<k>``), for the defective images of each split asked for
(validation, to choose; test, to report), mIoU_def (METHOD.md 8) of:

1. ``CAM, oracle threshold``: the stored (extended, gated) CAM thresholded at the best fraction of *its own* peak for
   each image (:data:`FRACTIONS`): what the CAM holds at best, before any refinement;
2. ``CAM + CRF, oracle setting``: the pseudo-labelling rule (``wsss.refine.pseudo.label_image``) with the run's CRF,
   at the best ``pseudo.bg_prior`` x ``pseudo.crf.bilateral_compat`` of :data:`CRF_GRID` for each image;
3. each mask-writing stage as the recipe ran it (``pseudo-labels``, ``retrain``, ``train-segmenter``), with the
   number of defective images called defective whose mask is empty (lost to the refinement, not to the decision);
4. with ``--gt-segmenter``: the segmenter trained on the ground-truth masks of the *training* split (imported with
   ``wsss import-review --format png`` and used through ``segmenter.reviewed``, everything else as the recipe): the
   ceiling of the segmenter's architecture at the recipe's resolution, which no pseudo-mask can teach past;
5. the retrain round's masks (the segmenter's teacher) area-downsampled to the segmenter's input size and back: the
   best copy of its teacher a segmenter at that resolution can make;
6. each segmenter's own probability map (``probs/``, defect where p >= 0.5) gated by the classifier's decision
   instead of its own image head, and ungated: how much its gate costs.

Ground-truth masks are read here and by evaluation only: the ladder's oracles (1, 2) and the ground-truth segmenter
(4) are measurements of what the method could reach, never settings it uses.

    python bench/ceiling.py /tmp/bench/ksdd/fold0 /tmp/bench/ksdd/fold1 /tmp/bench/ksdd/fold2 --config configs/ksdd.yaml
    python bench/ceiling.py /tmp/bench/ksdd/fold0 --config configs/ksdd.yaml --gt-segmenter --out /tmp/bench/ceiling
    python bench/ceiling.py OUT/run --config configs/mtd.yaml --gt-segmenter --gt-set segmenter.epochs=12 \
        --gt-set segmenter.patience=12 --gt-set "segmenter.input_size=[512,512]" --gt-set "segmenter.crop=[256,256]"

Rows go to stdout as a markdown table (mean over the runs given, and per run) and to ``OUT/ceiling.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FRACTIONS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95 of the CAM's peak
CRF_GRID = {"bg_prior": (0.2, 0.3, 0.4, 0.5, 0.6), "bilateral_compat": (10.0, 40.0)}
STAGES = ("pseudo-labels", "retrain", "train-segmenter")
IGNORE = 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="finished recipe runs (bench/recipe.py's OUT/fold<k>)")
    p.add_argument("--config", type=Path, required=True, help="the recipe the runs ran, e.g. configs/ksdd.yaml")
    p.add_argument("--splits", default="val,test", help="splits to report (choose on val, report test)")
    p.add_argument("--no-crf", action="store_true", help="skip the CRF oracle (the slowest rung)")
    p.add_argument("--gt-segmenter", action="store_true", help="also train the segmenter on the training split's GT")
    p.add_argument(
        "--gt-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="train the GT segmenter with this override too (repeatable), e.g. segmenter.epochs=12",
    )
    p.add_argument("--out", type=Path, default=None, help="folder for ceiling.json and the GT-segmenter runs")
    return p.parse_args(argv)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    return np.count_nonzero(pred & gt) / union if union else 1.0


def defect_pixels(mask: np.ndarray) -> np.ndarray:
    return (mask > 0) & (mask != IGNORE)


def oracle_threshold(cam: np.ndarray, gt: np.ndarray) -> float:
    """The best IoU of the CAM (max over classes) thresholded at a fraction of its own peak."""
    m = cam.max(axis=0)
    peak = float(m.max())
    if peak <= 0:
        return 0.0
    return max(iou(m >= f * peak, gt) for f in FRACTIONS)


def oracle_crf(image: np.ndarray, cam: np.ndarray, gt: np.ndarray, pseudo, called: bool) -> float:
    """The best IoU of the pseudo-labelling rule over :data:`CRF_GRID` (the run's other settings kept)."""
    from wsss.refine.pseudo import label_image

    best = 0.0
    for bg in CRF_GRID["bg_prior"]:
        for compat in CRF_GRID["bilateral_compat"]:
            cfg = dataclasses.replace(pseudo, bg_prior=bg, crf=dataclasses.replace(pseudo.crf, bilateral_compat=compat))
            best = max(best, iou(defect_pixels(label_image(image, cam, cfg, called).mask), gt))
    return best


def through(mask: np.ndarray, size: list[int]) -> np.ndarray:
    """``mask`` area-downsampled to ``size`` (H, W) and upsampled back (bilinear, >= 0.5): what a network that sees
    the image at ``size`` can reproduce of it at best."""
    h, w = mask.shape
    small = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5


def stage_masks(run: Path, stage: str, ids: list[str], gts: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    folder = run / stage / "masks"
    if not folder.is_dir():
        return None
    out = {}
    for i in ids:
        m = cv2.imread(str(folder / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        if m is None or m.shape != gts[i].shape:
            raise SystemExit(f"{folder / f'{i}.png'}: missing or not the size of its ground truth")
        out[i] = defect_pixels(m)
    return out


def gt_segmenter(run: Path, config: Path, out: Path, overrides: list[str] | None = None) -> Path:
    """A copy of ``run`` whose segmenter learnt from the ground truth of every training image (with ``overrides``
    on top of the recipe: one copy per set of overrides); its folder."""
    from wsss.config import load_config
    from wsss.data.images import read_mask
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.mask_format import write_labelmap

    overrides = list(overrides or [])
    tag = "-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8] if overrides else ""
    copy = out / f"{run.name}-gt-segmenter{tag}"
    index = run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    if not (copy / "train-segmenter" / "manifest.json").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        for stage in ("prepare", "train-classifier", "cam", "pseudo-labels", "retrain"):
            if (run / stage).is_dir():
                shutil.copytree(run / stage, copy / stage)
        gt_dir = out / f"{run.name}-gt-masks"
        shutil.rmtree(gt_dir, ignore_errors=True)
        gt_dir.mkdir(parents=True)
        # the run's mask classes: one "defect" class for a binary classifier, else the dataset's
        binary = load_config(run / "pseudo-labels" / "config.yaml").classifier.binary
        classes = ("defect",) if binary else info.classes
        for r in read_eval_index(index):
            if r.split != "train" or r.mask is None:
                continue
            gt = read_mask(r.mask, threshold=info.mask_threshold)
            cls = 1 if binary else 1 + info.classes.index(r.labels[0]) if r.labels else 0  # one class an image
            cv2.imwrite(str(gt_dir / f"{r.id}.png"), (gt * cls).astype(np.uint8))
        write_labelmap(gt_dir, classes)
        wsss = [sys.executable, "-m", "wsss.cli"]
        subprocess.run([*wsss, "import-review", "--format", "png", str(gt_dir), "--run", str(copy)], check=True)
        fold = json.loads((run / "prepare" / "manifest.json").read_text())["config"]["prepare"]["split"]["fold"]
        sets = [f"prepare.split.fold={fold}", f"segmenter.reviewed={copy / 'reviewed'}", *overrides]
        cmd = [*wsss, "run-stage", "train-segmenter", "--config", str(config), "--run-dir", str(copy)]
        subprocess.run([*cmd, *sum((["--set", s] for s in sets), [])], check=True, cwd=ROOT)
    return copy


def ladder(run: Path, split: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from wsss.cam.gate import read_calls
    from wsss.cam.io import read_cam
    from wsss.config import load_config
    from wsss.data.images import read_image, read_mask
    from wsss.data.index import read_dataset_info, read_eval_index
    from wsss.evaluation import read_prob_map
    from wsss.evaluation.metrics import PROB_HALF

    index = run / "prepare" / "index.csv"
    info = read_dataset_info(index)
    rows = [r for r in read_eval_index(index) if r.split == split and r.labels and r.mask is not None]
    gts = {r.id: read_mask(r.mask, threshold=info.mask_threshold) for r in rows}
    rows = [r for r in rows if gts[r.id].any()]
    ids = [r.id for r in rows]
    calls = read_calls(run / "cam")
    called = {i: calls[i] for i in ids}
    pseudo = load_config(run / "pseudo-labels" / "config.yaml").pseudo
    out: dict[str, dict[str, float]] = {}
    cams = {r.id: read_cam(run / "cam" / "cams" / f"{r.id}.npz", gts[r.id].shape) for r in rows}
    out["CAM, oracle threshold per image"] = {
        "miou_def": float(np.mean([oracle_threshold(cams[i], gts[i]) for i in ids]))
    }
    if not args.no_crf:
        vals = [oracle_crf(read_image(r.path), cams[r.id], gts[r.id], pseudo, called[r.id]) for r in rows]
        out["CAM + CRF, oracle setting per image"] = {"miou_def": float(np.mean(vals))}
    runs = [(s, run) for s in STAGES]
    if args.gt_segmenter:
        runs.append(
            (
                "train-segmenter on the training split's GT" + (f" ({', '.join(args.gt_set)})" if args.gt_set else ""),
                gt_segmenter(run, args.config, args.out or run.parent, args.gt_set),
            )
        )
    for name, folder in runs:
        stage = "train-segmenter" if name.startswith("train-segmenter") else name
        masks = stage_masks(folder, stage, ids, gts)
        if masks is None:
            continue
        out[f"{name}, as run" if name in STAGES else name] = {
            "miou_def": float(np.mean([iou(masks[i], gts[i]) for i in ids])),
            "called_but_empty": sum(called[i] and not masks[i].any() for i in ids),
        }
    teacher = stage_masks(run, "retrain", ids, gts)
    meta = run / "train-segmenter" / "segmenter.json"
    if teacher is not None and meta.is_file():  # what the segmenter can copy of its teacher at its own input size
        size = json.loads(meta.read_text())["input_size"]
        out[f"retrain masks through the segmenter's {size[0]} x {size[1]} input"] = {
            "miou_def": float(np.mean([iou(through(teacher[i], size), gts[i]) for i in ids]))
        }
    for name, folder in runs:  # the segmenter's own soft map under other gates: is its image head the loss?
        probs = folder / "train-segmenter" / "probs"
        if not probs.is_dir():
            continue
        soft = {i: read_prob_map(probs / f"{i}.png") >= PROB_HALF for i in ids}
        label = "train-segmenter" if name in STAGES else name
        for gate, keep in (("gated by the classifier's decision", called), ("ungated", dict.fromkeys(ids, True))):
            out[f"{label}, {gate}"] = {"miou_def": float(np.mean([iou(soft[i] & keep[i], gts[i]) for i in ids]))}
    for v in out.values():
        v.update(images=len(ids), called=sum(called.values()))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = {split: {run.name: ladder(run, split, args) for run in args.runs} for split in args.splits.split(",")}
    for split, per_run in results.items():
        names = list(next(iter(per_run.values())))
        print(f"\n### {split} split: mIoU_def over the defective images ({len(per_run)} run(s))\n")
        print("| rung | mean | " + " | ".join(per_run) + " | called defective but empty |")
        print("|---|---|" + "---|" * len(per_run) + "---|")
        for name in names:
            vals = [per_run[r][name]["miou_def"] for r in per_run if name in per_run[r]]
            empty = [per_run[r][name].get("called_but_empty") for r in per_run if name in per_run[r]]
            cells = " | ".join(f"{100 * per_run[r][name]['miou_def']:.2f}%" for r in per_run if name in per_run[r])
            lost = "" if empty[0] is None else " + ".join(str(e) for e in empty)
            print(f"| {name} | {100 * np.mean(vals):.2f}% | {cells} | {lost} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ceiling.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
