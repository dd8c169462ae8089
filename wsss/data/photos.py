"""Real surface photographs as defect-free parts: the grayscale texture photographs that ship inside scikit-image's
wheel (``brick``, ``gravel``, ``grass``: 512 x 512, read from the installed package, never downloaded).

Each OK part is a random crop of one photograph (a random scale, so grain sizes vary), flipped and rotated by a
multiple of 90 degrees, resized to the image size, with its contrast set to ``PHOTO_STD``, a random brightness and an
illumination gradient. Generation is deterministic per random generator, as for the procedural textures.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
from skimage import data

PHOTOS = ("brick", "gravel", "grass")

# the crop's side as a fraction of the 512 px photograph: 0.25 keeps bricks whole and mortar lines thick enough to
# see at 128 px; 0.6 still leaves each photograph hundreds of distinct crops
CROP_FRACTION = (0.25, 0.6)
# standard deviation of the surface after the contrast change, gray levels: the photographs' own 26-39 hide the
# faint stains (peak change 18-30 levels) in the grain. At 6-10 the texture still reads as brick, gravel or grass and
# a non-learned detector (tests/test_synthetic.py's) tells defective from OK as well as on the procedural textures
# (AUROC gravel 0.92, grass 0.92, brick 0.76; procedural 0.90), against 0.80, 0.78, 0.60 at 10-16
PHOTO_STD = (6.0, 10.0)


@cache
def photograph(name: str) -> np.ndarray:
    """The scikit-image photograph ``name`` (uint8 grayscale), read from the installed wheel's data folder."""

    img = getattr(data, name)()
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def photo_field(rng: np.random.Generator, size: int, name: str) -> np.ndarray:
    """A zero-mean, unit-std float32 crop (size x size) of photograph ``name``: random scale, place, flip, rotation."""
    photo = photograph(name)
    side = int(rng.uniform(*CROP_FRACTION) * min(photo.shape))
    y, x = (int(rng.integers(0, n - side + 1)) for n in photo.shape)
    crop = photo[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.rot90(crop, int(rng.integers(4)))
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    field = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp).astype(np.float32)
    field -= field.mean()
    return field / (field.std() + 1e-6)
