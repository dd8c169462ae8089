"""The `evaluate` stage in a pipeline, the `wsss evaluate` command, and `wsss demo`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import toy_stages  # noqa: F401  (registers toy-oracle, a test-only mask writer)
from click.testing import CliRunner

from wsss.cli import cli
from wsss.data.index import read_eval_index
from wsss.hashing import read_manifest
from wsss.runs import hash_outputs


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    (tmp_path / "pipe.yaml").write_text("stages: [prepare, toy-oracle, evaluate]\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"run: {{name: t, pipeline: {tmp_path / 'pipe.yaml'}}}\n"
        "dataset: {kind: synthetic, synthetic: {n_ok: 12, n_defect: 12, size: 64}}\n"
        "evaluate: {split: all}\n"
    )
    return cfg


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_pipeline_evaluates_the_last_mask_stage(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert r.exit_code == 0, r.output
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert report["n_images"] == 24 and report["n_defective"] == 12
    assert report["miou_def"] == 1.0 and report["ap"] == 1.0 and report["seg_recall@0.5"] == 1.0
    assert (run_dir / "evaluate" / "per_image.csv").read_text().count("\n") == 25
    assert "| AP | 100.00% |" in (run_dir / "evaluate" / "report.md").read_text()


def test_evaluate_command_on_a_masks_folder(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("TOY_EMPTY", "1")
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir), "--to", "toy-oracle")
    out = tmp_path / "report"
    r = invoke(
        "evaluate",
        "--index",
        str(run_dir / "prepare" / "index.csv"),
        "--masks",
        str(run_dir / "toy-oracle" / "masks"),
        "--scores",
        str(run_dir / "toy-oracle" / "scores.csv"),
        "--split",
        "all",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["miou_def"] == 0.0 and report["seg_miou"] == 0.0 and report["ap"] == 1.0


def test_evaluate_command_errors(tmp_path: Path, prepared_run: Path):
    r = CliRunner().invoke(cli, ["evaluate", "--index", str(tmp_path / "none.csv"), "--masks", str(tmp_path)])
    assert r.exit_code == 1 and "none.csv: index file not found" in r.stderr
    index = str(prepared_run / "prepare" / "index.csv")
    r = CliRunner().invoke(cli, ["evaluate", "--index", index, "--masks", str(tmp_path / "nomasks")])
    assert r.exit_code == 2 and "nomasks: masks folder not found" in r.stderr
    r = CliRunner().invoke(cli, ["evaluate", "--index", index, "--masks", str(tmp_path)])  # empty folder
    assert r.exit_code == 1 and "5 of 5 indexed images have no predicted mask" in r.stderr


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def oracle_run(recipe: Path, tmp_path: Path) -> Path:
    """A run folder where prepare and toy-oracle (masks = the ground truth) have finished."""
    run_dir = tmp_path / "run"
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir), "--to", "toy-oracle")
    assert r.exit_code == 0, r.output
    return run_dir


def test_evaluate_command_writes_beside_a_stage_never_into_it(oracle_run: Path, tmp_path: Path):
    stage, index = oracle_run / "toy-oracle", str(oracle_run / "prepare" / "index.csv")
    before, default = _snapshot(stage), oracle_run / "evaluate-toy-oracle"
    args = ["evaluate", "--index", index, "--split", "all"]
    r = CliRunner().invoke(cli, [*args, "--masks", str(stage)])  # the stage folder instead of its masks/
    assert r.exit_code == 1 and f"pass {stage / 'masks'}, the folder that holds the <id>.png masks" in r.stderr
    for inside in (stage, stage / "masks" / "report", oracle_run / "prepare"):
        r = CliRunner().invoke(cli, [*args, "--masks", str(stage / "masks"), "--out", str(inside)])
        assert r.exit_code == 2, r.output
        assert f"--out {inside}: lies in the stage folder" in r.stderr and str(default) in r.stderr
    assert _snapshot(stage) == before and not default.exists()
    r = invoke(*args, "--masks", str(stage / "masks"))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in default.iterdir()) == ["per_image.csv", "report.json", "report.md"]
    assert f"into {default}" in r.output and json.loads((default / "report.json").read_text())["miou_def"] == 1.0
    assert _snapshot(stage) == before and hash_outputs(stage)[1] == read_manifest(stage)["digest"]
    theirs = tmp_path / "theirs" / "masks"  # masks that are no stage's: evaluate-<folder> beside them
    shutil.copytree(stage / "masks", theirs)
    assert invoke(*args, "--masks", str(theirs)).exit_code == 0
    assert (tmp_path / "theirs" / "evaluate-masks" / "report.md").is_file()


def _corrupt_png(path: Path) -> None:
    """A PNG whose header chunk fails its CRC (OpenCV's decoder prints `libpng error: IHDR: CRC error`)."""
    ok, buf = cv2.imencode(".png", np.zeros((64, 64), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = b"\xff" * 8
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("with_out", [False, True])
def test_evaluate_command_lists_every_bad_mask_and_writes_nothing(
    oracle_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture, with_out: bool
):
    index = oracle_run / "prepare" / "index.csv"
    rows = read_eval_index(index)
    ok, defective = [r.id for r in rows if not r.defective], [r.id for r in rows if r.defective]
    masks = tmp_path / "theirs" / "masks"
    shutil.copytree(oracle_run / "toy-oracle" / "masks", masks)
    cv2.imwrite(str(masks / f"{defective[0]}.png"), np.zeros((70, 64), np.uint8))  # wrong size
    cv2.imwrite(str(masks / f"{ok[0]}.png"), np.zeros((64, 32), np.uint8))  # wrong size, on an OK image
    cv2.imwrite(str(masks / f"{defective[1]}.png"), np.zeros((64, 64, 3), np.uint8))  # colour
    _corrupt_png(masks / f"{ok[1]}.png")
    (masks / f"{defective[2]}.png").unlink()
    before = _snapshot(tmp_path)
    out = tmp_path / "report"
    args = ["evaluate", "--index", str(index), "--masks", str(masks), "--split", "all"]
    r = CliRunner().invoke(cli, [*args, "--out", str(out)] if with_out else args)
    assert r.exit_code == 1, r.output
    assert "5 problem(s)" in r.stderr and "nothing evaluated, no report written" in r.stderr
    for sid in (defective[0], ok[0], defective[1], ok[1]):
        assert str(masks / f"{sid}.png") in r.stderr, sid
    assert f"have no predicted mask: {defective[2]} (" in r.stderr
    assert "64x70 (WxH)" in r.stderr and "32x64 (WxH)" in r.stderr and "mode RGB" in r.stderr
    assert _snapshot(tmp_path) == before and not out.exists() and not (tmp_path / "theirs" / "evaluate-masks").exists()
    assert "libpng" not in capfd.readouterr().err  # the only output is the error above


def test_evaluate_needs_a_mask_stage():
    r = CliRunner().invoke(
        cli,
        [
            "run-stage",
            "evaluate",
            "--config",
            str(Path(__file__).parents[1] / "configs" / "demo.yaml"),
            "--set",
            "evaluate.masks=prepare",
        ],
    )
    assert r.exit_code == 2 and "'prepare' is not a stage that writes masks" in r.stderr


def test_demo_runs_every_stage(tmp_path: Path):
    from conftest import FAST

    from wsss.export.overview import grid_shape

    # the tests' tiny set, models and sizes (tests/conftest.py, FAST; a tiny model learns its procedural textures in
    # three epochs, not the photographs): every stage of the demo, in seconds
    tiny = [*FAST, "dataset.synthetic.textures=[noise, stripes, brushed]"]
    tiny += ["classifier.backbone.stages=0", "classifier.backbone.freeze=0", "classifier.batch_size=8"]
    tiny += ["retrain.rounds=1", "retrain.backbone.freeze=0", "segmenter.backbone.freeze=0", "segmenter.epochs=2"]
    tiny += ["segmenter.crop=[32, 32]"]  # windows of half the input side, as the demo's 128 px of 256
    tiny += ["prepare.split.train=0.6", "prepare.split.test=0.2"]  # 24 parts: the demo's 40% would train on 10
    sets = [a for s in tiny for a in ("--set", s)]
    r = invoke("demo", "--run-dir", str(tmp_path / "demo"), "--review", "3", *sets)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("demo: the default recipe (") and "24 generated parts (noise" in r.output
    assert "prepare: done" in r.output and "| train |" in r.output and "train-classifier: done" in r.output
    for stage in ("prepare", "train-classifier", "export"):
        assert (tmp_path / "demo" / stage / "manifest.json").is_file()
    # every mask-writing stage side by side, so the final row can be read against the pseudo-masks it learned from
    summary = r.output[r.output.index("## Every mask-writing stage (test split)") :]
    assert "| stage | image AP | mIoU_def | pixel AP | Seg_mIoU | Seg_Recall@0.5 | time |" in summary
    for stage in ("pseudo-labels", "retrain", "train-segmenter"):
        line = next(x for x in summary.splitlines() if x.startswith(f"| {stage} | "))
        assert line.endswith(" s |")
        assert (line.split(" | ")[3] != "-") == (stage == "train-segmenter")  # pixel AP where a stage writes probs/
    overview = tmp_path / "demo" / "overview.png"
    assert f"overview picture: {overview}" in r.output
    assert f"review page: {tmp_path / 'demo' / 'export' / 'index.html'}" in r.output
    shape = cv2.imread(str(overview)).shape
    assert shape[1:] == grid_shape(1)[1:] and shape[0] in {grid_shape(n)[0] for n in (1, 2, 3)}

    # then a simulated reviewer and the review loop, on a copy: the demo's own run stays as trained
    loop = tmp_path / "demo" / "review-loop"
    review = json.loads((loop / "review.json").read_text())
    assert len(review["reviewed"]) == 3 and len(list((loop / "reviewed" / "masks").glob("*.png"))) == 3
    line = next(x for x in r.output.splitlines() if x.startswith("review loop: 3 corrected masks take"))
    before = review["figures"]["as trained"]["miou_def"]
    assert f"from {100 * before:.2f}%" in line
    own = json.loads((tmp_path / "demo" / "train-segmenter" / "manifest.json").read_text())["config"]["segmenter"]
    assert own["reviewed"] is None and own["init_from"] is None
    seg = json.loads((loop / "train-segmenter" / "manifest.json").read_text())["config"]["segmenter"]
    assert seg["reviewed"] == str(loop / "reviewed")
    # a second demo resumes: nothing re-runs, the loop's result is reported again
    again = invoke("demo", "--run-dir", str(tmp_path / "demo"), "--review", "3", *sets)
    assert again.exit_code == 0 and line in again.output and "simulated reviewer" not in again.output


def _write_probs(run_dir: Path, folder: Path) -> None:
    """16-bit probability maps that rank the ground truth's defect pixels above most others (not all: AP < 1)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for row in read_eval_index(run_dir / "prepare" / "index.csv"):
        shape = cv2.imread(str(row.path), cv2.IMREAD_UNCHANGED).shape[:2]
        gt = np.zeros(shape, bool) if row.mask is None else cv2.imread(str(row.mask), cv2.IMREAD_GRAYSCALE) > 127
        p = np.clip(0.6 * rng.random(shape) + 0.45 * gt, 0, 1)
        cv2.imwrite(str(folder / f"{row.id}.png"), np.rint(p * 65535).astype(np.uint16))


def test_evaluate_command_adds_pixel_ap_from_probability_maps(oracle_run: Path, tmp_path: Path):
    index, masks = oracle_run / "prepare" / "index.csv", oracle_run / "toy-oracle" / "masks"
    probs = tmp_path / "probs"
    _write_probs(oracle_run, probs)
    args = ["evaluate", "--index", str(index), "--masks", str(masks), "--split", "all", "--probs", str(probs)]
    r = invoke(*args, "--out", str(tmp_path / "report"))
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert 0.5 < report["pixel_ap"] < 1 and 0.5 < report["pixel_auroc"] < 1 and report["miou_def"] == 1.0
    assert f"| pixel AP | {100 * report['pixel_ap']:.2f}% |" in r.output  # the printed table
    assert "| pixel AP |" in (tmp_path / "report" / "report.md").read_text()
    # a map of the wrong size and a missing one: both named, nothing written
    rows = read_eval_index(index)
    cv2.imwrite(str(probs / f"{rows[0].id}.png"), np.zeros((64, 63), np.uint16))
    (probs / f"{rows[1].id}.png").unlink()
    before, out = _snapshot(tmp_path), tmp_path / "report2"
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 1 and "2 problem(s)" in r.stderr and "nothing evaluated, no report written" in r.stderr
    assert f"{probs / rows[0].id}.png: probability map is 63x64 (WxH)" in r.stderr
    assert f"have no probability map: {rows[1].id} (" in r.stderr
    assert _snapshot(tmp_path) == before and not out.exists()


def test_a_run_without_ground_truth_ends_with_every_stages_time_and_an_overview_by_score(full_run, tmp_path: Path):
    """A team's own images have no masks: `wsss run` still reports each stage's time and draws the images the
    segmenter is surest, midway and least sure are defective, beside their pseudo-masks."""
    import shutil

    from wsss.cli.pipeline import _overview, _stage_summary
    from wsss.config.pipelines import load_pipeline
    from wsss.export.overview import grid_shape
    from wsss.runs import Run

    run_dir, cfg = full_run
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    index = dst / "prepare" / "index.csv"
    lines = index.read_text().splitlines()
    index.write_text("\n".join([lines[0], *(line.rsplit(",", 1)[0] + "," for line in lines[1:])]) + "\n")
    stages = list(load_pipeline("full").stages)
    run = Run(dst, cfg, echo=lambda *_: None)
    summary, reports = _stage_summary(run, stages, cfg)
    assert reports == {} and "## Every stage's time" in summary and "no ground-truth masks" in summary
    for stage in stages:
        assert any(x.startswith(f"| {stage} | ") and x.endswith(" s |") for x in summary.splitlines()), stage
    overview = _overview(run, reports, cfg, stages)
    assert overview == dst / "overview.png" and cv2.imread(str(overview)).shape[1:] == grid_shape(1)[1:]
