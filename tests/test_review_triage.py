"""Triage in the review page: accept / reject decisions, their file, `import-review --format decisions`, and
rejected images out of the segmenter's mask loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_review import browser_page, visible_ids

from wsss.cli import cli
from wsss.config import ExportConfig
from wsss.export.review import build_review, run_source
from wsss.export.review_import import import_decisions, import_review
from wsss.labels import IGNORE


@pytest.fixture
def review_run(full_run, tmp_path: Path) -> Path:
    """A copy of the tiny full run's stages that review reads (imports write into it, never the shared run)."""
    run_dir, _ = full_run
    dst = tmp_path / "run"
    for stage in ("prepare", "cam", "retrain"):
        shutil.copytree(run_dir / stage, dst / stage)
    return dst


def export_package(run: Path, out: Path) -> dict[str, Any]:
    """Export ``run``'s retrain masks as a review package in ``out``; returns the page's embedded data."""
    build_review(run_source(run, "retrain"), out, ExportConfig(formats=["png"]))
    return json.loads((out / "index.html").read_text().split('id="data">', 1)[1].split("</script>", 1)[0])


def decisions_file(path: Path, header: dict[str, Any], decisions: dict[str, Any]) -> Path:
    """A decisions file as the page's "Download decisions" writes it: the page's header plus the decisions."""
    path.write_text(json.dumps({**header, "decisions": decisions}, indent=1) + "\n")
    return path


def import_cli(path: Path, run: Path):
    return CliRunner().invoke(cli, ["import-review", "--format", "decisions", str(path), "--run", str(run)])


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def corrected_import(run: Path, sid: str, tmp_path: Path) -> np.ndarray:
    """An earlier import of a mask corrected in a tool for ``sid`` (a rectangle, unlike its pseudo-mask)."""
    shape = read_png(run / "retrain" / "masks" / f"{sid}.png").shape
    corrected = np.zeros(shape, np.uint8)
    corrected[3:9, 5:17] = 1
    folder = tmp_path / "corrected"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / f"{sid}.png"), corrected)
    import_review("png", folder, run, "labels")
    return corrected


def test_page_decisions_import_as_human_masks_and_rejections(review_run: Path, tmp_path: Path):
    header = export_package(review_run, tmp_path / "pkg")["package"]
    assert header["format"] == "wsss-review-decisions" and header["version"] == 1 and header["masks"] == "retrain"
    assert header["run"]["name"] == "run" and len(header["run"]["masks_sha256"]) == 64
    pseudo = review_run / "retrain" / "masks"
    ids = sorted(p.stem for p in pseudo.glob("*.png"))
    corrected = corrected_import(review_run, ids[0], tmp_path)
    first = {ids[0]: "accept", ids[1]: "accept", ids[2]: "accept", ids[3]: "reject", ids[4]: "reject"}
    r = import_cli(decisions_file(tmp_path / "d1.json", header, first), review_run)
    assert r.exit_code == 0, r.output
    assert "2 accepted" in r.output and "2 rejected" in r.output and "1 kept their corrected mask" in r.output
    reviewed = review_run / "reviewed"
    assert np.array_equal(read_png(reviewed / "masks" / f"{ids[0]}.png"), corrected)  # the tool's mask wins
    for sid in ids[1:3]:
        assert np.array_equal(read_png(reviewed / "masks" / f"{sid}.png"), read_png(pseudo / f"{sid}.png")), sid
    assert not (reviewed / "masks" / f"{ids[3]}.png").exists() and not (reviewed / "masks" / f"{ids[4]}.png").exists()
    assert (reviewed / "rejected.txt").read_text() == f"{ids[3]}\n{ids[4]}\n"
    record = json.loads((reviewed / "reviewed.json").read_text())
    assert record[ids[0]]["format"] == "png" and record[ids[1]]["format"] == "decisions"
    # a later decision on an id replaces the earlier one; ids it does not decide keep theirs
    second = {ids[1]: "reject", ids[3]: "accept"}
    assert import_cli(decisions_file(tmp_path / "d2.json", header, second), review_run).exit_code == 0
    assert not (reviewed / "masks" / f"{ids[1]}.png").exists() and ids[1] not in record_of(reviewed)
    assert np.array_equal(read_png(reviewed / "masks" / f"{ids[3]}.png"), read_png(pseudo / f"{ids[3]}.png"))
    assert (reviewed / "rejected.txt").read_text() == f"{ids[1]}\n{ids[4]}\n"
    assert (reviewed / "masks" / f"{ids[2]}.png").is_file()
    corrected_import(review_run, ids[4], tmp_path / "later")  # a corrected mask replaces a rejection
    assert (reviewed / "rejected.txt").read_text() == f"{ids[1]}\n"


def record_of(reviewed: Path) -> dict[str, Any]:
    return json.loads((reviewed / "reviewed.json").read_text())


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown id", "not in the run's index: no_such_image"),
        ("stale", "stale: the masks of"),
        ("another stage", "has no masks of stage 'pseudo-labels'"),
        ("malformed", "malformed JSON"),
        ("not decisions", "not a wsss review decisions file"),
        ("version", "decisions file version 2"),
        ("unknown decision", "unknown decision 'maybe'"),
    ],
)
def test_bad_decisions_files_are_refused_and_write_nothing(review_run: Path, tmp_path: Path, case: str, expected):
    header = export_package(review_run, tmp_path / "pkg")["package"]
    ids = sorted(p.stem for p in (review_run / "retrain" / "masks").glob("*.png"))
    earlier = decisions_file(tmp_path / "earlier.json", header, {ids[0]: "accept", ids[1]: "reject"})
    import_decisions(earlier, review_run)  # an earlier import: the folder must stay as it was
    before = snapshot(review_run / "reviewed")
    decisions: dict[str, Any] = {ids[2]: "accept", ids[3]: "reject"}
    if case == "unknown id":
        decisions["no_such_image"] = "accept"
    elif case == "stale":  # the stage ran again since the export and wrote another mask
        mask = read_png(review_run / "retrain" / "masks" / f"{ids[5]}.png")
        cv2.imwrite(str(review_run / "retrain" / "masks" / f"{ids[5]}.png"), np.where(mask == 0, 1, 0).astype(np.uint8))
    elif case == "another stage":
        header = {**header, "masks": "pseudo-labels"}
    elif case == "version":
        header = {**header, "version": 2}
    elif case == "not decisions":
        header = {"images": [], "annotations": []}
    elif case == "unknown decision":
        decisions[ids[4]] = "maybe"
    path = decisions_file(tmp_path / "decisions.json", header, decisions)
    if case == "malformed":
        path.write_text(path.read_text()[:-20])
    r = import_cli(path, review_run)
    assert r.exit_code == 1, r.output
    assert str(path) in r.stderr and expected in r.stderr, r.stderr
    assert snapshot(review_run / "reviewed") == before and not (review_run / ".reviewed.tmp").exists()
    assert (review_run / "reviewed" / "rejected.txt").read_text() == f"{ids[1]}\n"


def test_decisions_take_no_mask_format(review_run: Path, tmp_path: Path):
    header = export_package(review_run, tmp_path / "pkg")["package"]
    path = decisions_file(tmp_path / "d.json", header, {})
    r = CliRunner().invoke(
        cli, ["import-review", "--format", "decisions", str(path), "--run", str(review_run), "--mask-format", "binary"]
    )
    assert r.exit_code == 2 and "a decisions file holds no masks" in r.stderr
    assert not (review_run / "reviewed").exists()


def test_a_rejected_image_contributes_no_mask_loss(review_run: Path, tmp_path: Path):
    from wsss.data.index import read_train_index
    from wsss.train.losses import segmentation_loss
    from wsss.train.segmenter_data import PseudoMaskDataset

    header = export_package(review_run, tmp_path / "pkg")["package"]
    rows = read_train_index(review_run / "prepare" / "index.csv", "train")
    masks = review_run / "retrain" / "masks"
    defective = [i for i, r in enumerate(rows) if r.defective and (read_png(masks / f"{r.id}.png") == 1).any()]
    rej, other = defective[0], next(i for i in range(len(rows)) if i != defective[0])
    import_decisions(decisions_file(tmp_path / "d.json", header, {rows[rej].id: "reject"}), review_run)
    shape = read_png(masks / f"{rows[0].id}.png").shape
    plain = PseudoMaskDataset(rows, masks, ["defect"], shape)
    ds = PseudoMaskDataset(rows, masks, ["defect"], shape, reviewed_dir=review_run / "reviewed" / "masks")
    assert (plain[rej]["mask"] != IGNORE).any()  # its pseudo-mask would train the mask head
    assert (ds[rej]["mask"] == IGNORE).all() and ds[rej]["reviewed"].item() == 0.0
    assert torch.equal(ds[rej]["target"], plain[rej]["target"]) and ds[rej]["target"].sum() == 1  # label kept
    assert torch.equal(ds[other]["mask"], plain[other]["mask"])
    logits = torch.randn(2, 2, *shape, requires_grad=True)
    segmentation_loss(logits, torch.stack([ds[rej]["mask"], ds[other]["mask"]])).backward()
    assert logits.grad is not None and not logits.grad[0].any() and logits.grad[1].any()


def test_triage_in_a_headless_browser(review_run: Path, tmp_path: Path):
    """From file://: accept by key, reject by button, counter, review filter, reload keeps them, the downloaded file
    is window.wsssDecisions() and imports."""
    data = export_package(review_run, tmp_path / "pkg")
    n = len(data["images"])
    with browser_page((tmp_path / "pkg" / "index.html").as_uri(), tmp_path / "profile") as (page, errors):
        order = visible_ids(page)
        assert len(order) == n and page.inner_text("#triage-count") == f"0 accepted · 0 rejected · {n} undecided of {n}"
        page.keyboard.press("j")  # focus the first card
        page.keyboard.press("a")  # accept it; focus moves on to the next
        assert page.evaluate("document.activeElement.dataset.id") == order[1]
        page.click(f'.card[data-id="{order[2]}"] button.reject')
        assert page.locator("#viewer").is_hidden()  # a button click is not a click that enlarges
        accepted, rejected = order[0], order[2]
        counter = f"1 accepted · 1 rejected · {n - 2} undecided of {n}"
        assert page.inner_text("#triage-count") == counter
        for state, ids in (("accept", [accepted]), ("reject", [rejected])):
            page.select_option("#review", state)
            assert visible_ids(page) == ids, state
        page.select_option("#review", "undecided")
        assert sorted(visible_ids(page)) == sorted(set(order) - {accepted, rejected})
        expected = {**data["package"], "decisions": {accepted: "accept", rejected: "reject"}}
        assert page.evaluate("window.wsssDecisions()") == expected
        page.reload()
        page.wait_for_load_state("load")
        assert page.inner_text("#triage-count") == counter  # localStorage kept them
        with page.expect_download() as download:
            page.click("#download")
        assert download.value.suggested_filename == "decisions-run-retrain.json"
        saved = tmp_path / "downloaded.json"
        download.value.save_as(saved)
        assert json.loads(saved.read_text()) == expected
        page.focus(f'.card[data-id="{accepted}"]')
        page.keyboard.press("u")
        assert page.inner_text("#triage-count").startswith("0 accepted · 1 rejected")
        assert errors == [], errors
    r = import_cli(saved, review_run)
    assert r.exit_code == 0, r.output
    pseudo = review_run / "retrain" / "masks" / f"{accepted}.png"
    assert np.array_equal(read_png(review_run / "reviewed" / "masks" / f"{accepted}.png"), read_png(pseudo))
    assert (review_run / "reviewed" / "rejected.txt").read_text() == f"{rejected}\n"
