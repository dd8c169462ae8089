"""Benchmark: the recipe `wsss init` writes, run as is on generated data sets of the kinds a team brings (colour
photographs, wide strips, large images, square textures, faint regions, pits of a few pixels:
:mod:`wsss.data.variants`), which no recipe was tuned on. Per data set: generate it (once), `wsss init --kind csv`, `wsss run` in a subprocess, then the test
split's figures of every mask-writing stage (bench/recipe.py's scoring), each stage's time, and the run's
``overview.png`` (image, pseudo-mask, segmenter, ground truth) to look at.

    python bench/generated.py --out /tmp/bench/generated
    python bench/generated.py --out /tmp/bench/generated --variants strips,faint --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from recipe import MASK_STAGES, pct, score  # noqa: E402  (bench/ is not a package)


def run_variant(name: str, out: Path, threads: int, seed: int) -> Path:
    """Generate, init and run one data set under ``out/name``; returns its run folder. Logs to ``out/name.log``."""
    from wsss.data.variants import generate, get_variant

    folder = out / name
    csv_path = folder / "data" / "labels.csv"
    if not csv_path.is_file():
        generate(folder / "data", get_variant(name), seed=seed)
    env = dict(os.environ, PYTHONPATH=str(ROOT), WSSS_PROGRESS="0")
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    recipe, run_dir = folder / "recipe.yaml", folder / "run"
    with open(out / f"{name}.log", "a") as log:
        for cmd in (
            ["init", "--kind", "csv", "--root", str(csv_path), "--out", str(recipe), "--force"],
            ["run", "--config", str(recipe), "--run-dir", str(run_dir)],
        ):
            subprocess.run([sys.executable, "-m", "wsss.cli", *cmd], env=env, stdout=log, stderr=log, check=True)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    from wsss.data.variants import VARIANTS, get_variant

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the data sets and their runs")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--jobs", type=int, default=1, help="data sets run side by side")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per run; 0 = the environment's")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed")
    p.add_argument("--collect", action="store_true", help="only report finished runs")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    for n in names:
        get_variant(n)  # an unknown name fails before anything runs
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect:
        dirs = [args.out / n / "run" for n in names]
    else:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            dirs = list(pool.map(lambda n: run_variant(n, args.out, args.threads, args.seed), names))
    print("| data set | images | size (HxW) | stage | image AP | mIoU_def | Seg_mIoU | pixel AP | run min |")
    print("|---|---|---|---|---|---|---|---|---|")
    scored = [score(run_dir, run_dir.parent / "recipe.yaml", [], "test") for run_dir in dirs]  # evaluated once
    for name, (metrics, seconds) in zip(names, scored, strict=True):
        v = get_variant(name)
        minutes = sum(seconds.values()) / 60
        for stage in MASK_STAGES:
            m = metrics.get(stage)
            if m is None:
                continue
            cells = " | ".join(pct(m[k]) for k in ("ap", "miou_def", "seg_miou", "pixel_ap"))
            print(
                f"| {name} | {v.n_ok + v.n_defect} | {v.height}x{v.width}{' RGB' if v.colour else ''} | {stage} | "
                f"{cells} | {minutes:.1f} |"
            )
    print("\nstage seconds:")
    for name, run_dir, (_, seconds) in zip(names, dirs, scored, strict=True):
        print(f"  {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
        print(f"  {name}: overview {run_dir / 'overview.png'}")


if __name__ == "__main__":
    main()
