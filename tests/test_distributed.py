"""Training under DDP: 2 gloo processes on the CPU, rendezvous through a file in a temp folder."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import FAST, TINY, TINY_CLASSIFIER
from safetensors.torch import load_file

from wsss.distributed import shutdown


@contextmanager
def _gloo_group(rank: int, world: int, rendezvous: str):
    """This rank in a gloo group for the block: left through ``shutdown`` (every rank waits) when the block succeeds,
    destroyed at once when it raises (the other ranks may never reach a barrier)."""
    import torch.distributed as td

    td.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        yield
    except BaseException:
        td.destroy_process_group()
        raise
    shutdown()


OVERRIDES = [
    *[f"dataset.synthetic.{k}={v}" for k, v in TINY.items()],
    *TINY_CLASSIFIER,
    "classifier.epochs=2",
    "classifier.gcm.enabled=true",
]


def _train_on_rank(
    rank: int, world: int, rendezvous: str, run_dir: str, out: str, extra: tuple[str, ...] = (), check=None
) -> None:
    """One rank: join the group, run the real train-classifier stage (``OVERRIDES`` + ``extra``), save the weights
    this rank ended with; ``check(trainer)`` runs before training when given."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    from wsss.config import load_config
    from wsss.runs import Run
    from wsss.train.classifier import ClassifierTrainer

    original = ClassifierTrainer.fit

    def fit_and_record(self):
        if check is not None:
            check(self)
        summary = original(self)
        torch.save({k: v.detach().clone() for k, v in self.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")
        return summary

    ClassifierTrainer.fit = fit_and_record
    with _gloo_group(rank, world, rendezvous):
        Run(Path(run_dir), load_config(None, [*OVERRIDES, *extra]), echo=lambda *_: None).run_stage("train-classifier")


def test_two_process_ddp_training_ends_with_identical_weights_on_both_ranks(prepared_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_train_on_rank, args=(2, rendezvous, str(run_dir), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    stage = run_dir / "train-classifier"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["world_size"] == 2
    assert not (run_dir / "train-classifier.partial").exists() and not (stage / "checkpoints").exists()
    rows = (stage / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # two epochs, written once (by rank 0)
    saved = load_file(stage / "dfc.safetensors")
    assert saved.keys() <= a.keys()


@pytest.mark.gpu
def test_nccl_ddp_training_on_the_gpus(prepared_run: Path, tmp_path: Path):
    world = min(2, torch.cuda.device_count())
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    mp.spawn(_train_on_rank, args=(world, "env://", str(run_dir), str(tmp_path)), nprocs=world, join=True)
    assert json.loads((run_dir / "train-classifier" / "manifest.json").read_text())["status"] == "done"


def _label_on_rank(rank: int, world: int, rendezvous: str, run_dir: str, die_after: int) -> None:
    """One rank of a sharded pseudo-labels run; with ``die_after`` > 0, rank 1 crashes after that many images."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import wsss.refine.pseudo as pseudo
    from wsss.config import load_config
    from wsss.runs import Run

    if die_after and rank == 1:
        original, count = pseudo.label_one, {"n": 0}

        def crashes(task):
            count["n"] += 1
            if count["n"] > die_after:
                os._exit(3)  # as if killed: no exception handling, no clean-up
            return original(task)

        pseudo.label_one = crashes
    with _gloo_group(rank, world, rendezvous):
        Run(Path(run_dir), load_config(None, [*FAST, "pseudo.workers=1"]), echo=lambda *_: None).run_stage(
            "pseudo-labels"
        )


def _copy_upstream(full: Path, dst: Path) -> None:
    for stage in ("prepare", "train-classifier", "cam"):
        shutil.copytree(full / stage, dst / stage)


def _same_outputs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "masks").glob("*.png"))
    assert names == sorted(p.name for p in (b / "masks").glob("*.png")) and names
    assert all((a / "masks" / n).read_bytes() == (b / "masks" / n).read_bytes() for n in names)
    assert (a / "confidence.csv").read_text() == (b / "confidence.csv").read_text()


def test_sharded_pseudo_labels_over_two_processes_equal_one_process(full_run, tmp_path: Path):
    full, _ = full_run
    run_dir = tmp_path / "run"
    _copy_upstream(full, run_dir)
    mp.spawn(_label_on_rank, args=(2, f"file://{tmp_path / 'rdv'}", str(run_dir), 0), nprocs=2, join=True)
    _same_outputs(run_dir / "pseudo-labels", full / "pseudo-labels")
    assert json.loads((run_dir / "pseudo-labels" / "manifest.json").read_text())["world_size"] == 2
    assert not list((run_dir / "pseudo-labels").glob("rows*.jsonl"))


def test_a_dying_rank_fails_the_stage_and_a_rerun_redoes_only_the_missing_images(
    full_run, tmp_path: Path, capsys: pytest.CaptureFixture
):
    from wsss.config import load_config
    from wsss.runs import Run

    full, _ = full_run
    run_dir = tmp_path / "run"
    _copy_upstream(full, run_dir)
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_label_on_rank, args=(2, f"file://{tmp_path / 'rdv'}", str(run_dir), 3), nprocs=2, join=True)
    assert not (run_dir / "pseudo-labels").exists()  # no done manifest over partial output
    partial = run_dir / "pseudo-labels.partial"
    logged = sum(len(p.read_text().splitlines()) for p in partial.glob("rows*.jsonl"))
    total = len(list((full / "pseudo-labels" / "masks").glob("*.png")))
    assert 3 <= logged < total
    capsys.readouterr()
    Run(run_dir, load_config(None, [*FAST, "pseudo.workers=1"]), echo=lambda *_: None).run_stage("pseudo-labels")
    out = capsys.readouterr().out
    assert f"resuming, {logged} of {total} images already done" in out and f"labelling {total - logged} image(s)" in out
    _same_outputs(run_dir / "pseudo-labels", full / "pseudo-labels")


def _cam_on_rank(rank: int, world: int, rendezvous: str, run_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    from wsss.config import load_config
    from wsss.runs import Run

    with _gloo_group(rank, world, rendezvous):
        Run(Path(run_dir), load_config(None, FAST), echo=lambda *_: None).run_stage("cam")


def test_sharded_cam_stage_over_two_processes_equals_one_process(full_run, tmp_path: Path):
    import numpy as np

    from wsss.cam.io import read_cam

    full, _ = full_run
    run_dir = tmp_path / "run"
    for stage in ("prepare", "train-classifier"):
        shutil.copytree(full / stage, run_dir / stage)
    mp.spawn(_cam_on_rank, args=(2, f"file://{tmp_path / 'rdv'}", str(run_dir)), nprocs=2, join=True)
    a, b = run_dir / "cam", full / "cam"
    assert (a / "scores.csv").read_text().splitlines()[0] == (b / "scores.csv").read_text().splitlines()[0]
    ids = sorted(p.stem for p in (b / "cams").glob("*.npz"))
    assert ids == sorted(p.stem for p in (a / "cams").glob("*.npz"))
    for i in ids:  # batches differ between 1 and 2 ranks, so equal up to float rounding
        assert np.allclose(read_cam(a / "cams" / f"{i}.npz"), read_cam(b / "cams" / f"{i}.npz"), atol=2e-3)
    assert json.loads((a / "cam.json").read_text())["scale"] == pytest.approx(
        json.loads((b / "cam.json").read_text())["scale"], rel=1e-3
    )
    assert not (a / "raw").exists() and not list(a.glob("rows*.jsonl"))


def _stages_on_rank(rank: int, world: int, rendezvous: str, run_dir: str, stages: list[str]) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    from wsss.config import load_config
    from wsss.runs import Run

    with _gloo_group(rank, world, rendezvous):
        Run(Path(run_dir), load_config(None, FAST), echo=lambda *_: None).run_pipeline(stages)


def test_retrain_and_train_segmenter_train_with_ddp_and_write_their_outputs_once(full_run, tmp_path: Path):
    full, _ = full_run
    run_dir = tmp_path / "run"
    for stage in ("prepare", "train-classifier", "cam", "pseudo-labels"):
        shutil.copytree(full / stage, run_dir / stage)
    stages = ["retrain", "train-segmenter"]
    mp.spawn(_stages_on_rank, args=(2, f"file://{tmp_path / 'rdv'}", str(run_dir), stages), nprocs=2, join=True)
    for stage in stages:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["status"] == "done" and manifest["world_size"] == 2
        n = len(list((full / stage / "masks").glob("*.png")))
        assert len(list((run_dir / stage / "masks").glob("*.png"))) == n
    assert not list((run_dir / "retrain").glob("round*")) and not (run_dir / "train-segmenter" / "checkpoints").exists()


def _predict_on_rank(rank: int, world: int, rendezvous: str, model: str, images: str, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    from wsss.inference import load_predictor
    from wsss.predict import predict_images

    with _gloo_group(rank, world, rendezvous):
        predict_images(load_predictor(Path(model)), [Path(images)], Path(out), batch=2)


def test_predict_sharded_over_two_processes_equals_one_process(full_run, tmp_path: Path):
    from wsss.inference import load_predictor
    from wsss.predict import predict_images

    full, _ = full_run
    images = full / "prepare" / "data" / "images"
    predict_images(load_predictor(full), [images], tmp_path / "one", batch=2)
    args = (2, f"file://{tmp_path / 'rdv'}", str(full), str(images), str(tmp_path / "two"))
    mp.spawn(_predict_on_rank, args=args, nprocs=2, join=True)
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / "predictions.csv").read_text() == (one / "predictions.csv").read_text()
    assert not list(two.glob("*.part"))
    names = sorted(p.name for p in (one / "masks").glob("*.png"))
    assert names and names == sorted(p.name for p in (two / "masks").glob("*.png"))
    assert all((one / "masks" / n).read_bytes() == (two / "masks" / n).read_bytes() for n in names)
