"""Bad input a user really has, through the real command line: each case exits non-zero with the file or key named
and how to fix it, prints no traceback, and leaves nothing half-written (no stage folder, no recipe).

The cases that need a trained run live beside the code they exercise: colour datasets (tests/test_colour.py),
wrong or unreadable masks given to `evaluate` (tests/test_evaluate_stage.py, tests/test_evaluation.py) and to
`import-review` (tests/test_review.py), `predict`'s 16-bit hint and its own output folder (tests/test_predict.py),
a stage interrupted by SIGKILL or Ctrl-C and a stage output changed after it finished (tests/test_runs.py), auto
sizes' aspect ratio (tests/test_auto.py), malformed and hostile COCO / Label Studio / CVAT / decisions imports
(tests/test_import_probes.py), `predict`'s unreadable, oversized and misnamed images and its channel warning
(tests/test_predict.py), weights changed after their stage wrote them, names in the review page and links out of a
dataset root (tests/test_trust.py), and names and paths that look like YAML in the recipe `init` writes
(tests/test_init.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from wsss.atomic import atomic_write_text
from wsss.cli import cli

LATIN1_NAME = b"caf\xe9"  # "café" saved by a Latin-1 system: not valid UTF-8


def png(path: Path | bytes, value: int = 100, size: int = 40) -> None:
    """A small gray PNG at ``path`` (bytes: a file name that need not be UTF-8)."""
    rng = np.random.default_rng(len(os.fsencode(path)) + value)
    img = np.clip(rng.normal(value, 10, (size, size)), 0, 255).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(cv2.imencode(".png", img)[1].tobytes())


def folder_set(root: Path, n: int = 6) -> Path:
    for cls, value in (("ok", 100), ("scratch", 140)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            png(root / cls / f"{cls}{i}.png", value + i)
    return root


def csv_set(root: Path, rows: list[str], header: str = "path,label", encoding: str = "utf-8") -> Path:
    """Six OK and six defective images beside a CSV with ``header`` and, after the generated rows, ``rows`` (which
    may list ``extra.png``, a defective image)."""
    root.mkdir(parents=True, exist_ok=True)
    png(root / "extra.png", 150)
    lines = [header]
    for i in range(6):
        png(root / f"ok{i}.png", 100 + i)
        png(root / f"bad{i}.png", 140 + i)
        lines += [f"ok{i}.png,0", f"bad{i}.png,1"]
    (root / "set.csv").write_bytes("\n".join([*lines, *rows, ""]).encode(encoding))
    return root / "set.csv"


def recipe(tmp_path: Path, kind: str, root: Path, extra: str = "") -> Path:
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(f"run: {{name: probe}}\ndataset: {{kind: {kind}, root: {root}}}\n{extra}")
    return cfg


def wsss(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(r, code: int, *named: str) -> str:
    """Assert a clean refusal: the exit code, an ``Error:`` line naming every string in ``named``, no traceback."""
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Error: " in r.output and "Traceback" not in r.output, r.output
    for text in named:
        assert text in r.output, f"{text!r} not in {r.output}"
    return r.output


def prepare(cfg: Path, run_dir: Path, *sets: str):
    return wsss("run-stage", "prepare", "--config", cfg, "--run-dir", run_dir, *sum((["--set", s] for s in sets), []))


# ------------------------------------------------------------------------------------------------------- names
def test_file_names_that_are_not_utf8_are_listed_before_any_stage_runs(tmp_path: Path):
    root = folder_set(tmp_path / "data")
    png(os.fsencode(root / "ok") + b"/" + LATIN1_NAME + b".png")
    png(os.fsencode(root / "scratch") + b"/" + LATIN1_NAME + b"2.png")
    run_dir = tmp_path / "run"
    out = refused(prepare(recipe(tmp_path, "folder", root), run_dir), 1, "2 problem(s)", "convmv")
    for name in ("ok/caf\\xe9.png", "scratch/caf\\xe92.png"):
        assert f"{root}/{name}: name is not valid UTF-8" in out
    assert not (run_dir / "prepare").exists()
    # `wsss init` refuses the same way and writes no recipe
    out_recipe = tmp_path / "init.yaml"
    refused(wsss("init", "--kind", "folder", "--root", root, "--out", out_recipe), 1, "caf\\xe9.png")
    assert not out_recipe.exists()


def test_a_csv_not_in_utf8_is_refused_with_the_byte_and_read_with_its_declared_encoding(tmp_path: Path):
    csv = csv_set(tmp_path / "data", ["extra.png,rayé"], encoding="latin-1")
    cfg = recipe(tmp_path, "csv", csv)
    out = refused(prepare(cfg, tmp_path / "run"), 2, f"Error: {csv}: not utf-8 (byte 0xe9 on line 14", "iconv")
    assert "dataset.encoding" in out and not (tmp_path / "run" / "prepare").exists()
    r = prepare(cfg, tmp_path / "run", "dataset.encoding=latin-1")
    assert r.exit_code == 0, r.output
    assert "class 'rayé' has only 1 image(s)" in r.output  # read as the user wrote it
    r = prepare(cfg, tmp_path / "run2", "dataset.encoding=klingon")
    refused(r, 2, "dataset.encoding: unknown encoding 'klingon'")


@pytest.mark.parametrize(
    "header, missing",
    [("file,label", "missing column 'path'"), ("path,class", "missing column 'label'"), ("x,y", "'path' and 'label'")],
)
def test_a_csv_without_its_columns_names_the_missing_one(tmp_path: Path, header: str, missing: str):
    csv = csv_set(tmp_path / "data", [], header=header)
    out = refused(prepare(recipe(tmp_path, "csv", csv), tmp_path / "run"), 1, str(csv), missing)
    assert f"the header line is {header}" in out and not (tmp_path / "run" / "prepare").exists()


def test_an_unknown_looking_csv_label_is_warned_about(tmp_path: Path):
    csv = csv_set(tmp_path / "data", ["extra.png,2"])
    r = prepare(recipe(tmp_path, "csv", csv), tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert "prepare: warning: class '2' has only 1 image(s)" in r.output
    assert "CSV labels: empty, 0 or an ok name = defect-free, 1 = defect" in r.output
    assert "class '2'" in (tmp_path / "run" / "prepare" / "report.md").read_text()


def test_a_csv_path_out_of_its_folder_is_refused_and_a_link_in_it_is_read_and_named(tmp_path: Path):
    outside = tmp_path / "elsewhere.png"
    png(outside)
    (tmp_path / "data").mkdir()
    csv = csv_set(tmp_path / "data", ["../elsewhere.png,1"])
    out = refused(prepare(recipe(tmp_path, "csv", csv), tmp_path / "run"), 1, f"{csv}, line 14")
    assert "path '../elsewhere.png' escapes the dataset root" in out
    # a symbolic link placed in the folder is read through, wherever it points, and named in the report
    (tmp_path / "data" / "link.png").symlink_to(outside)
    csv = csv_set(tmp_path / "data", ["link.png,1"])
    r = prepare(recipe(tmp_path, "csv", csv), tmp_path / "run2")
    assert r.exit_code == 0, r.output
    report = (tmp_path / "run2" / "prepare" / "report.md").read_text()
    assert "1 file(s) are symbolic links to files outside the dataset root" in report and str(outside) in report


def test_a_csv_split_column_is_the_split_and_its_groups_never_straddle(tmp_path: Path):
    root = tmp_path / "data"
    root.mkdir()
    lines = ["path,label,split,group"]
    for i in range(6):
        for kind, label, value in (("ok", "0", 100), ("bad", "1", 140)):
            png(root / f"{kind}{i}.png", value + i)
            lines.append(f"{kind}{i}.png,{label},{('train', 'train', 'train', 'val', 'test', 'test')[i]},part{i}")
    (root / "set.csv").write_text("\n".join(lines) + "\n")
    r = wsss("init", "--kind", "csv", "--root", root / "set.csv", "--out", tmp_path / "r.yaml")
    assert r.exit_code == 0, r.output
    assert "mode: official" in (tmp_path / "r.yaml").read_text()
    assert prepare(tmp_path / "r.yaml", tmp_path / "run").exit_code == 0
    index = (tmp_path / "run" / "prepare" / "index.csv").read_text().splitlines()
    got = {line.split(",")[0]: (line.split(",")[3], line.split(",")[4]) for line in index[1:]}
    assert got["ok3"] == ("val", "part3") and got["bad5"] == ("test", "part5") and got["ok0"] == ("train", "part0")
    lines[1] = lines[1].replace(",train,", ",lunch,")
    lines[2] = lines[2].replace("part0", "part4")  # bad0 (train) joins ok4 and bad4 (test)
    (root / "set.csv").write_text("\n".join(lines) + "\n")
    r = wsss("init", "--kind", "csv", "--root", root / "set.csv", "--out", tmp_path / "r2.yaml", "--force")
    out = refused(r, 1, "line 2", "split 'lunch' is not one of train, val, test", "group 'part4' has images in")
    assert not (tmp_path / "r2.yaml").exists() and "test and train" in out


# ------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "setting, key",
    [
        ("classifier.epochs=0", "classifier.epochs"),
        ("classifier.epochs=-3", "classifier.epochs"),
        ("classifier.batch_size=0", "classifier.batch_size"),
        ("segmenter.lr=0", "segmenter.lr"),
        ("cam.iem.rounds=0", "cam.iem.rounds"),
        ("classifier.epochs=1.5", "classifier.epochs"),
        ("classifier.lr=nan", "classifier.lr"),
        ("run.name=../../x", "run.name"),
        ("run.name=/tmp/x", "run.name"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path, setting: str, key: str):
    root = folder_set(tmp_path / "data")
    run_dir = tmp_path / "run"
    r = wsss("run", "--config", recipe(tmp_path, "folder", root), "--run-dir", run_dir, "--set", setting)
    refused(r, 2, key)
    assert not run_dir.exists()


def test_scientific_notation_is_a_number(tmp_path: Path):
    root = folder_set(tmp_path / "data")
    cfg = recipe(tmp_path, "folder", root, "classifier: {lr: 1e-3, max_pixels: 1.6e5}\n")
    r = wsss("show-config", "-c", cfg, "--set", "segmenter.lr=5E-4")
    assert r.exit_code == 0, r.output
    assert "lr: 0.001" in r.output and "max_pixels: 160000" in r.output and "lr: 0.0005" in r.output


# --------------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_are_written_with_the_users_umask(tmp_path: Path, umask: int, mode: int):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left beside it


@pytest.mark.parametrize(
    "args, named",
    [
        (["predict", "--model", "m", "--out", "o", "--batch", "0", "x.png"], "'--batch': 0 is not in the range x>=1"),
        (["predict", "--model", "m", "--out", "o", "--threshold", "1.5", "x.png"], "'--threshold': 1.5 is not in"),
        (["evaluate", "--index", "i.csv", "--masks", "m", "--threshold", "-1"], "'--threshold': -1.0 is not in"),
    ],
)
def test_command_line_counts_and_thresholds_are_range_checked(tmp_path: Path, args: list[str], named: str):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and named in r.output, r.output


# ---------------------------------------------------------------------------------------------------- recipes
def test_a_recipe_with_aliases_is_refused_before_it_expands(tmp_path: Path):
    laughs = tmp_path / "laughs.yaml"
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefg", "bcdefgh", strict=True)]
    laughs.write_text("\n".join(lines) + "\nrun: {name: *h}\n")
    refused(wsss("run", "--config", laughs, "--run-dir", tmp_path / "run"), 2, str(laughs), "alias")
    assert not (tmp_path / "run").exists()


def test_a_recipe_over_a_mebibyte_is_refused(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20) + "\nrun: {seed: 1}\n")
    refused(wsss("run", "--config", big, "--run-dir", tmp_path / "run"), 2, str(big), "bytes")
    assert not (tmp_path / "run").exists()


def test_an_empty_run_name_never_makes_runs_itself_the_run_folder(tmp_path: Path):
    from wsss.config import load_config

    cfg = tmp_path / "line3.yaml"
    cfg.write_text("run: {name: ''}\n")
    assert load_config(cfg).run.name == "line3"
    assert load_config(cfg, ["run.name="]).run.name == "line3"
    assert load_config(None, ["run.name="]).run.name == "default"
