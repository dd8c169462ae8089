"""Forward passes in CPU-sized chunks (wsss/models/chunked.py): the same outputs as one batch, in order."""

from __future__ import annotations

import torch

import wsss.models.chunked as chunked
from wsss.models.segmenter import SegmenterOutput


def test_chunks_give_the_whole_batchs_outputs_in_order(monkeypatch):
    monkeypatch.setattr(chunked, "CPU_PIXELS", 2 * 8 * 8)  # two 8 x 8 images per chunk
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3)).eval()
    x = torch.randn(5, 1, 8, 8)
    sizes = []

    def fn(t: torch.Tensor) -> SegmenterOutput:
        sizes.append(len(t))
        y = net(t)
        return SegmenterOutput(mask_logits=y, cls_logits=y.mean((2, 3)))

    with torch.no_grad():
        out, whole = chunked.forward_chunked(fn, x), net(x)
        assert sizes == [2, 2, 1]
        assert torch.allclose(out.mask_logits, whole, atol=1e-6) and out.cls_logits.shape == (5, 3)
        assert torch.allclose(chunked.forward_chunked(net, x), whole, atol=1e-6)  # a plain tensor output
        sizes.clear()
        chunked.forward_chunked(fn, torch.randn(2, 1, 8, 8))
        assert sizes == [2]  # a batch within the budget goes whole
