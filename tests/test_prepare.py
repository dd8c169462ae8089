"""The `prepare` stage through the CLI: index, reports, real-data counts, and every bad input.

Each bad input must give ``Error: <file>: <what> (<fix>)``, a non-zero exit code, and no ``done`` manifest.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsss.cli import cli
from wsss.data.index import read_dataset_info, read_eval_index, read_train_index

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def texture(seed: int, size=(48, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 200, size=size[::-1], dtype=np.uint8)


def folder_dataset(root: Path, n_ok: int = 6, n_def: int = 4) -> Path:
    for cls, n in (("ok", n_ok), ("scratch", n_def)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{cls}{i}.png"), texture(i + 100 * (cls == "ok")))
    return root


def recipe(tmp_path: Path, kind: str, root: Path, extra: str = "") -> Path:
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(
        f"dataset: {{kind: {kind}, root: {root}}}\nprepare: {{split: {{train: 0.5, val: 0.25, test: 0.25}}}}\n" + extra
    )
    return cfg


def prepare(cfg: Path, run_dir: Path, *args: str):
    return CliRunner().invoke(cli, ["run-stage", "prepare", "--config", str(cfg), "--run-dir", str(run_dir), *args])


def assert_refused(result, run_dir: Path, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: "), result.output  # on stderr, first line
    for f in fragments:
        assert f in result.stderr, (f, result.stderr)
    assert not (run_dir / "prepare" / "manifest.json").exists()


def test_folder_dataset_is_indexed(tmp_path: Path):
    root = folder_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    r = prepare(recipe(tmp_path, "folder", root), run_dir)
    assert r.exit_code == 0, r.output
    index = run_dir / "prepare" / "index.csv"
    rows = read_eval_index(index)
    assert len(rows) == 10 and sum(r.defective for r in rows) == 4
    assert {r.split for r in rows} == {"train", "val", "test"}
    assert read_dataset_info(index).classes == ("scratch",)
    train_rows = read_train_index(index, split="train")
    assert train_rows and not hasattr(train_rows[0], "mask")  # training rows cannot reach gt masks
    report = json.loads((run_dir / "prepare" / "report.json").read_text())
    assert report["validation"]["n_images"] == 10 and report["splits"]["train"]["images"] == 5
    m = json.loads((run_dir / "prepare" / "manifest.json").read_text())
    assert m["status"] == "done" and m["external"]


def test_dataset_file_change_makes_prepare_stale(tmp_path: Path):
    root = folder_dataset(tmp_path / "data")
    cfg, run_dir = recipe(tmp_path, "folder", root), tmp_path / "run"
    assert prepare(cfg, run_dir).exit_code == 0
    assert "up to date" in prepare(cfg, run_dir).output
    cv2.imwrite(str(root / "scratch" / "scratch9.png"), texture(9))
    r = prepare(cfg, run_dir)
    assert "prepare: running" in r.output
    assert len(read_eval_index(run_dir / "prepare" / "index.csv")) == 11


def test_bad_images_are_all_reported_at_once(tmp_path: Path):
    root = folder_dataset(tmp_path / "data")
    (root / "ok" / "zero.png").write_bytes(b"")
    (root / "ok" / "text.png").write_text("not an image")
    good = (root / "scratch" / "scratch0.png").read_bytes()
    cv2.imwrite(str(root / "scratch" / "big.jpg"), texture(5, (400, 300)))
    data = (root / "scratch" / "big.jpg").read_bytes()
    (root / "scratch" / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert good
    run_dir = tmp_path / "run"
    r = prepare(recipe(tmp_path, "folder", root), run_dir)
    assert_refused(
        r,
        run_dir,
        "3 problem(s)",
        "zero.png: empty file (0 bytes)",
        "text.png: not a readable image",
        "cut.jpg: truncated image file",
    )
    assert r.output.count(" - ") >= 3


def test_16bit_refused_unless_scaled(tmp_path: Path):
    root = folder_dataset(tmp_path / "data")
    Image.fromarray(texture(3).astype(np.uint16) * 200).save(root / "ok" / "deep.png")
    run_dir = tmp_path / "run"
    assert_refused(
        prepare(recipe(tmp_path, "folder", root), run_dir), run_dir, "deep.png: 16-bit image", "high_bit_depth"
    )
    r = prepare(recipe(tmp_path, "folder", root), run_dir, "--set", "dataset.high_bit_depth=scale")
    assert r.exit_code == 0, r.output


def test_rgba_and_palette_are_converted_and_reported(tmp_path: Path):
    root = folder_dataset(tmp_path / "data")
    Image.fromarray(texture(1)).convert("RGBA").save(root / "ok" / "alpha.png")
    Image.fromarray(texture(2)).convert("P").save(root / "ok" / "pal.png")
    run_dir = tmp_path / "run"
    r = prepare(recipe(tmp_path, "folder", root), run_dir)
    assert r.exit_code == 0, r.output
    conversions = json.loads((run_dir / "prepare" / "report.json").read_text())["validation"]["conversions"]
    text = json.dumps(conversions)
    assert "alpha.png" in text and "pal.png" in text


def test_mask_size_mismatch(tmp_path: Path):
    root = folder_dataset(tmp_path / "data")
    cv2.imwrite(str(root / "scratch" / "scratch0_mask.png"), np.zeros((10, 10), np.uint8))
    run_dir = tmp_path / "run"
    assert_refused(prepare(recipe(tmp_path, "folder", root), run_dir), run_dir, "scratch0_mask.png", "10x10", "48x40")


def test_empty_class_folder(tmp_path: Path):
    root = folder_dataset(tmp_path / "data")
    (root / "crack").mkdir()
    run_dir = tmp_path / "run"
    assert_refused(prepare(recipe(tmp_path, "folder", root), run_dir), run_dir, "crack: class folder has no images")


def test_only_one_class(tmp_path: Path):
    root = folder_dataset(tmp_path / "data", n_def=0)
    (root / "scratch").rmdir()
    run_dir = tmp_path / "run"
    assert_refused(
        prepare(recipe(tmp_path, "folder", root), run_dir), run_dir, "have the same label", "at least two classes"
    )


def test_missing_root(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert_refused(
        prepare(recipe(tmp_path, "folder", tmp_path / "nowhere"), run_dir),
        run_dir,
        "nowhere: dataset root does not exist",
        "set dataset.root",
    )


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return path


def test_duplicate_ids(tmp_path: Path):
    d = tmp_path / "data"
    d.mkdir()
    for name in ("a.png", "a.jpg", "b.png", "c.png"):
        cv2.imwrite(str(d / name), texture(len(name)))
    labels = write_csv(d / "labels.csv", [("a.png", ""), ("a.jpg", "1"), ("b.png", "1"), ("c.png", "")])
    run_dir = tmp_path / "run"
    assert_refused(prepare(recipe(tmp_path, "csv", labels), run_dir), run_dir, "duplicate id 'a'", "a.png")


def test_csv_paths_escaping_the_root(tmp_path: Path):
    d = tmp_path / "data"
    d.mkdir()
    cv2.imwrite(str(tmp_path / "evil.png"), texture(0))
    cv2.imwrite(str(d / "b.png"), texture(1))
    labels = write_csv(d / "labels.csv", [("../evil.png", "1"), (str(tmp_path / "evil.png"), ""), ("b.png", "")])
    run_dir = tmp_path / "run"
    assert_refused(
        prepare(recipe(tmp_path, "csv", labels), run_dir),
        run_dir,
        "2 problem(s)",
        "labels.csv",
        "line 2",
        "line 3",
        "escapes the dataset root",
    )


def test_unknown_kind_is_a_usage_error(tmp_path: Path):
    run_dir = tmp_path / "run"
    r = prepare(recipe(tmp_path, "kolektor", tmp_path), run_dir)
    assert_refused(r, run_dir, "dataset.kind: unknown dataset kind 'kolektor'", "ksdd", code=2)


@pytest.mark.skipif(not (SHARED / "mtd").is_dir(), reason=f"real MTD data not found at {SHARED / 'mtd'}")
def test_real_mtd_counts(tmp_path: Path):
    r = prepare(Path(__file__).parents[1] / "configs" / "mtd.yaml", tmp_path / "run")
    assert r.exit_code == 0, r.output
    rows = read_eval_index(tmp_path / "run" / "prepare" / "index.csv")
    assert len(rows) == 1344 and sum(r.defective for r in rows) == 392
    assert read_dataset_info(tmp_path / "run" / "prepare" / "index.csv").mask_threshold == 128


@pytest.mark.skipif(not (SHARED / "ksdd").is_dir(), reason=f"real KSDD data not found at {SHARED / 'ksdd'}")
def test_real_ksdd_counts_and_grouped_folds(tmp_path: Path):
    r = prepare(Path(__file__).parents[1] / "configs" / "ksdd.yaml", tmp_path / "run")
    assert r.exit_code == 0, r.output
    rows = read_eval_index(tmp_path / "run" / "prepare" / "index.csv")
    assert len(rows) == 399 and sum(r.defective for r in rows) == 52
    split_of_group: dict[str, set[str]] = {}
    for row in rows:
        split_of_group.setdefault(row.group, set()).add(row.split)
    assert len(split_of_group) == 48 and all(len(s) == 1 for s in split_of_group.values())
    by_id = {r.id: r for r in rows}
    assert by_id["kos26_Part5"].split == by_id["kos01_Part5"].split
    assert by_id["kos34_Part0"].split == by_id["kos27_Part0"].split
    assert {r.fold for r in rows} == {0, 1, 2} and all(r.split == "test" for r in rows if r.fold == 0)
