"""Benchmark: the CAM stage's forward passes in CPU-sized chunks against one batch, side by side in one process.

Runs the `cam` stage's first pass (flip-averaged CAMs, then IEM's erasure rounds for the images called defective) on
the same images of a finished run twice per repetition, interleaved: with every forward pass whole (what wsss did
before :mod:`wsss.models.chunked`) and in chunks. Prints the seconds of each, their ratio (the best of the
repetitions, since the machine is shared) and the largest difference between the two CAMs and sample scores.

    python bench/cam_speed.py --config configs/ksdd.yaml --run /tmp/bench/ksdd/fold0 --images 32
    python bench/cam_speed.py --config configs/mtd.yaml --run /tmp/bench/mtd/run --images 32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="the recipe the run was made with")
    p.add_argument("--run", type=Path, required=True, help="a run folder with a finished train-classifier stage")
    p.add_argument("--images", type=int, default=32, help="images: three quarters defective, the rest OK")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import wsss.models.chunked as chunked
    from wsss.cam.extract import CamExtractor
    from wsss.cam.iem import extend_cams
    from wsss.config import load_config
    from wsss.data.images import read_image
    from wsss.data.index import read_train_index
    from wsss.models.classifier import load_dfc

    cfg = load_config(args.config)
    model, meta = load_dfc(args.run / "train-classifier", "cpu")
    extractor = CamExtractor(model, meta["input_size"], int(meta["in_chans"]), cfg.cam, torch.device("cpu"))
    rows = read_train_index(args.run / "prepare" / "index.csv")
    n_def = args.images * 3 // 4
    chosen = [r for r in rows if r.labels][:n_def] + [r for r in rows if not r.labels][: args.images - n_def]
    images = [read_image(r.path, cfg.dataset.high_bit_depth) for r in chosen]

    def cam_pass() -> tuple[float, list[np.ndarray], np.ndarray]:
        t0 = time.perf_counter()
        cams, scores = extractor(images)
        active = [float(s.max()) >= cfg.cam.score_threshold for s in scores]
        if cfg.cam.iem.enabled and any(active):
            cams, _ = extend_cams(extractor, images, cams, active, cfg.cam.iem)
        return time.perf_counter() - t0, cams, scores

    chunk_pixels = chunked.CPU_PIXELS
    runs: dict[str, list] = {"whole": [], "chunked": []}
    for _ in range(args.repeats):
        for name, pixels in (("whole", 1 << 62), ("chunked", chunk_pixels)):
            chunked.CPU_PIXELS = pixels
            runs[name].append(cam_pass())
    whole, chunks = (min(r[0] for r in runs[k]) for k in ("whole", "chunked"))
    cam_diff = max(float(np.abs(a - b).max()) for a, b in zip(runs["whole"][0][1], runs["chunked"][0][1], strict=True))
    score_diff = float(np.abs(runs["whole"][0][2] - runs["chunked"][0][2]).max())
    print(
        f"{args.config}, {len(images)} images at {meta['input_size']}, {args.threads} thread(s), {args.repeats} repeats"
    )
    print("| forward passes | seconds (best) | all repeats |")
    print("|---|---|---|")
    for name in ("whole", "chunked"):
        print(f"| {name} | {min(r[0] for r in runs[name]):.1f} | {', '.join(f'{r[0]:.1f}' for r in runs[name])} |")
    print(f"\nspeed-up {whole / chunks:.2f}x; largest difference: CAM {cam_diff:.2g}, sample score {score_diff:.2g}")


if __name__ == "__main__":
    main()
