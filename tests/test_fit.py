"""`dataset.fit`: how an image meets a network's input size. Stretched it fills the input (the old way, unchanged);
padded it keeps its aspect ratio, centred on a flat fill, and what a network computes on the padding is cut away."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.data.transforms import fit_image, fit_mask, placement, resize, unfit

IGNORE = 255


def test_stretching_is_the_plain_resize():
    img = np.random.default_rng(0).integers(0, 255, (30, 70), dtype=np.uint8)
    assert np.array_equal(fit_image(img, (32, 32), "stretch"), resize(img, (32, 32)))
    where = placement(img.shape, (32, 32), "stretch")
    assert not where.padded and (where.y0, where.x0, where.y1, where.x1) == (0, 0, 32, 32)


@pytest.mark.parametrize(("shape", "size"), [((30, 90), (64, 64)), ((120, 40), (64, 96)), ((50, 50), (64, 128))])
def test_padding_keeps_the_aspect_ratio_centred_on_the_images_mean(shape, size):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 200, (*shape, 3), dtype=np.uint8)
    out = fit_image(img, size, "pad")
    where = placement(img.shape, size, "pad")
    assert out.shape == (*size, 3) and out.dtype == np.uint8 and where.padded
    rh, rw = where.y1 - where.y0, where.x1 - where.x0
    assert rh / rw == pytest.approx(shape[0] / shape[1], rel=0.05)  # the part is not stretched
    assert rh == size[0] or rw == size[1]  # as large as fits
    assert abs(where.y0 - (size[0] - where.y1)) <= 1 and abs(where.x0 - (size[1] - where.x1)) <= 1  # centred
    assert np.array_equal(out[where.y0 : where.y1, where.x0 : where.x1], resize(img, (rh, rw)))
    pad = np.ones(size, bool)
    pad[where.y0 : where.y1, where.x0 : where.x1] = False
    mean = np.rint(img.reshape(-1, 3).mean(0))
    assert pad.any() and np.all(out[pad] == mean)


def test_a_padded_mask_is_ignore_outside_the_image_and_maps_come_back_to_the_image():
    shape, size = (40, 120), (64, 64)
    mask = np.zeros(shape, np.uint8)
    mask[10:20, 30:90] = 1
    fitted = fit_mask(mask, size, "pad", shape, IGNORE)
    where = placement(shape, size, "pad")
    inner = fitted[where.y0 : where.y1, where.x0 : where.x1]
    assert set(np.unique(inner)) == {0, 1} and (fitted == IGNORE).sum() == fitted.size - inner.size
    # a map drawn on the padded input, at the input's size or a network's coarser one, returns to the image's size
    # with the image's content where it was
    x = torch.from_numpy((fitted == 1).astype(np.float32))[None, None]
    back = unfit(x, where, shape)
    assert back.shape[-2:] == shape
    found = back[0, 0].numpy() > 0.5
    assert (found & (mask == 1)).sum() / (found | (mask == 1)).sum() > 0.8  # in its place, at its size
    coarse = torch.nn.functional.avg_pool2d(x, 8)
    back8 = unfit(coarse, where, shape)[0, 0].numpy()
    assert back8[mask == 1].mean() > 3 * back8[mask == 0].mean()
    # stretched, unfit is the plain bilinear resize
    m = torch.rand(1, 2, 8, 8)
    torch.testing.assert_close(
        unfit(m, placement(shape, size), shape),
        torch.nn.functional.interpolate(m, size=shape, mode="bilinear", align_corners=False),
    )


def test_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="fit must be one of"):
        placement((10, 10), (8, 8), "crop")
