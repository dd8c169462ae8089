"""The `export` section: the review package's formats.

Loaded, checked and overridden by :mod:`wsss.config` (which re-exports every class here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsss.fields import (
    choices,
)


@dataclass
class ExportConfig:
    """`export`: the review package (overlays, index.html and the annotation tools' import files)."""

    masks: str = ""  # stage whose masks/ to review; empty = the pipeline's last mask-writing stage before export
    formats: list[str] = field(default_factory=lambda: ["png", "coco", "cvat", "labelstudio"])
    coco_mode: str = choices("rle", "polygon", default="rle")  # polygon: holes filled, tiny regions stay RLE
    image_prefix: str = "/data/local-files/?d="  # Label Studio image URL = this + images/<id>.<ext>
