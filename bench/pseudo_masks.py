"""Benchmark: pseudo-mask quality of the full method and its ablations on real data.

For each dataset this trains the DFC once (the `pseudo-masks` pipeline's run: the full method up to the retrain
round), copies its `prepare` and `train-classifier`
stages into one run folder per ablation (their manifests still match, so they are reused, not retrained), runs
each pipeline, and reports on the test split: mIoU_def, pooled IoU, Seg_mIoU, Seg_Recall@0.1/0.5 and image AP
(METHOD.md section 8), plus each stage's throughput (images/s) and the CRF process pool's speed-up over one worker,
measured on the same images in the same run.

    python bench/pseudo_masks.py                        # CPU, reduced resolution, KSDD fold 0 and MTD
    python bench/pseudo_masks.py --reuse runs/bench-classifier  # start from bench/classifier.py's `both` runs

Results go to ``<out>/results.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from classifier import bench_overrides, input_size  # noqa: E402  (the classifier benchmark's runs, reusable)

from wsss.config import load_config  # noqa: E402
from wsss.config.pipelines import load_pipeline  # noqa: E402
from wsss.data.index import read_train_index  # noqa: E402
from wsss.runs import Run  # noqa: E402
from wsss.stages import get_stage  # noqa: E402

PIPELINES = ("pseudo-masks", "cam-iem-crf", "cam-threshold", "cam-crf")  # in this order, later runs reuse stages
BASE = "pseudo-masks"  # the method's pipeline; the ablations reuse its prepare and train-classifier stages
METRICS = ("miou_def", "pooled_iou", "seg_miou", "seg_recall@0.1", "seg_recall@0.5", "ap")  # report.json keys


def add_config_options(p: argparse.ArgumentParser) -> None:
    """The options that define this benchmark's configs (:func:`config`); the benchmarks built on its runs take the
    same ones, so that they rebuild exactly the configs of the runs they reuse."""
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder holding mtd/ and ksdd/")
    p.add_argument("--datasets", default="ksdd,mtd")
    p.add_argument("--epochs", type=int, default=None, help="classifier epochs: default 12 (40 with --full)")
    p.add_argument("--backbone", default="resnet18", help="classifier backbone")
    p.add_argument("--full", action="store_true", help="full resolution (for a GPU)")
    p.add_argument("--size", action="append", default=[], help="DATASET=HxW classifier input size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override KEY=VALUE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_options(p)
    p.add_argument("--pipelines", default=",".join(PIPELINES))
    p.add_argument("--pool-images", type=int, default=48, help="images for the CRF pool speed-up measurement")
    p.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a bench/classifier.py output folder to take the `both` classifiers from (pass the same --epochs, "
        "--backbone, --size and --set as that run)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-pseudo-masks")
    return p.parse_args(argv)


def config(args, dataset: str, pipeline: str):
    """The classifier benchmark's `both` run of ``dataset`` (KSDD fold 0), with ``pipeline`` after it."""
    size = input_size(args, dataset)
    overrides = bench_overrides(args, dataset, 0 if dataset == "ksdd" else None, "both")
    overrides += [f"retrain.input_size=[{size[0]},{size[1]}]", f"run.pipeline={pipeline}"]
    if args.device.startswith("cuda"):
        overrides += ["retrain.amp=true", "retrain.channels_last=true", "retrain.workers=8"]
    return load_config(ROOT / "configs" / f"{dataset}.yaml", overrides + list(args.overrides))


def stage_rates(run_dir: Path, n_images: int, stages: tuple[str, ...]) -> dict[str, float]:
    rates = {}
    for s in stages:
        m = run_dir / s / "manifest.json"
        if m.is_file():
            rates[s] = n_images / max(json.loads(m.read_text()).get("seconds", 0.0), 1e-9)
    return rates


def pool_speedup(run_dir: Path, cfg, n: int) -> dict[str, float]:
    """Seconds to label the same ``n`` images with 1 worker and with every core, in this run."""
    import tempfile

    from wsss.cam.gate import read_calls
    from wsss.cam.io import cam_path, read_cam_meta
    from wsss.parallel import usable_cores
    from wsss.refine.pseudo import LabelTask, label_all

    rows = read_train_index(run_dir / "prepare" / "index.csv")
    meta = read_cam_meta(run_dir / "cam")
    calls = read_calls(run_dir / "cam")
    called = [r for r in rows if calls[r.id]][:n]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, usable_cores()):
            d = Path(tmp) / str(workers)
            tasks = [
                LabelTask(
                    r.id,
                    r.path,
                    cam_path(run_dir / "cam", r.id),
                    d / f"{r.id}.png",
                    True,
                    len(meta["classes"]),
                    cfg.pseudo,
                    cfg.dataset.high_bit_depth,
                )
                for r in called
            ]
            t0 = time.perf_counter()
            label_all(tasks, workers, lambda *_: None)
            out[f"seconds_{workers}w"] = time.perf_counter() - t0
    out["images"], out["cores"] = len(called), usable_cores()
    out["speedup"] = out[f"seconds_{1}w"] / out[f"seconds_{usable_cores()}w"]
    return out


def reuse_stages(run_dir: Path, cfg, stages: list[str], earlier: list[Path]) -> list[str]:
    """Copy into ``run_dir`` each stage that an earlier run of this benchmark finished under the same config and
    inputs (the runner's own staleness check decides); returns the stages copied. cam-iem-crf so reuses the method's
    cam and pseudo-labels, cam-crf the cam of cam-threshold: only what differs is computed."""
    copied = []
    for name in stages:
        if (run_dir / name).exists():
            continue
        for src in earlier:
            if (src / name).is_dir() and Run(src, cfg, echo=lambda *_: None).status(get_stage(name)) == "done":
                shutil.copytree(src / name, run_dir / name)
                copied.append(name)
                break
    return copied


def fmt(v: float | None, plain: bool) -> str:
    """A metric for the table: None (undefined, e.g. no defective test image) as n/a."""
    if v is None:
        return "n/a"
    return f"{v:.4f}" if plain else f"{100 * v:.2f}%"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        base = args.out / f"{dataset}-{BASE}"
        done_runs: list[Path] = []
        if args.reuse is not None:
            src = args.reuse / (f"{dataset}-fold0-both" if dataset == "ksdd" else f"{dataset}-both")
            for stage in ("prepare", "train-classifier"):
                if (src / stage).is_dir() and not (base / stage).exists():
                    shutil.copytree(src / stage, base / stage)
            state = Run(base, config(args, dataset, BASE)).status(get_stage("train-classifier"))
            if state != "done":
                sys.exit(
                    f"--reuse {src}: its classifier is {state} under this benchmark's config; pass the same "
                    "--epochs/--backbone/--size/--set as the classifier benchmark run"
                )
        for pipeline in [p for p in args.pipelines.split(",") if p]:
            cfg = config(args, dataset, pipeline)
            run_dir = base if pipeline == BASE else args.out / f"{dataset}-{pipeline}"
            stages = list(load_pipeline(pipeline).stages)
            if run_dir != base:
                cfg_full = config(args, dataset, BASE)
                Run(base, cfg_full, echo=print).run_pipeline(["prepare", "train-classifier"])
                copied = reuse_stages(run_dir, cfg, [s for s in stages if s != "evaluate"], [base, *done_runs])
                print(f"[{dataset} {pipeline}] reusing finished stages: {', '.join(copied) or 'none'}", flush=True)
            Run(run_dir, cfg, echo=lambda m, tag=f"[{dataset} {pipeline}]": print(tag, m, flush=True)).run_pipeline(
                stages
            )
            report = json.loads((run_dir / "evaluate" / "report.json").read_text())
            n = len(read_train_index(run_dir / "prepare" / "index.csv"))
            row = {"dataset": dataset, "pipeline": pipeline} | {k: report[k] for k in METRICS}
            row["images_per_s"] = stage_rates(run_dir, n, ("cam", "pseudo-labels", "retrain"))
            if pipeline == "cam-iem-crf":
                row["crf_pool"] = pool_speedup(run_dir, cfg, args.pool_images)
            results.append(row)
            done_runs.append(run_dir)
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
            print(json.dumps(row), flush=True)
    print()
    print("| dataset | pipeline | mIoU_def | pooled IoU | Seg_mIoU | Seg_Recall@0.1 | @0.5 | image AP | images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rates = ", ".join(f"{k} {v:.2f}" for k, v in r["images_per_s"].items())
        print(
            f"| {r['dataset']} | {r['pipeline']} | "
            + " | ".join(fmt(r[k], k == "ap") for k in METRICS)
            + f" | {rates} |"
        )
    for r in results:
        if "crf_pool" in r:
            print(f"CRF pool ({r['dataset']}): {json.dumps(r['crf_pool'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
