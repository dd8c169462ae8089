"""Files wsss writes respect the umask; names from outside cannot break the formats they are written into."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch

from wsss.export.html import script_json, write_page
from wsss.models.backbone import save_state_dict


def test_weights_get_the_umasks_mode(tmp_path: Path):
    old = os.umask(0o022)
    try:
        for name in ("w.safetensors", "w.pt"):
            save_state_dict(torch.nn.Linear(2, 2), tmp_path / name)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    finally:
        os.umask(old)


def test_the_pages_json_survives_any_string():
    nasty = ["<!--<script>x", "</script><script>alert(1)</script>", "a & b > c", "line\u2028break\u2029", "ok"]
    text = script_json({"classes": nasty})
    assert json.loads(text) == {"classes": nasty}
    assert not any(c in text for c in "<>&\u2028\u2029")


def test_a_class_named_like_a_comment_does_not_end_the_pages_data_block(tmp_path: Path):
    name = "<!--<script>x"
    page = write_page(tmp_path / "index.html", [], [name, "scratch"], None, "run", {"run": {"name": "r"}})
    html = page.read_text()
    block = html.split('id="data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(block)["classes"] == [name, "scratch"]
    assert "<!--" not in block
