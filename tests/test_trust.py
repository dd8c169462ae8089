"""Files wsss writes respect the umask; names from outside cannot break the formats they are written into."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch

from wsss.export.html import script_json, write_page
from wsss.models.state import save_state_dict


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


def test_a_stage_weights_file_changed_at_its_size_and_time_is_refused_before_use(tmp_path: Path):
    """The hash is checked whenever a stage's own weights are loaded: a same-size rewrite that even keeps the file's
    time is caught, with the file and the command that redoes the stage."""
    import json

    import pytest

    from wsss.errors import StageError
    from wsss.models.state import load_trained_state
    from wsss.runs import hash_outputs

    stage = tmp_path / "train-segmenter"
    model = torch.nn.Linear(4, 2)
    weights = save_state_dict(model, stage / "segmenter.safetensors")
    files, digest = hash_outputs(stage)
    manifest = {"stage": "train-segmenter", "status": "done", "files": files, "digest": digest}
    (stage / "manifest.json").write_text(json.dumps(manifest))
    load_trained_state(torch.nn.Linear(4, 2), weights, "fix")  # intact: loads
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one weight's last byte
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(StageError, match=r"run-stage train-segmenter --force") as e:
        load_trained_state(torch.nn.Linear(4, 2), weights, "fix")
    assert str(weights) in str(e.value) and "sha256" in str(e.value)


def test_a_folder_dataset_says_which_files_it_reads_through_links_out_of_its_root(tmp_path: Path):
    import cv2
    import numpy as np
    from click.testing import CliRunner

    from wsss.cli import cli

    rng = np.random.default_rng(0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for cls in ("ok", "scratch"):
        (tmp_path / "parts" / cls).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(tmp_path / "parts" / cls / f"{i}.png"), rng.integers(0, 255, (32, 48), dtype=np.uint8))
    cv2.imwrite(str(outside / "far.png"), rng.integers(0, 255, (32, 48), dtype=np.uint8))
    (tmp_path / "parts" / "scratch" / "linked.png").symlink_to(outside / "far.png")
    r = CliRunner().invoke(
        cli, ["init", "--kind", "folder", "--root", str(tmp_path / "parts"), "--out", str(tmp_path / "r.yaml")]
    )
    assert r.exit_code == 0, r.output
    assert "1 file(s) are symbolic links to files outside the dataset root" in r.output and "far.png" in r.output


def test_every_file_a_full_run_wrote_has_the_umasks_mode(full_run):
    """Weights, masks, CAMs, tables, manifests, the review package: every kind of file a run writes (the session
    fixture ran under this process's umask)."""
    run_dir, _ = full_run
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    files = [p for p in run_dir.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    kinds = {p.suffix for p in files}
    assert {".safetensors", ".png", ".json", ".csv"} <= kinds, kinds
    wrong = {str(p.relative_to(run_dir)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    wrong = {k: v for k, v in wrong.items() if v != oct(want)}
    assert not wrong, wrong
