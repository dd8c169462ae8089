"""Reading images and masks: modes, conversions, and every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from wsss.data.images import probe_image, read_image, read_mask
from wsss.errors import DataError


def gray(h: int = 12, w: int = 16) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)


def test_gray_png_as_is(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), gray())
    a = read_image(tmp_path / "a.png")
    assert a.dtype == np.uint8 and a.shape == (12, 16)
    np.testing.assert_array_equal(a, gray())
    info = probe_image(tmp_path / "a.png")
    assert (info.width, info.height, info.channels, info.mode, info.converted) == (16, 12, 1, "L", None)


def test_rgb_kept_in_rgb_order(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "c.png")
    a = read_image(tmp_path / "c.png")
    assert a.shape == (8, 8, 3) and a[0, 0].tolist() == [200, 0, 0]
    assert probe_image(tmp_path / "c.png").channels == 3


def test_rgb_with_equal_channels_becomes_gray(tmp_path: Path) -> None:
    Image.fromarray(np.stack([gray()] * 3, -1)).save(tmp_path / "g.png")
    a = read_image(tmp_path / "g.png")
    assert a.shape == (12, 16)
    np.testing.assert_array_equal(a, gray())
    assert "grayscale" in probe_image(tmp_path / "g.png").converted


def test_alpha_dropped(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 90, 0  # fully transparent green: colour kept, alpha dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [0, 90, 0]
    assert probe_image(tmp_path / "a.png").converted == "RGBA -> RGB (alpha dropped)"
    Image.fromarray(np.stack([gray(), gray()], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), gray())
    assert "alpha dropped" in probe_image(tmp_path / "la.png").converted


def test_palette_gray_and_colour(tmp_path: Path) -> None:
    im = Image.fromarray(gray()).convert("P")  # a gray palette
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(tmp_path / "pg.png")
    assert read_image(tmp_path / "pg.png").shape == (12, 16)
    assert probe_image(tmp_path / "pg.png").converted == "gray palette -> grayscale"
    im.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    im.save(tmp_path / "pc.png")
    assert read_image(tmp_path / "pc.png").shape == (12, 16, 3)
    assert probe_image(tmp_path / "pc.png").converted == "palette -> RGB"


def test_bilevel(tmp_path: Path) -> None:
    Image.fromarray(gray() > 100).save(tmp_path / "b.png")
    assert set(np.unique(read_image(tmp_path / "b.png")).tolist()) == {0, 255}


def test_16bit_refused_then_scaled(tmp_path: Path) -> None:
    a = np.array([[0, 257, 65535, 4095]], np.uint16).repeat(4, 0)
    cv2.imwrite(str(tmp_path / "d.png"), a)
    with pytest.raises(DataError) as e:
        read_image(tmp_path / "d.png")
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "d.png")) and "16-bit image" in msg
    assert "convert it to an 8-bit PNG" in msg and "dataset.high_bit_depth: scale" in msg
    out = read_image(tmp_path / "d.png", high_bit_depth="scale")
    assert out.dtype == np.uint8 and out[0].tolist() == [0, 1, 255, 16]
    assert probe_image(tmp_path / "d.png", "scale").converted == "16-bit -> 8-bit (value / 257)"


def test_int_mode_with_8bit_values_is_read(tmp_path: Path) -> None:
    Image.fromarray(gray().astype(np.int32), "I").save(tmp_path / "i.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif"), gray())


def test_float_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: 32-bit float image \(mode F\) \(convert it to an 8-bit PNG\)"):
        read_image(tmp_path / "f.tif")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_truncated(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / f"t{ext}"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / f"t{ext}").read_bytes()
    (tmp_path / f"t{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        probe_image(tmp_path / f"t{ext}")
    assert (
        str(e.value)
        == f"{tmp_path / f't{ext}'}: truncated image file (re-copy the file from the original source, or remove it from the dataset)"
    )
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_zero_byte_garbage_and_missing(tmp_path: Path) -> None:
    (tmp_path / "z.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"z\.png: empty file \(0 bytes\) \(re-copy"):
        read_image(tmp_path / "z.png")
    (tmp_path / "g.jpg").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=r"g\.jpg: not a readable image .*\(re-copy"):
        read_image(tmp_path / "g.jpg")
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_mask_threshold_and_channels(tmp_path: Path) -> None:
    m = np.array([[0, 1, 127, 128, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), m)
    assert read_mask(tmp_path / "m.png", 128).tolist() == [[False, False, False, True, True]]
    assert read_mask(tmp_path / "m.png", 1).tolist() == [[False, True, True, True, True]]
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 1, 2], rgb[0, 2, 0] = 200, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_mask(tmp_path / "c.png", 100).tolist() == [[False, True, False]]  # max over channels
    cv2.imwrite(str(tmp_path / "d.png"), np.array([[0, 1, 300]], np.uint16))
    assert read_mask(tmp_path / "d.png", 128).tolist() == [[False, True, True]]  # 16-bit: non-zero = 255


def test_mask_size_mismatch(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros((10, 20), np.uint8))
    assert read_mask(tmp_path / "m.png", 1, size=(20, 10)).shape == (10, 20)
    with pytest.raises(DataError) as e:
        read_mask(tmp_path / "m.png", 1, size=(21, 10), image=tmp_path / "img.jpg")
    assert str(e.value).startswith(f"{tmp_path / 'm.png'}: mask is 20x10 (WxH) but its image img.jpg is 21x10 (")
    assert "give the mask exactly its image's size" in str(e.value)
