"""Backbone factory: output stride, fallbacks, local weights (safetensors / .pth), no network."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from wsss.config import BackboneConfig
from wsss.errors import ConfigError
from wsss.models import backbone as bb
from wsss.models.backbone import Backbone, create_backbone
from wsss.models.state import load_state_dict_file, save_state_dict

NAME = "resnet10t"  # output-stride checks on a real ResNet
TINY = "test_resnet"  # timm's tiny ResNet (0.4M parameters) for the weights tests


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convs gain nothing from threads and suffer when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _x(chans: int = 1, size: int = 64) -> torch.Tensor:
    return torch.randn(2, chans, size, size, generator=torch.Generator().manual_seed(0))


def _eval_out(model: Backbone, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_resnet_output_stride(stride: int) -> None:
    b = create_backbone(BackboneConfig(weights=None, name=NAME, output_stride=stride), in_chans=1)
    y = _eval_out(b, _x())
    assert b.stride == stride and b.out_channels == 512
    assert y.shape == (2, 512, 64 // stride, 64 // stride)
    with torch.no_grad():
        stages = b.forward_stages(_x())
    assert len(stages) == len(b.reductions) == 5 and max(b.reductions) == stride
    assert [s.shape[1] for s in stages] == b.channels
    assert torch.equal(stages[-1], y)


def test_in_chans_override_and_grayscale() -> None:
    gray = create_backbone(BackboneConfig(weights=None, name=NAME), in_chans=1)
    assert gray.in_chans == 1 and gray(_x(1)).shape[1] == 512
    rgb = create_backbone(BackboneConfig(weights=None, name=NAME, in_chans=3), in_chans=1)
    assert rgb.in_chans == 3 and rgb(_x(3)).shape == (2, 512, 4, 4)


@pytest.mark.parametrize("name", ["ghostnet_050", "test_mambaout"])
def test_no_output_stride_falls_back_to_earlier_stage(name: str) -> None:
    with pytest.raises((TypeError, AssertionError)):  # timm cannot dilate these models
        timm.create_model(name, features_only=True, output_stride=8)
    b = create_backbone(BackboneConfig(weights=None, name=name, output_stride=8), in_chans=1)
    y = b(_x())
    assert b.stride == 8 and max(b.reductions) == 8
    assert y.shape == (2, b.out_channels, 8, 8)  # test_mambaout is channels-last inside timm: permuted to NCHW


def test_no_stage_fine_enough_warns() -> None:
    with pytest.warns(UserWarning, match="no stage has output stride <= 8"):
        b = create_backbone(BackboneConfig(weights=None, name="test_vit", output_stride=8), in_chans=1)
    assert b.stride == 16 and b(_x()).shape == (2, b.out_channels, 4, 4)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ConfigError, match="resnet18") as e:
        create_backbone(BackboneConfig(weights=None, name="resnet181"), in_chans=1)
    assert e.value.where == "classifier.backbone.name" and "unknown timm model" in e.value.what


def test_bad_output_stride() -> None:
    with pytest.raises(ConfigError, match="output_stride"):
        create_backbone(BackboneConfig(weights=None, name=NAME, output_stride=4), in_chans=1)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pth-wrapped"])
def test_weights_round_trip(tmp_path: Path, suffix: str) -> None:
    plain = timm.create_model(TINY, pretrained=False, in_chans=1).eval()
    sd = plain.state_dict()
    assert "fc.weight" in sd  # the classifier head travels in the file and is ignored
    path = tmp_path / f"w{suffix.split('-')[0]}"
    if suffix.endswith("wrapped"):
        torch.save({"state_dict": sd, "epoch": 3}, path)
    else:
        save_state_dict(plain, path)
    cfg = BackboneConfig(name=TINY, output_stride=32, weights=str(path))
    b1, b2 = create_backbone(cfg, 1), create_backbone(cfg, 1)
    x = _x()
    with torch.no_grad():
        ref = plain.forward_features(x)
    assert torch.equal(_eval_out(b1, x), _eval_out(b2, x))
    torch.testing.assert_close(_eval_out(b1, x), ref)


def test_weights_from_a_backbone_or_a_model_holding_one(tmp_path: Path) -> None:
    src = create_backbone(BackboneConfig(weights=None, name=TINY, output_stride=8), 1)
    holder = nn.Module()  # like the DFC: a backbone plus heads of its own
    holder.backbone, holder.cam_head = src, nn.Conv2d(96, 1, 1)
    save_state_dict(src, tmp_path / "backbone.safetensors")
    save_state_dict(holder, tmp_path / "dfc.safetensors")
    for name in ("backbone.safetensors", "dfc.safetensors"):
        b = create_backbone(BackboneConfig(name=TINY, output_stride=8, weights=str(tmp_path / name)), 1)
        assert torch.equal(_eval_out(b, _x()), _eval_out(src, _x()))


def test_rgb_weights_into_grayscale_model(tmp_path: Path) -> None:
    rgb = timm.create_model(TINY, pretrained=False, in_chans=3).eval()
    save_state_dict(rgb, tmp_path / "rgb.safetensors")
    gray = create_backbone(BackboneConfig(name=TINY, output_stride=32, weights=str(tmp_path / "rgb.safetensors")), 1)
    assert gray.model.state_dict()["conv1.0.weight"].shape[1] == 1
    x = _x(1)
    with torch.no_grad():
        ref = rgb.forward_features(x.repeat(1, 3, 1, 1))
    torch.testing.assert_close(_eval_out(gray, x), ref, atol=1e-4, rtol=1e-4)


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    save_state_dict(timm.create_model("test_convnext", in_chans=1), tmp_path / "other.safetensors")
    cfg = BackboneConfig(name=TINY, weights=str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="state_dict of test_resnet") as e:
        create_backbone(cfg, 1)
    assert e.value.where == "classifier.backbone.weights"
    assert "75 missing: conv1.0.weight" in e.value.what and "97 unexpected: stages.0" in e.value.what


def test_mismatched_shape(tmp_path: Path) -> None:
    sd = timm.create_model(TINY, in_chans=1).state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(3, 3)
    save_state_dict(sd, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"1 mismatched: layer1\.0\.conv1\.weight \(3, 3\) != \(32, 32, 3, 3\)"):
        create_backbone(BackboneConfig(name=TINY, weights=str(tmp_path / "bad.pth")), 1)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ConfigError, match="weights file not found: .*nope.safetensors"):
        create_backbone(BackboneConfig(name=TINY, weights=str(missing)), 1)
    for name in ("junk.safetensors", "junk.pth"):
        (tmp_path / name).write_bytes(b"not a weights file")
        with pytest.raises(ConfigError, match="cannot read"):
            load_state_dict_file(tmp_path / name)
    torch.save({"lr": 0.1}, tmp_path / "opts.pth")
    with pytest.raises(ConfigError, match="holds no state_dict"):
        load_state_dict_file(tmp_path / "opts.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module is refused by weights_only=True
    with pytest.raises(ConfigError, match="cannot read"):
        load_state_dict_file(tmp_path / "module.pt")


def test_save_is_atomic_and_handles_shared_tensors(tmp_path: Path) -> None:
    w = torch.randn(4, 4)
    sd = {"a": w, "b": w, "c": w[:2]}  # shared storage: safetensors.save_file alone would refuse
    for name in ("s.safetensors", "s.pth"):
        save_state_dict(sd, tmp_path / "sub" / name)
        back = load_state_dict_file(tmp_path / "sub" / name)
        assert set(back) == {"a", "b", "c"} and torch.equal(back["c"], w[:2])
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["s.pth", "s.safetensors"]  # no temp files left


def test_no_network_during_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_state_dict(timm.create_model(TINY, in_chans=1), tmp_path / "w.safetensors")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(timm.models, "load_pretrained", refuse)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    try:
        import huggingface_hub
    except ImportError:  # optional dependency of timm
        huggingface_hub = None
    if huggingface_hub is not None:
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    b = create_backbone(BackboneConfig(name=TINY, weights=str(tmp_path / "w.safetensors")), 1)
    assert b(_x()).shape == (2, 96, 4, 4)


def test_forward_features_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    create = timm.create_model

    def no_features(name: str, **kwargs: object) -> nn.Module:
        if kwargs.get("features_only"):
            raise RuntimeError(f"features_only not implemented for {name}")
        return create(name, **kwargs)

    monkeypatch.setattr(bb.timm, "create_model", no_features)
    vit = create_backbone(BackboneConfig(weights=None, name="test_vit"), 1)  # tokens reshaped to the 16 px patch grid
    assert vit.stride == 16 and vit(_x()).shape == (2, vit.out_channels, 4, 4)
    cnn = create_backbone(BackboneConfig(weights=None, name=NAME), 1)
    assert cnn.stride == 32 and cnn(_x()).shape == (2, 512, 2, 2)

    class Pooled(nn.Module):  # forward_features that gives no spatial map
        pretrained_cfg = {"input_size": (1, 32, 32)}

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    def pooled(name: str, **kwargs: object) -> nn.Module:
        if kwargs.get("features_only"):
            raise RuntimeError(f"features_only not implemented for {name}")
        return Pooled()

    monkeypatch.setattr(bb.timm, "create_model", pooled)
    with pytest.raises(ConfigError, match="choose a CNN backbone"):
        create_backbone(BackboneConfig(weights=None, name=NAME), 1)


def test_reflect_padding_changes_only_how_borders_are_filled() -> None:
    torch.manual_seed(0)
    zeros = create_backbone(BackboneConfig(weights=None, name="resnet10t", output_stride=16), in_chans=1)
    reflect = create_backbone(
        BackboneConfig(weights=None, name="resnet10t", output_stride=16, padding="reflect"), in_chans=1
    )
    reflect.load_state_dict(zeros.state_dict())  # same parameters: pretrained weights load unchanged
    convs = [m for m in reflect.modules() if isinstance(m, nn.Conv2d) and max(m.padding) > 0]
    assert convs and all(m.padding_mode == "reflect" for m in convs)
    x, flat = torch.rand(1, 1, 64, 64), torch.full((1, 1, 64, 64), 0.5)
    with torch.no_grad():
        a, b = _eval_out(zeros, x), _eval_out(reflect, x)
        assert a.shape == b.shape == (1, zeros.out_channels, 4, 4)
        assert not torch.allclose(a, b)  # the border is filled differently...
        # ...and only when the border continues the image does a uniform image give a uniform map
        r, z = _eval_out(reflect, flat), _eval_out(zeros, flat)
    assert (r[..., 0, 0] - r[..., 1, 1]).abs().max() < 1e-4
    assert (z[..., 0, 0] - z[..., 1, 1]).abs().max() > 1e-3
