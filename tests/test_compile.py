"""The optional torch.compile switch: off = the same module, on = same outputs, eager fallback, clean checkpoints.

Compiling here uses torch.compile's "eager" backend (TorchDynamo traces, no code generation), so the tests need no
C compiler and stay fast; the real (inductor) backend is what a GPU run gets.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_CLASSIFIER
from safetensors.torch import load_file
from torch import nn

import wsss.models.compile as compile_mod
from wsss.cam.extract import CamExtractor
from wsss.config import load_config
from wsss.models.compile import maybe_compile
from wsss.stages.train_classifier import classifier_trainer
from wsss.train.classifier import ClassifierTrainer, build_dfc


@pytest.fixture
def eager_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile as the trainers call it (no backend argument), with the "eager" backend."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()


def test_disabled_returns_the_module_itself():
    net = _net()
    assert maybe_compile(net, False, "classifier.compile") is net


def test_enabled_forward_matches_eager():
    net = _net()
    compiled = maybe_compile(net, True, "classifier.compile", backend="eager")
    assert compiled is not net and compiled._orig_mod is net
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x))
    # why the trainers save the eager module: the compiled one's keys carry a prefix
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())


def test_a_failing_compile_warns_once_naming_the_key_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch):
    def refuses(*_, **__):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(compile_mod, "_warned", set())
    monkeypatch.setattr(torch, "compile", refuses)
    net = _net()
    with pytest.warns(UserWarning, match=r"cam\.compile: torch\.compile failed \(RuntimeError: Dynamo.*eagerly"):
        assert maybe_compile(net, True, "cam.compile") is net
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        assert maybe_compile(net, True, "cam.compile") is net
    monkeypatch.delattr(torch, "compile")
    with pytest.warns(UserWarning, match=r"segmenter\.compile: this torch .* has no torch\.compile"):
        assert maybe_compile(net, True, "segmenter.compile") is net


def test_compiled_classifier_training_saves_plain_keys(prepared_run: Path, tmp_path: Path, eager_backend: None):
    """Training through the compiled module (GCM's two halves included) is eager training, saved without
    `_orig_mod.` in any key."""
    index = prepared_run / "prepare" / "index.csv"
    cfg = load_config(None, [*TINY_CLASSIFIER, "classifier.epochs=2", "classifier.compile=true"])
    trainer = classifier_trainer(cfg, index, tmp_path / "compiled", echo=lambda *_: None)
    assert trainer.train_net._orig_mod is trainer.net is trainer.model
    calls = []
    trainer.train_net.register_forward_pre_hook(lambda *_: calls.append(1))  # the compiled module does the steps
    trainer.fit()
    assert calls
    weights = load_file(tmp_path / "compiled" / "dfc.safetensors")
    ckpt = torch.load(tmp_path / "compiled" / "checkpoints" / "last.pt", weights_only=True)
    for keys in (weights.keys(), ckpt["model"].keys()):
        assert keys and not any("_orig_mod" in k for k in keys)
    build_dfc(cfg.classifier, 1, 1).load_state_dict(weights)  # strict: the exact keys of the plain model
    cfg.classifier.compile = False
    classifier_trainer(cfg, index, tmp_path / "eager", echo=lambda *_: None).fit()
    eager = load_file(tmp_path / "eager" / "dfc.safetensors")
    assert all(torch.allclose(weights[k], eager[k], atol=1e-5) for k in eager)


def _compiled_ddp(trainer: ClassifierTrainer) -> None:
    assert isinstance(trainer.net, nn.parallel.DistributedDataParallel) and trainer.train_net._orig_mod is trainer.net


def _train_compiled_on_rank(rank: int, world: int, rendezvous: str, run_dir: str, out: str) -> None:
    """One DDP rank of a compiled (eager backend) train-classifier stage; saves the weights it ended with."""
    from test_distributed import _train_on_rank

    torch.compile = functools.partial(torch.compile, backend="eager")
    _train_on_rank(rank, world, rendezvous, run_dir, out, ("classifier.compile=true",), _compiled_ddp)


def test_compiled_ddp_training_over_two_processes(prepared_run: Path, tmp_path: Path):
    """torch.compile of the DDP wrapper (GCM's no_sync half included): both ranks end with the same plain weights."""
    import shutil

    import torch.multiprocessing as mp

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_train_compiled_on_rank, args=(2, rendezvous, str(run_dir), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = load_file(run_dir / "train-classifier" / "dfc.safetensors")
    assert saved.keys() <= a.keys() and not any("_orig_mod" in k for k in saved)


def test_compiled_segmenter_training_saves_plain_keys(tmp_path: Path, eager_backend: None):
    from test_segmenter import make_data, rcfg

    from wsss.train.segmenter import SegmenterTrainer, build_segmenter
    from wsss.train.segmenter_data import SegmenterData

    rows, masks, _ = make_data(tmp_path, n_defect=4, n_ok=2)
    scfg = rcfg(epochs=1, compile=True)
    trainer = SegmenterTrainer(
        scfg, SegmenterData(rows, masks, ["defect"], 1), tmp_path / "out", device="cpu", echo=lambda *_: None
    )
    assert trainer.train_net._orig_mod is trainer.model
    trainer.fit()
    weights = load_file(tmp_path / "out" / "segmenter.safetensors")
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.pt", weights_only=True)
    for keys in (weights.keys(), ckpt["model"].keys()):
        assert keys and not any("_orig_mod" in k for k in keys)
    build_segmenter(scfg, 1, 1).load_state_dict(weights)


def test_compiled_cam_extractor_gives_the_eager_cams(eager_backend: None):
    cfg = load_config(None, [*[f"dataset.synthetic.{k}={v}" for k, v in TINY.items()], *TINY_CLASSIFIER])
    torch.manual_seed(0)
    model = build_dfc(cfg.classifier, 1, 1).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(3)]
    eager = CamExtractor(model, (64, 64), 1, cfg.cam, "cpu")
    cfg.cam.compile = True
    compiled = CamExtractor(model, (64, 64), 1, cfg.cam, "cpu")
    assert eager.nets == eager.models and compiled.nets[0]._orig_mod is compiled.models[0]
    (cams_a, scores_a), (cams_b, scores_b) = eager(images), compiled(images)
    np.testing.assert_allclose(scores_b, scores_a, atol=1e-5)
    for a, b in zip(cams_a, cams_b, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)


def test_batchnorm_folds_into_its_convolution_for_inference_only_where_the_outputs_stay():
    """fold_batchnorm: no BatchNorm left after a convolution, the same outputs up to rounding, the model untouched;
    a block whose children are registered out of forward order keeps its own layers (folded_if_equal)."""
    from wsss.models.backbone import create_backbone
    from wsss.models.compile import fold_batchnorm, folded_if_equal

    cfg = load_config(None).classifier.backbone
    cfg.weights, cfg.stages = None, 4
    torch.manual_seed(0)
    backbone = create_backbone(cfg, 1).eval()
    for m in backbone.modules():  # statistics away from the identity, as training leaves them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 1, 64, 96)
    folded = fold_batchnorm(backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), backbone(x), rtol=1e-4, atol=1e-4)
    assert folded_if_equal(backbone, x) is not backbone

    class OutOfOrder(torch.nn.Module):  # conv then bn registered, but the forward normalises before convolving
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.conv(self.bn(x))

    block = OutOfOrder().eval()
    block.bn.running_mean.fill_(1.0)
    assert folded_if_equal(block, torch.randn(2, 4, 8, 8)) is block
