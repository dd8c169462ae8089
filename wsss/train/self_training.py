"""Self-training rounds: one mechanism for the retrain round (``retrain.rounds``) and the segmenter's own rounds
(``segmenter.rounds``). Each round trains a segmenter on the current masks, then relabels the images with it; the
next round learns from those masks. What "relabel" means is the caller's: the retrain round fuses the segmenter's
map with the CAM and runs the labelling rule again, the segmenter's rounds take the image-label-constrained argmax.

Round ``k`` works in ``OUT/round<k>/``: its segmenter in ``model/``, its masks in ``masks/`` (with their
``confidence.csv``). A ``trained`` marker is written once its segmenter has finished training (the training
checkpoint is removed then), a ``done`` marker once its masks are complete, so a killed stage resumes in the round
where it stopped: a round that is done is skipped, one that trained relabels again without training. Under DDP every
rank trains, rank 0 relabels and writes, and all meet at a barrier after each round.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from wsss import distributed as dist
from wsss.atomic import atomic_write_text
from wsss.train.loop import CHECKPOINT

ROUND_TRAINED = "trained"  # written in round<k>/ once its segmenter finished training
ROUND_DONE = "done"  # written in round<k>/ once its masks and confidence.csv are complete


def round_dir(out: Path, k: int) -> Path:
    return Path(out) / f"round{k}"


def self_training(
    out: Path,
    rounds: int,
    masks: Path,
    train: Callable[[int, Path, Path], None],
    relabel: Callable[[int, Path, Path], None],
    announce: Callable[[int, Path], None],
) -> Path:
    """Run rounds 1..``rounds`` in ``out`` (see the module docstring): ``train(k, masks, model_dir)`` trains round
    ``k``'s segmenter on ``masks`` into ``model_dir``; ``relabel(k, model_dir, round_dir)`` writes the round's
    ``masks/`` and ``confidence.csv`` with it; ``announce(k, masks)`` says that round ``k`` starts. Returns the last
    round's masks folder (``masks`` itself when ``rounds`` is 0)."""
    for k in range(1, rounds + 1):
        rdir = round_dir(out, k)
        if not (rdir / ROUND_DONE).is_file():
            announce(k, masks)
            if not (rdir / ROUND_TRAINED).is_file():  # else: trained before a kill, relabelling was interrupted
                train(k, masks, rdir / "model")
                if dist.is_main():
                    shutil.rmtree(rdir / "model" / CHECKPOINT.parent, ignore_errors=True)
                    atomic_write_text(rdir / ROUND_TRAINED, "")
            if dist.is_main():
                relabel(k, rdir / "model", rdir)
                atomic_write_text(rdir / ROUND_DONE, "")
            dist.barrier()
        masks = rdir / "masks"
    return masks


def remove_rounds(out: Path, rounds: int) -> None:
    """Delete the round folders once the stage has kept what it needs of them."""
    for k in range(1, rounds + 1):
        shutil.rmtree(round_dir(out, k), ignore_errors=True)
