"""Training the classifier on cached features of its frozen stages: the split is exact, the features augment like
images, and a DFC trained on the cache is an ordinary DFC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_classifier import config

from wsss.config import load_config
from wsss.data.config import AugmentConfig
from wsss.data.transforms import FeatureAugment
from wsss.models import chunked as chunked_module
from wsss.models.backbone import create_backbone
from wsss.models.chunked import forward_chunked
from wsss.models.classifier import load_dfc
from wsss.models.prefix import split_frozen
from wsss.stages.train_classifier import classifier_trainer, member_config
from wsss.train.classifier import score_dataset
from wsss.train.feature_cache import FeatureStore, PrefixFirstDFC


def _backbone(name: str, freeze: int, stages: int = 0):
    cfg = load_config(None).classifier.backbone
    cfg.name, cfg.weights, cfg.freeze, cfg.stages = name, None, freeze, stages
    return create_backbone(cfg, 1)


@pytest.mark.parametrize(("name", "freeze", "stages"), [("tf_efficientnet_lite0", 3, 4), ("test_resnet", 1, 0)])
def test_the_split_gives_the_backbones_output_and_shares_its_parameters(name: str, freeze: int, stages: int):
    backbone = _backbone(name, freeze, stages).eval()
    split = split_frozen(backbone, 1)
    assert split is not None and split.stride > 1
    x = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        whole = backbone(x)
        f = split.prefix(x)
        assert f.shape[-2:] == (96 // split.stride, 64 // split.stride)
        assert f.shape[1] == split.channels
        torch.testing.assert_close(split.suffix(f), whole)
        # a trainable parameter changed through the backbone changes the suffix too: they are the same tensors
        p = next(p for p in backbone.parameters() if p.requires_grad)
        p.add_(1.0)
        torch.testing.assert_close(split.suffix(f), backbone(x))
    assert not any(p.requires_grad for m in backbone.frozen for p in m.parameters(recurse=False))


def test_nothing_frozen_means_no_split():
    assert split_frozen(_backbone("test_resnet", 0), 1) is None


def test_feature_augment_is_geometric_and_reproducible():
    f = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)
    off = AugmentConfig(flips=False, rot90=False, affine_degrees=0, affine_scale=0, affine_translate=0)
    assert torch.equal(FeatureAugment(off)(f, np.random.default_rng(0)), f)
    flips = AugmentConfig(flips=True, rot90=True, affine_degrees=0, affine_scale=0, affine_translate=0)
    seen = {FeatureAugment(flips)(f, np.random.default_rng(s)).flatten()[:3].tolist().__repr__() for s in range(40)}
    assert len(seen) == 8  # the 8 symmetries of a square map: every flip and quarter turn, and no other change
    warp = AugmentConfig()
    a = FeatureAugment(warp)(f, np.random.default_rng(3))
    assert a.shape == f.shape and torch.equal(a, FeatureAugment(warp)(f, np.random.default_rng(3)))
    assert not torch.equal(a, f) and float(a.min()) >= float(f.min()) - 1e-4 and float(a.max()) <= float(f.max()) + 1e-4


def test_a_dfc_trained_on_cached_features_is_an_ordinary_dfc(prepared_run: Path, tmp_path: Path):
    """Trained and validated on the cache, the saved DFC, run on the images, gives the validation figures the trainer
    logged for its epoch (up to the cache's float16); a backbone with nothing frozen says so and trains on images."""
    index = prepared_run / "prepare" / "index.csv"
    cfg = config("classifier.epochs=2", "classifier.backbone.freeze=1", "classifier.cache_features=true")
    trainer = classifier_trainer(cfg, index, tmp_path / "cached", echo=lambda *_: None)
    assert trainer.split is not None
    f = trainer.train_set[0]["image"]
    assert f.shape[-2:] == tuple(s // trainer.split.stride for s in cfg.classifier.input_size)
    trainer.fit()
    model, meta = load_dfc(tmp_path / "cached")
    lines = (tmp_path / "cached" / "metrics.csv").read_text().splitlines()
    rows = [dict(zip(lines[0].split(","), line.split(","), strict=True)) for line in lines[1:]]
    kept = next(r for r in rows if int(r["epoch"]) == meta["epoch"])
    images = classifier_trainer(config("classifier.epochs=1"), index, tmp_path / "plain", echo=lambda *_: None)
    _, _, loss = score_dataset(model, images.val_set)
    assert loss == pytest.approx(float(kept["val_loss"]), rel=2e-2, abs=1e-3)

    log: list[str] = []
    classifier_trainer(
        config("classifier.epochs=1", "classifier.cache_features=true"), index, tmp_path / "no", log.append
    )
    assert any("cache_features off" in line and "frozen" in line for line in log)


def test_training_on_images_runs_the_frozen_prefix_image_by_image_with_the_whole_models_gradients(
    prepared_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Without the cache, the trainer's forward pass runs the frozen prefix chunk by chunk without gradients: its
    outputs, loss and every trainable parameter's gradient are the whole DFC's on the same batch."""
    index = prepared_run / "prepare" / "index.csv"
    trainer = classifier_trainer(
        config("classifier.epochs=1", "classifier.backbone.freeze=1"), index, tmp_path / "c", echo=lambda *_: None
    )
    assert isinstance(trainer.net, PrefixFirstDFC)
    trainer.net.train()
    x = torch.stack([trainer.train_set[i]["image"] for i in range(3)])
    monkeypatch.setattr(chunked_module, "CPU_PIXELS", x.shape[-2] * x.shape[-1])  # one image per chunk

    def loss_and_grads(net: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        trainer.model.zero_grad(set_to_none=True)
        out = net(x)
        loss = out.logits.square().sum() + out.cams.mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    assert forward_chunked_sizes(x) == 3  # the batch really is split
    loss_p, grads_p = loss_and_grads(trainer.net)
    loss_w, grads_w = loss_and_grads(trainer.model)
    torch.testing.assert_close(loss_p, loss_w, rtol=1e-5, atol=1e-5)
    assert grads_p.keys() == grads_w.keys() and any(n.startswith("backbone.") for n in grads_w)
    for name, grad in grads_w.items():
        torch.testing.assert_close(grads_p[name], grad, rtol=1e-4, atol=1e-5)
    # the frozen stages got no gradient and kept their statistics
    assert all(p.grad is None for m in trainer.model.backbone.frozen for p in m.parameters(recurse=False))


def forward_chunked_sizes(x: torch.Tensor) -> int:
    """How many chunks forward_chunked splits ``x`` into on a CPU."""
    calls: list[int] = []
    forward_chunked(lambda c: calls.append(len(c)) or c, x)
    return len(calls)


def test_a_feature_store_computes_the_features_once_for_members_with_the_same_frozen_stages(
    prepared_run: Path, tmp_path: Path
):
    """Trainers given one store reuse its features when their frozen prefix holds the same weights (the ensemble's
    members with pretrained frozen stages), and compute their own when it does not (random init of another seed)."""
    index = prepared_run / "prepare" / "index.csv"
    cfg = config("classifier.epochs=1", "classifier.backbone.freeze=1", "classifier.cache_features=true")
    store = FeatureStore()
    first = classifier_trainer(cfg, index, tmp_path / "a", echo=lambda *_: None, feature_store=store)
    assert store.computed == 2  # the training and the validation images
    again = classifier_trainer(cfg, index, tmp_path / "b", echo=lambda *_: None, feature_store=store)
    assert store.computed == 2 and again.train_set.features is first.train_set.features
    alone = classifier_trainer(cfg, index, tmp_path / "c", echo=lambda *_: None)
    torch.testing.assert_close(alone.train_set.features, first.train_set.features)
    # another seed draws other random frozen stages (no pretrained weights here): its features are its own
    other = classifier_trainer(member_config(cfg, 1), index, tmp_path / "d", echo=lambda *_: None, feature_store=store)
    assert store.computed == 4
    assert not torch.equal(other.train_set.features, first.train_set.features)
