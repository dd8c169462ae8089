"""DFC model pieces: LSE pooling, CAM head, CLM embeddings and loss, GCM crops and consistency."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wsss.cam.gcm import crop_and_resize, crop_boxes
from wsss.models.classifier import DFC, lse_pool
from wsss.train.losses import gcm_consistency, supervised_infonce


class TinyBackbone(nn.Module):
    """Stride-4 conv stack standing in for a timm backbone."""

    out_channels = 8
    stride = 4

    def __init__(self, in_chans: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_chans, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def test_lse_pool_interpolates_between_mean_and_max():
    maps = torch.tensor([[[[0.0, 0.0], [0.0, 4.0]]]])
    assert lse_pool(maps, 1e-4).item() == pytest.approx(1.0, abs=1e-3)  # mean
    assert lse_pool(maps, 100.0).item() == pytest.approx(4.0 - math.log(4) / 100, abs=1e-6)  # ~max
    r = 2.0
    assert lse_pool(maps, r).item() == pytest.approx(math.log((3 + math.exp(8)) / 4) / r, rel=1e-6)
    assert torch.allclose(lse_pool(torch.full((2, 3, 5, 5), 1.5), 7.0), torch.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="lse_r must be > 0"):
        lse_pool(maps, 0.0)


def test_dfc_shapes_and_clm_embeddings():
    model = DFC(TinyBackbone(), num_classes=3, lse_r=5.0, clm_dim=16, clm_hidden=32)
    out = model(torch.randn(4, 1, 32, 32))
    assert out.logits.shape == (4, 3) and out.cams.shape == (4, 3, 8, 8) and out.features.shape == (4, 8, 8, 8)
    z_fg, z_bg, z_img = model.embeddings(out)
    for z in (z_fg, z_bg, z_img):
        assert z.shape == (4, 16) and torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    # the CAM weights a are detached: the CLM loss does not train the CAM head
    supervised_infonce(z_fg, z_bg, z_img, torch.tensor([1, 1, 0, 0]), 0.1).backward()
    assert model.cam_head.weight.grad is None or model.cam_head.weight.grad.abs().sum() == 0
    assert model.projection.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="without a CLM head"):
        DFC(TinyBackbone(), 1).embeddings(out)


def test_infonce_matches_hand_computation():
    tau = 0.5
    u, e1, e2 = torch.eye(3)
    z_fg = torch.stack([u, u, e1])  # two defective images share the same foreground embedding
    z_bg = torch.stack([e1, e2, e2])  # orthogonal to u
    z_img = torch.stack([e2, e2, e1])
    loss = supervised_infonce(z_fg, z_bg, z_img, torch.tensor([1, 1, 0]), tau)
    # each anchor: one positive at similarity 1, negatives = 3 z_bg + 1 OK z_img, all at similarity 0
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 4))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # foreground that looks like background is penalised more
    worse = supervised_infonce(torch.stack([u, e1, e1]), torch.stack([u, e1, e2]), z_img, torch.tensor([1, 1, 0]), tau)
    assert worse.item() > loss.item()


def test_infonce_needs_two_defective_images():
    z = torch.nn.functional.normalize(torch.randn(3, 4, requires_grad=True), dim=1)
    loss = supervised_infonce(z, z, z, torch.tensor([1, 0, 0]), 0.1)
    assert loss.item() == 0.0 and loss.requires_grad


def test_crop_boxes_follow_the_cam_peak_and_stay_inside():
    maps = torch.zeros(3, 8, 8)
    maps[0, 1, 6] = 5.0  # peak near the top right
    maps[1, 7, 0] = 5.0  # peak in the bottom-left corner
    boxes = crop_boxes(maps, torch.tensor([1, 1, 0]), (64, 64), crop_frac=0.5, jitter=0.0)
    assert torch.allclose(boxes[:, 2] - boxes[:, 0], torch.full((3,), 32.0))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
    peak0 = (6.5 * 8, 1.5 * 8)  # (x, y) of cell (1, 6) in pixels
    assert boxes[0, 0] <= peak0[0] <= boxes[0, 2] and boxes[0, 1] <= peak0[1] <= boxes[0, 3]
    assert boxes[0].tolist() == pytest.approx([32.0, 0.0, 64.0, 32.0])  # centred on the peak, shifted inside
    assert boxes[1].tolist() == pytest.approx([0.0, 32.0, 32.0, 64.0])


def test_ok_crops_are_random_but_reproducible():
    maps = torch.zeros(8, 4, 4)
    a = crop_boxes(maps, torch.zeros(8), (64, 64), 0.25, 0.1, torch.Generator().manual_seed(0))
    b = crop_boxes(maps, torch.zeros(8), (64, 64), 0.25, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a[:, 0].unique().numel() > 1


def test_crop_and_resize():
    img = torch.arange(64.0).reshape(1, 1, 8, 8)
    full = crop_and_resize(img, torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    assert torch.allclose(full, img, atol=1e-4)
    quarter = crop_and_resize(img, torch.tensor([[4.0, 4.0, 8.0, 8.0]]))
    # the bottom-right quadrant upsampled 2x, as F.interpolate would (borders sample the neighbouring pixel)
    ref = torch.nn.functional.interpolate(img[..., 4:, 4:], size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(quarter[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-4)


def test_gcm_consistency_is_zero_when_the_crop_agrees():
    full = torch.randn(2, 1, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 32.0, 32.0]])  # the whole 32 px image, stride 4
    assert gcm_consistency(full.clone(), full, boxes, scale=0.25).item() == pytest.approx(0.0, abs=1e-6)
    assert gcm_consistency(-full, full, boxes, scale=0.25).item() > 0.01
