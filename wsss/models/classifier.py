"""The Defect Focus Classifier (METHOD.md section 1): backbone -> 1x1 CAM head -> log-sum-exp pooling.

The CAM head's score map *is* the class activation map, so CAM extraction at inference is one forward pass.
The CLM projection head embeds CAM-weighted foreground and background features for the contrastive loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import StageError
from wsss.models.backbone import create_backbone
from wsss.models.config import BackboneConfig
from wsss.models.model_dir import load_model_dir

MODEL_FILE = "dfc.safetensors"  # the trained DFC's state_dict
META_FILE = "dfc.json"  # what rebuilds it (model_meta)


def lse_pool(maps: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling ``(1/r) log(mean(exp(r A)))`` over the spatial dims, computed stably.

    ``maps`` is (B, K, h, w); returns (B, K). r -> 0 approaches the mean, r -> inf the max, so a small defect
    can drive the score without one hot pixel deciding alone.
    """
    if r <= 0:
        raise ValueError(f"lse_r must be > 0, got {r}")
    flat = maps.flatten(2)
    # ``peak + log(mean(exp(r (A - peak)))) / r``: the mean, not ``logsumexp - log(h w)``, so no size is baked into
    # a traced graph (the ONNX segmenter runs at any input size)
    peak = flat.amax(dim=2, keepdim=True)
    return peak.squeeze(2) + torch.log(torch.exp(r * (flat - peak)).mean(dim=2)) / r


class ProjectionHead(nn.Module):
    """CLM head g: a 2-layer MLP to ``dim``, L2-normalised."""

    def __init__(self, in_features: int, hidden: int = 256, dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


@dataclass
class DFCOutput:
    logits: torch.Tensor  # (B, K) sample scores before the sigmoid
    cams: torch.Tensor  # (B, K, h, w) class score maps (the CAMs, as logits)
    features: torch.Tensor  # (B, C, h, w) backbone features


class DFC(nn.Module):
    """Backbone + CAM head + LSE pooling (+ the CLM projection head when ``clm_dim`` > 0).

    Args:
        backbone: a module mapping (B, C_in, H, W) to (B, C, h, w), with an ``out_channels`` attribute.
        num_classes: K (1 for defect/OK).
        lse_r: pooling sharpness r.
        clm_dim, clm_hidden: projection head sizes; ``clm_dim=0`` builds no head.
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, lse_r: float = 5.0, clm_dim: int = 0, clm_hidden: int = 256
    ):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.lse_r = lse_r
        channels = int(backbone.out_channels)
        self.cam_head = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.projection = ProjectionHead(channels, clm_hidden, clm_dim) if clm_dim > 0 else None

    def forward(self, x: torch.Tensor) -> DFCOutput:
        return self.head(self.backbone(x))

    def head(self, features: torch.Tensor) -> DFCOutput:
        """The CAM head and pooling on the backbone's features (what :meth:`forward` does after the backbone)."""
        cams = self.cam_head(features)
        return DFCOutput(logits=lse_pool(cams.float(), self.lse_r), cams=cams, features=features)

    @staticmethod
    def defect_map(cams: torch.Tensor) -> torch.Tensor:
        """The per-pixel "any defect" score map (B, h, w): the class maps' maximum (the map itself when K=1)."""
        return cams.max(dim=1).values

    def embeddings(self, out: DFCOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CLM embeddings (z_fg, z_bg, z_img), each (B, dim).

        a = sigmoid(defect map), detached: z_fg = g(sum(a F) / sum(a)), z_bg = g(sum((1 - a) F) / sum(1 - a)),
        z_img = g(mean F). For several classes, a is the sigmoid of the maximum class map (our choice: CLM
        separates "defect" from "texture", whatever the defect type).
        """
        if self.projection is None:
            raise RuntimeError("this DFC was built without a CLM head (clm_dim=0)")
        f = out.features.float()
        a = torch.sigmoid(self.defect_map(out.cams.float())).detach().unsqueeze(1)  # (B, 1, h, w)
        eps = 1e-6
        fg = (a * f).sum((2, 3)) / (a.sum((2, 3)) + eps)
        bg = ((1 - a) * f).sum((2, 3)) / ((1 - a).sum((2, 3)) + eps)
        return self.projection(fg), self.projection(bg), self.projection(f.mean((2, 3)))


# --------------------------------------------------------------------------------------------- build and load
MEMBERS_DIR = "members"  # the ensemble's other members (classifier.ensemble): members/<k>/, k = 1..K-1
MEMBER_SEED_STEP = 10007  # member k trains with the classifier's seed + k * this: no two runs' seeds share a member


def member_dirs(model_dir: str | Path, ensemble: int) -> list[Path]:
    """The folders of an ensemble's ``ensemble`` DFCs: ``model_dir`` itself (member 0), then ``members/<k>``."""
    model_dir = Path(model_dir)
    return [model_dir] + [model_dir / MEMBERS_DIR / str(k) for k in range(1, ensemble)]


ENSEMBLE_FILE = "ensemble.json"  # classifier.ensemble_pick's record: every member's score and the member kept


def kept_member(model_dir: str | Path) -> int | None:
    """The member an ensemble keeps alone (``classifier.ensemble_pick``), or None where every member counts."""
    path = Path(model_dir) / ENSEMBLE_FILE
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text())["kept"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StageError(
            path, f"unreadable ensemble record ({e})", "re-run `wsss run-stage train-classifier --force`"
        ) from e
    if not isinstance(kept, int) or not 0 <= kept < ensemble_size(model_dir):
        raise StageError(
            path,
            f"kept member {kept!r} is not one of this folder's members",
            "re-run `wsss run-stage train-classifier --force`",
        )
    return kept


def main_member(model_dir: str | Path) -> Path:
    """The folder of the one DFC a consumer of a single classifier takes: the kept member, or member 0."""
    kept = kept_member(model_dir)
    return member_dirs(model_dir, ensemble_size(model_dir))[kept or 0]


def ensemble_size(model_dir: str | Path) -> int:
    """How many DFCs a `train-classifier` folder holds: member 0 and each ``members/<k>`` with a ``dfc.json``."""
    k = 1
    while (Path(model_dir) / MEMBERS_DIR / str(k) / META_FILE).is_file():
        k += 1
    return k


def load_dfcs(
    model_dir: str | Path, device: str | torch.device = "cpu", output_stride: int = 0
) -> tuple[list[DFC], dict]:
    """Every trained DFC of a `train-classifier` folder (an ensemble's members, in order; each in eval mode), or the
    one member it keeps (``ensemble.json``), and the first one's meta. Members must agree on what the CAM stage relies
    on (classes, channels, input size, stride). ``output_stride`` (:func:`load_dfc`) rebuilds each at another
    stride."""
    dirs = member_dirs(model_dir, ensemble_size(model_dir))
    kept = kept_member(model_dir)
    if kept is not None:
        dirs = [dirs[kept]]
    models, metas = [], []
    for d in dirs:
        model, meta = load_dfc(d, device, output_stride)
        models.append(model)
        metas.append(meta)
    same = ("classes", "in_chans", "input_size", "stride")
    for d, meta in zip(dirs[1:], metas[1:], strict=True):
        if any(meta[k] != metas[0][k] for k in same):
            raise StageError(
                d / META_FILE,
                f"this ensemble member's {', '.join(same)} differ from member 0's",
                "re-run `wsss run-stage train-classifier --force`",
            )
    return models, metas[0]


def load_dfc(
    model_dir: str | Path, device: str | torch.device = "cpu", output_stride: int = 0
) -> tuple[DFC, dict[str, Any]]:
    """The trained DFC in ``model_dir`` (``dfc.safetensors`` + ``dfc.json``), in eval mode, and its meta.

    ``output_stride`` > 0 rebuilds it at that output stride (the same weights, its deeper stages dilated or
    un-dilated: a finer map from the network as trained, ``cam.output_stride``); its meta's ``stride`` is then the
    rebuilt network's. A stride at which the network keeps other stages (one timm cannot dilate) fails to load."""

    def build(meta: dict[str, Any]) -> DFC:
        clm = meta["clm"]
        bcfg = BackboneConfig(**meta["backbone"])
        if output_stride:
            bcfg.output_stride = output_stride
        backbone = create_backbone(bcfg, int(meta["in_chans"]))
        dim = clm["dim"] if clm["enabled"] else 0
        return DFC(backbone, len(meta["classes"]), float(meta["lse_r"]), dim, clm["hidden"])

    fix = (
        f"set cam.output_stride to 0 (the stride it was trained at) or retrain it at {output_stride}"
        if output_stride
        else "re-run `wsss run-stage train-classifier --force`"
    )
    model, meta = load_model_dir(model_dir, META_FILE, MODEL_FILE, build, "the classifier", fix, device)
    return model, meta | {"stride": int(model.backbone.stride)}  # the trained one's, or the rebuilt one's
