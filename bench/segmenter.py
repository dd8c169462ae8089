"""Benchmark: the distilled segmenter against the pseudo-mask pipeline it learnt from, on real data.

Starts from bench/pseudo_masks.py's finished runs (``--reuse``: its ``<dataset>-pseudo-masks`` run, with the
classifier, CAMs and round-2 pseudo-masks, and its ``<dataset>-cam-iem-crf`` run): copies them, runs
`train-segmenter` + `evaluate` on the copy, and reports on the test split, for the same images, METHOD.md section 8
metrics of

- the distilled segmenter (one forward pass, mask gated by its own classification head),
- the pseudo-masks of CAM + IEM + CRF (the `cam-iem-crf` ablation) and of the full method with its retrain round.

Inference speed is measured in this process on the same ``--speed-images`` test images, interleaved in chunks so
background load falls on both alike: the segmenter (read, forward, upsample, gate) against the teacher path
(read, multi-scale + flip CAMs, IEM, normalisation, dense CRF), each on one process. Prints images/s and the ratio.

    python bench/segmenter.py --reuse runs/bench-pseudo-masks    # after bench/pseudo_masks.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from pseudo_masks import BASE, METRICS, add_config_options, config, fmt  # noqa: E402  (its runs)

from wsss.config import apply_override  # noqa: E402
from wsss.data.images import read_image  # noqa: E402
from wsss.data.index import read_train_index  # noqa: E402
from wsss.runs import Run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reuse", type=Path, required=True, help="a bench/pseudo_masks.py output folder")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-segmenter")
    p.add_argument("--speed-images", type=int, default=12, help="test images timed on both paths")
    p.add_argument("--chunk", type=int, default=4, help="images per timed chunk (chunks alternate between paths)")
    add_config_options(p)  # the pseudo-mask benchmark's, to rebuild the configs of the runs it reuses
    return p.parse_args(argv)


class TeacherPath:
    """The pseudo-mask method's path for new images: CAM TTA + IEM + dataset normalisation + dense CRF labelling."""

    def __init__(self, run_dir: Path, cfg):
        from wsss.cam.extract import CamExtractor
        from wsss.cam.io import read_cam_meta
        from wsss.models.classifier import load_dfc

        model, meta = load_dfc(run_dir / "train-classifier", "cpu")
        self.cfg, self.scale = cfg, float(read_cam_meta(run_dir / "cam")["scale"])
        self.extractor = CamExtractor(
            model, meta["input_size"], int(meta["in_chans"]), cfg.cam, "cpu", meta.get("fit", "stretch")
        )

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        from wsss.cam.extract import normalise_cam
        from wsss.cam.iem import extend_cams
        from wsss.refine.pseudo import label_image

        ccfg = self.cfg.cam
        cams, scores = self.extractor(images)  # images to segment have no label: the score gates them
        active = [float(s.max()) >= ccfg.score_threshold for s in scores]
        if ccfg.iem.enabled and any(active):
            cams, _ = extend_cams(self.extractor, images, cams, active, ccfg.iem)
        return [
            label_image(img, normalise_cam(cam, s >= ccfg.score_threshold, self.scale), self.cfg.pseudo, a).mask
            for img, cam, s, a in zip(images, cams, scores, active, strict=True)
        ]


def speed(run_dir: Path, cfg, paths: list[Path], chunk: int) -> dict[str, float]:
    """Images/s of the segmenter and of the teacher path on ``paths``, timed in alternating chunks."""
    from wsss.inference import load_predictor

    paths_by = {"segmenter": load_predictor(run_dir, "cpu"), "teacher": TeacherPath(run_dir, cfg)}
    paths_by["segmenter"]([read_image(paths[0])])  # warm-up: first-call allocations
    seconds = dict.fromkeys(paths_by, 0.0)
    for start in range(0, len(paths), chunk):
        for name, fn in paths_by.items():
            t0 = time.perf_counter()
            fn([read_image(p) for p in paths[start : start + chunk]])
            seconds[name] += time.perf_counter() - t0
    rates = {f"{k}_images_per_s": len(paths) / v for k, v in seconds.items()}
    return rates | {"speedup": seconds["teacher"] / seconds["segmenter"], "images": len(paths)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        src = args.reuse / f"{dataset}-{BASE}"
        run_dir = args.out / f"{dataset}-distilled"
        for stage in ("prepare", "train-classifier", "cam", "pseudo-labels", "retrain"):
            if not (src / stage / "manifest.json").is_file():
                sys.exit(f"--reuse {src}: no finished {stage} stage; run bench/pseudo_masks.py first")
            if not (run_dir / stage).exists():
                shutil.copytree(src / stage, run_dir / stage)
        cfg = config(args, dataset, "full")
        size = cfg.classifier.input_size
        extra = ["evaluate.masks=train-segmenter", f"segmenter.input_size=[{size[0]},{size[1]}]"]
        if args.device.startswith("cuda"):
            extra += ["segmenter.amp=true", "segmenter.channels_last=true", "segmenter.workers=8"]
        for item in extra:
            apply_override(cfg, item)
        run = Run(run_dir, cfg, echo=lambda m, tag=f"[{dataset}]": print(tag, m, flush=True))
        run.run_pipeline(
            ["prepare", "train-classifier", "cam", "pseudo-labels", "retrain", "train-segmenter", "evaluate"]
        )
        rows = {"segmenter": json.loads((run_dir / "evaluate" / "report.json").read_text())}
        for name, folder in (("cam+iem+crf", f"{dataset}-cam-iem-crf"), ("+retrain round", f"{dataset}-{BASE}")):
            report = args.reuse / folder / "evaluate" / "report.json"
            if report.is_file():
                rows[name] = json.loads(report.read_text())
        test = [r.path for r in read_train_index(run_dir / "prepare" / "index.csv", "test")][: args.speed_images]
        rates = speed(run_dir, cfg, test, args.chunk)
        for name, report in rows.items():
            results.append({"dataset": dataset, "masks": name} | {k: report[k] for k in METRICS})
        results[-len(rows)] |= {"speed": rates}
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        print(f"[{dataset}] speed on {rates['images']} test images: " + json.dumps(rates), flush=True)
    print()
    print("| dataset | masks | mIoU_def | pooled IoU | Seg_mIoU | Seg_Recall@0.1 | @0.5 | image AP |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['masks']} | " + " | ".join(fmt(r[k], k == "ap") for k in METRICS) + " |")
    for r in results:
        if "speed" in r:
            s = r["speed"]
            print(
                f"{r['dataset']}: segmenter {s['segmenter_images_per_s']:.2f} images/s, CAM + IEM + CRF "
                f"{s['teacher_images_per_s']:.3f} images/s: {s['speedup']:.1f}x ({s['images']} test images, 1 process)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
