"""The CRF's unary source (METHOD.md 7a): the extended CAM, the anomaly map, or their fusion (``pseudo.unary``).

Both maps are in [0, 1] by dataset-level normalisation (the CAM by the cam stage's scale, the anomaly map by
``anomaly.json``'s lo/hi), so they combine without per-image rescaling:

- ``cam``: the CAM as is (the method without anomaly priors);
- ``anomaly``: the anomaly map, which is class-agnostic: with several classes each pixel goes to the class whose CAM
  is highest there (the strongest class overall where every CAM is 0), so a class the classifier gated off (all-zero
  CAM) gets nothing;
- ``fusion``: per class, ``geometric``: ``cam^(1-w) * anomaly^w`` (``w = pseudo.anomaly_weight``; a pixel must be
  both where the classifier looks and unlike the normal texture), or ``product``: ``cam * anomaly``.

An image the classifier calls OK stays empty whatever its anomaly map says: the gate is applied by the labelling
rule (:func:`wsss.refine.pseudo.label_image`) as before.
"""

from __future__ import annotations

import numpy as np

from wsss.refine.config import PseudoConfig


def anomaly_by_class(cam: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    """The (H, W) anomaly map spread over the (K, H, W) CAM's classes (see the module docstring)."""
    k = cam.shape[0]
    if k == 1:
        return anomaly[None] * float(cam.max() > 0)
    active = cam.reshape(k, -1).max(1) > 0
    owner = np.where(cam.max(0) > 0, cam.argmax(0), int(cam.reshape(k, -1).max(1).argmax()))
    out = np.zeros_like(cam, dtype=np.float32)
    for c in np.flatnonzero(active):
        out[c] = np.where(owner == c, anomaly, 0.0)
    return out


def unary_map(cam: np.ndarray, anomaly: np.ndarray | None, cfg: PseudoConfig) -> np.ndarray:
    """The (K, H, W) map in [0, 1] the labelling rule turns into CRF unaries, from a (K, H, W) CAM and an (H, W)
    normalised anomaly map (needed unless ``cfg.unary`` is ``cam``)."""
    if cfg.unary == "cam":
        return cam
    if anomaly is None:
        raise ValueError(f"pseudo.unary={cfg.unary} needs an anomaly map")
    if anomaly.shape != cam.shape[1:]:
        raise ValueError(f"anomaly map {anomaly.shape} does not match the CAM {cam.shape[1:]}")
    spread = anomaly_by_class(cam, anomaly.astype(np.float32))
    if cfg.unary == "anomaly":
        return spread
    cam = cam.astype(np.float32)
    if cfg.fusion == "product":
        return cam * spread
    w = cfg.anomaly_weight
    return np.power(cam, 1.0 - w) * np.power(spread, w)
