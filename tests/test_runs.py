"""Stage runner: manifests, skipping, staleness, atomic outputs, kill and resume, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import toy_stages  # noqa: F401  (registers toy-a and toy-b)
from click.testing import CliRunner

from wsss.cli import cli

TESTS = Path(__file__).parent


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    (tmp_path / "toy.yaml").write_text("stages: [toy-a, toy-b]\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"run: {{name: toy, pipeline: {tmp_path / 'toy.yaml'}}}\n")
    return cfg


def wsss(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The real CLI in a subprocess, with the toy stages registered."""
    code = "import sys, toy_stages; from wsss.cli import main; sys.argv[0] = 'wsss'; main()"
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell starts background jobs with SIGINT ignored, and the child would inherit that: Ctrl-C as a terminal
        # sends it needs the default disposition, which Python then turns into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def hanging(args: tuple[str, ...], run_dir: Path) -> subprocess.Popen:
    """``wsss *args`` with toy-a hanging mid-stage (TOY_HANG), returned once the stage has started."""
    proc = wsss(*args, env={"TOY_HANG": "1"})
    marker = run_dir / "toy-a.partial" / "started"
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "stage did not start"
        time.sleep(0.05)
    return proc


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def test_run_writes_manifests_and_skips_up_to_date(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert r.exit_code == 0, r.output
    m = manifest(run_dir, "toy-a")
    assert m["status"] == "done" and m["stage"] == "toy-a"
    assert set(m["files"]) == {"a.txt"} and m["files"]["a.txt"]["size"] > 0
    assert m["versions"]["wsss"] and m["config"]["prepare"]["split"]["seed"] == 0
    assert "digest" in m and m["seconds"] >= 0
    assert manifest(run_dir, "toy-b")["inputs"] == {"toy-a": m["digest"]}
    assert (run_dir / "toy-a" / "config.yaml").is_file()
    assert not (run_dir / "toy-a.partial").exists()

    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert r.exit_code == 0
    assert "toy-a: up to date" in r.output and "toy-b: up to date" in r.output


def test_changed_value_reruns_that_stage_and_later_ones_only(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    # a value of toy-b's section: toy-a stays, toy-b re-runs
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir), "--set", "evaluate.score_threshold=0.7")
    assert "toy-a: up to date" in r.output and "toy-b: running" in r.output
    assert (run_dir / "toy-b" / "b.txt").read_text() == "seed=0 thr=0.7"
    # a value of toy-a's section: both re-run
    r = invoke(
        "run",
        "--config",
        str(recipe),
        "--run-dir",
        str(run_dir),
        "--set",
        "prepare.split.seed=3",
        "--set",
        "evaluate.score_threshold=0.7",
    )
    assert "toy-a: running" in r.output and "toy-b: running" in r.output
    assert (run_dir / "toy-b" / "b.txt").read_text() == "seed=3 thr=0.7"


def test_force_and_from_to(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir), "--to", "toy-a")
    assert "toy-a: done" in r.output and not (run_dir / "toy-b").exists()
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir), "--from", "toy-b", "--force")
    assert "toy-a" not in r.output and "toy-b: done" in r.output


def test_stage_before_its_input_is_a_clear_error(recipe: Path, tmp_path: Path):
    r = CliRunner().invoke(cli, ["run-stage", "toy-b", "--config", str(recipe), "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 1
    assert "needs the output of 'toy-a', which has not finished" in r.output
    assert "wsss run --to toy-b" in r.output


def test_upstream_with_other_config_is_refused(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    r = CliRunner().invoke(
        cli, ["run-stage", "toy-b", "--config", str(recipe), "--run-dir", str(run_dir), "--set", "prepare.split.seed=9"]
    )
    assert r.exit_code == 1 and "ran with a different config" in r.output


def test_sigkill_leaves_no_done_manifest_and_rerun_resumes(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = ("run-stage", "toy-a", "--config", str(recipe), "--run-dir", str(run_dir))
    proc = hanging(args, run_dir)
    status = ("status", "--config", str(recipe), "--run-dir", str(run_dir))
    assert "toy-a              running (a wsss process is running it now)" in invoke(*status).output
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "toy-a").exists()  # no done manifest, no final folder
    partial = json.loads((run_dir / "toy-a.partial" / "manifest.json").read_text())
    assert partial["status"] == "running"
    # the manifest still says running, but the lock went with the killed process: status tells the two apart
    out = invoke(*status).output
    assert "toy-a              interrupted (its process was killed or died; `wsss run` resumes it" in out, out

    proc = wsss(*args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "toy-a: resuming the attempt started" in out
    assert manifest(run_dir, "toy-a")["status"] == "done"
    # the re-run found the killed attempt's checkpoint (same config): it resumed instead of starting over
    assert (run_dir / "toy-a" / "a.txt").read_text() == "seed=0 resumed=True"
    proc = wsss(*args)
    out, _ = proc.communicate(timeout=120)
    assert "toy-a: up to date" in out


def test_killed_attempt_with_other_config_restarts_clean(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    (run_dir / "toy-a.partial").mkdir(parents=True)
    (run_dir / "toy-a.partial" / "checkpoint.txt").write_text("stale")
    (run_dir / "toy-a.partial" / "manifest.json").write_text(json.dumps({"status": "running", "config_hash": "x"}))
    invoke("run-stage", "toy-a", "--config", str(recipe), "--run-dir", str(run_dir))
    assert (run_dir / "toy-a" / "a.txt").read_text() == "seed=0 resumed=False"


def test_failing_stage_exits_nonzero_and_records_failure(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = wsss("run-stage", "toy-a", "--config", str(recipe), "--run-dir", str(run_dir), env={"TOY_FAIL": "1"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "toy failure" in err
    assert not (run_dir / "toy-a").exists()
    m = json.loads((run_dir / "toy-a.partial" / "manifest.json").read_text())
    assert m["status"] == "failed" and "toy failure" in m["error"]
    r = invoke("status", "--config", str(recipe), "--run-dir", str(run_dir))
    assert "toy-a" in r.output and "failed" in r.output


def test_interrupted_swap_is_recovered(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    os.replace(run_dir / "toy-a", run_dir / "toy-a.old")  # as if killed between the two renames
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert "toy-a: up to date" in r.output and not (run_dir / "toy-a.old").exists()


def test_deleted_output_file_makes_stage_stale(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    (run_dir / "toy-b" / "b.txt").unlink()
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert "toy-a: up to date" in r.output and "toy-b: running" in r.output


def test_options_added_since_a_stage_ran_count_as_unchanged_at_their_default(recipe: Path, tmp_path: Path):
    """A manifest from an older wsss lacks options added later: still current while those hold their defaults."""
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    path = run_dir / "toy-a" / "manifest.json"
    m = manifest(run_dir, "toy-a")
    del m["config"]["prepare"]["split"]["seed"]  # as written before `seed` existed (its default is 0)
    m["config_hash"] = "0123456789abcdef"  # and hashed by that version
    path.write_text(json.dumps(m))
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert "toy-a: up to date" in r.output and "toy-b: up to date" in r.output, r.output

    m["config"]["prepare"]["gone"] = 1  # an option this version no longer has: its meaning is unknown
    path.write_text(json.dumps(m))
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert "toy-a: running" in r.output, r.output  # (toy-b then stays: toy-a's output digest did not change)


def test_option_added_since_but_set_away_from_its_default_is_a_change(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    path = run_dir / "toy-a" / "manifest.json"
    m = manifest(run_dir, "toy-a")
    del m["config"]["prepare"]["split"]["seed"]
    m["config_hash"] = "0123456789abcdef"
    path.write_text(json.dumps(m))
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir), "--set", "prepare.split.seed=3")
    assert "toy-a: running" in r.output, r.output


def test_an_output_changed_at_the_same_size_shows_corrupt_blocks_its_readers_and_is_redone(
    recipe: Path, tmp_path: Path
):
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    a = run_dir / "toy-a" / "a.txt"
    text = a.read_text()
    a.write_text(text.replace("seed=0", "seed=9"))  # same size, other bytes, a new modification time
    assert "toy-a              corrupt" in invoke("status", "--config", str(recipe), "--run-dir", str(run_dir)).output
    r = CliRunner().invoke(cli, ["run-stage", "toy-b", "--config", str(recipe), "--run-dir", str(run_dir), "--force"])
    assert r.exit_code == 1 and str(a) in r.output and "run-stage toy-a --force" in r.output
    r = invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    assert "changed since the stage finished" in r.output and "toy-a: done" in r.output
    assert (
        a.read_text() == text
        and "toy-a              done" in invoke("status", "--config", str(recipe), "--run-dir", str(run_dir)).output
    )


def test_a_truncated_output_is_corrupt_even_with_its_old_time(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    invoke("run", "--config", str(recipe), "--run-dir", str(run_dir))
    a = run_dir / "toy-a" / "a.txt"
    st = a.stat()
    a.write_text("x")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "corrupt" in invoke("status", "--config", str(recipe), "--run-dir", str(run_dir)).output


def test_ctrl_c_exits_130_and_leaves_the_stage_interrupted_to_resume(recipe: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = ("run-stage", "toy-a", "--config", str(recipe), "--run-dir", str(run_dir))
    proc = hanging(args, run_dir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert json.loads((run_dir / "toy-a.partial" / "manifest.json").read_text())["status"] == "running"
    out = invoke("status", "--config", str(recipe), "--run-dir", str(run_dir)).output
    assert "toy-a              interrupted" in out


def test_a_pipeline_naming_an_unknown_stage_is_refused_before_anything_runs(tmp_path: Path):
    """The pipeline file is read with the recipe; its stage names are checked against the stage table when a run is
    opened, and the error names the pipeline, the unknown stage and the registered ones."""
    (tmp_path / "typo.yaml").write_text("stages: [toy-a, toy-c]\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"run: {{name: toy, pipeline: {tmp_path / 'typo.yaml'}}}\n")
    run_dir = tmp_path / "run"
    r = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--run-dir", str(run_dir)])
    assert r.exit_code != 0
    assert "pipeline 'typo'" in r.output and "toy-c" in r.output and "toy-a" in r.output
    assert not (run_dir / "toy-a").exists() and not (run_dir / "toy-a.partial").exists()
