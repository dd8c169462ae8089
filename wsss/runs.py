"""Run directories, per-stage manifests, atomic stage outputs and up-to-date checks.

Layout: ``runs/<name>/<stage>/`` holds a finished stage's outputs, its ``manifest.json`` and the resolved
``config.yaml``. A stage writes into ``<stage>.partial/`` and the folder is renamed into place only when the
stage returns, so a killed stage never leaves a ``done`` manifest over partial outputs. A later attempt with the
same config and inputs keeps ``<stage>.partial/`` (training stages resume from the checkpoints in it); a
different config wipes it.

A finished stage is up to date when its config sections hash the same, its upstream stages' output digests are
unchanged, and its external inputs (the dataset files) have the same fingerprint. Digests are content hashes
of every output file, so a stage that re-runs with identical output does not invalidate the stages after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from wsss import __version__
from wsss import distributed as dist
from wsss.atomic import atomic_write_text, write_json
from wsss.auto import has_auto, resolve_auto
from wsss.config.load import dump_yaml
from wsss.config.pipelines import load_pipeline
from wsss.config.tree import Config, section_dict, section_hash
from wsss.data.images import image_size
from wsss.data.index import read_dataset_info, read_train_index
from wsss.data.stats import SizeStats
from wsss.errors import StageError
from wsss.hashing import MANIFEST, file_changed, file_record, read_manifest
from wsss.locks import lock_held, stage_lock
from wsss.stages import Stage, check_pipeline, get_stage
from wsss.staleness import settings_match

INTERRUPTED = "interrupted"  # a partial attempt whose process is gone; the next run resumes it
CORRUPT = "corrupt"  # a finished stage whose output files changed since its manifest recorded them
PACKAGES = ("torch", "torchvision", "timm", "numpy", "opencv-python-headless", "scikit-image", "pydensecrf2")


# ------------------------------------------------------------------------------------------------ file helpers
def hash_outputs(stage_dir: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """Content hash, size and modification time of every file in a stage folder (manifest and config excluded) and
    their combined digest (of the hashes and sizes: a copy of the folder has the same digest)."""
    files = {}
    for p in sorted(stage_dir.rglob("*")):
        rel = p.relative_to(stage_dir).as_posix()
        if p.is_file() and rel not in (MANIFEST, "config.yaml") and not rel.startswith("checkpoints/"):
            files[rel] = file_record(p)
    content = {k: {"sha256": v["sha256"], "size": v["size"]} for k, v in files.items()}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return files, digest


def changed_files(stage_dir: Path, manifest: dict[str, Any]) -> list[tuple[Path, str]]:
    """(file, why) for each output file that is no longer what ``manifest`` recorded (:func:`file_changed`: sizes
    always, the sha256 where a file's time moved); [] for an intact stage."""
    problems = []
    for rel, record in (manifest.get("files") or {}).items():
        why = file_changed(stage_dir / rel, record) if isinstance(record, dict) else "no record"
        if why:
            problems.append((stage_dir / rel, why))
    return problems


def fingerprint(paths: list[Path]) -> str:
    """Cheap fingerprint of external inputs: relative path, size and mtime of every file under each path."""
    h = hashlib.sha256()
    for root in paths:
        root = Path(root)
        h.update(os.fsencode(root.resolve()))  # bytes: a name that is not UTF-8 still fingerprints
        items = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for p in items:
            st = p.stat()
            h.update(os.fsencode(p.relative_to(root) if p != root else p.name))
            h.update(f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def environment() -> dict[str, Any]:
    """Versions and provenance recorded in each manifest."""
    versions = {"wsss": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {"versions": versions, "git_commit": _git_commit(), "host": platform.node(), "argv": sys.argv}


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _train_sizes(index: Path):
    """The training images' size statistics of a ``dataset.json`` written before it recorded them (an older wsss):
    read from the image headers, so upgrading does not re-run `prepare` and everything after it."""

    rows = read_train_index(index)
    train = [r for r in rows if r.split == "train"] or rows  # header reads only for the images the stats need
    return SizeStats.of_train((r.split, image_size(r.path)) for r in train)


# ------------------------------------------------------------------------------------------------ the run
class Run:
    """One run folder: finds stage folders, decides what is up to date and runs stages atomically."""

    def __init__(self, run_dir: Path, cfg: Config, echo=click.echo):
        check_pipeline(load_pipeline(cfg.run.pipeline))  # every stage it names is registered
        self.dir = Path(run_dir)
        self.raw_cfg = cfg  # as loaded: `auto` settings unresolved
        self.echo = echo
        self._resolved: tuple[tuple[int, int], Config] | None = None

    @property
    def cfg(self) -> Config:
        """The config every stage sees: ``auto`` settings resolved from the finished prepare's ``dataset.json``
        (:mod:`wsss.auto`), so manifests record, and staleness compares, the values actually used. Before prepare
        has run they stay ``auto`` (prepare reads none of them)."""

        if not has_auto(self.raw_cfg):
            return self.raw_cfg
        info = self.stage_dir("prepare") / "dataset.json"
        try:
            st = info.stat()
        except FileNotFoundError:
            return self.raw_cfg
        key = (st.st_mtime_ns, st.st_size)
        if self._resolved is None or self._resolved[0] != key:
            index = info.with_name("index.csv")
            sizes = read_dataset_info(index).sizes or _train_sizes(index)
            self._resolved = (key, resolve_auto(self.raw_cfg, sizes, info))
        return self._resolved[1]

    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def _recover(self, name: str) -> None:
        """Finish or undo a swap interrupted between the two renames of :meth:`_publish`."""
        final, old = self.stage_dir(name), self.dir / f"{name}.old"
        if old.exists():
            if final.exists():
                shutil.rmtree(old)
            else:
                os.replace(old, final)

    def inputs_of(self, stage: Stage) -> dict[str, Path]:
        """Folders of the upstream stages; each must have finished and be current for this config."""
        inputs = {}
        for up_name in stage.inputs(self.cfg):
            up = get_stage(up_name)
            self._recover(up_name)
            d = self.stage_dir(up_name)
            m = read_manifest(d)
            if m is None or m.get("status") != "done":
                raise StageError(
                    d,
                    f"stage {stage.name!r} needs the output of {up_name!r}, which has not finished",
                    f"run `wsss run --to {stage.name}` or `wsss run-stage {up_name}` first",
                )
            if not self._same_config(m, up.sections):
                raise StageError(
                    d,
                    f"{up_name!r} ran with a different config than the current one",
                    f"re-run it: `wsss run --to {stage.name}` re-runs stale stages in order",
                )
            changed = changed_files(d, m)
            if changed:
                (path, why), more = changed[0], len(changed) - 1
                raise StageError(
                    path,
                    f"changed after {up_name!r} wrote it: {why}" + (f" ({more} more file(s) too)" if more else ""),
                    f"re-run that stage: `wsss run-stage {up_name} --force`, or `wsss run` (redoes it)",
                )
            inputs[up_name] = d
        return inputs

    def expected(self, stage: Stage, inputs: dict[str, Path]) -> dict[str, Any]:
        """What a current manifest of ``stage`` must record: config hash, input digests, external fingerprint."""
        return {
            "config_hash": section_hash(self.cfg, stage.sections),
            "inputs": {k: read_manifest(v)["digest"] for k, v in inputs.items()},
            "external": fingerprint(stage.external(self.cfg)),
        }

    def status(self, stage: Stage) -> str:
        """``done`` (up to date), ``stale``, ``corrupt`` (an output file changed since the stage wrote it: `wsss run`
        redoes it), ``missing``, ``blocked``, or of a partial attempt: ``running`` (a live process holds the stage's
        lock), ``interrupted`` (its manifest says running, but its process is gone: killed, or the machine went down)
        or ``failed``."""
        self._recover(stage.name)
        m = read_manifest(self.stage_dir(stage.name))
        if m is None or m.get("status") != "done":
            pm = read_manifest(self.dir / f"{stage.name}.partial")
            if pm is None:
                return "missing"
            if pm.get("status") == "running" and not lock_held(self.dir, stage.name):
                return INTERRUPTED
            return pm.get("status", "missing")
        if changed_files(self.stage_dir(stage.name), m):
            return CORRUPT
        try:
            exp = self.expected(stage, self.inputs_of(stage))
        except StageError:
            return "blocked"
        return "done" if self._is_current(stage.name, m, exp) else "stale"

    def _same_config(self, manifest: dict[str, Any], sections: tuple[str, ...]) -> bool:
        """The manifest's stage ran with this config (options added to wsss since, at their defaults, match)."""
        if manifest.get("config_hash") == section_hash(self.cfg, sections):
            return True
        return settings_match(manifest.get("config"), self.cfg, sections)

    def _is_current(self, name: str, manifest: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
        if manifest is None or manifest.get("status") != "done":
            return False
        files_ok = not changed_files(self.stage_dir(name), manifest)
        same = all(manifest.get(k) == v for k, v in expected.items() if k != "config_hash")
        return files_ok and same and self._same_config(manifest, get_stage(name).sections)

    def run_stage(self, name: str, force: bool = False) -> Path:
        """Run one stage unless it is up to date; return its output folder.

        Under torchrun, rank 0 alone locks, decides and writes the manifest; its decision reaches every rank. A
        distributed stage (``Stage.distributed``) runs on every rank into the same partial folder; any other stage
        runs on rank 0 while the others wait. Rank 0 publishes once every rank has finished, so a rank that dies
        (which ends the whole process group) leaves no ``done`` manifest.
        """

        stage = get_stage(name)
        final = self.stage_dir(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        main = dist.is_main()
        with stage_lock(self.dir, name) if main else contextlib.nullcontext():
            plan = self._begin(stage, force) if main else None
            plan = dist.broadcast_object(plan)
            if plan is None:
                return final
            partial, manifest = Path(plan["partial"]), plan["manifest"]
            inputs = {k: Path(v) for k, v in manifest["input_dirs"].items()}
            t0 = time.perf_counter()
            try:
                runs_here = main or stage.distributed
                outputs = (stage.run(self.cfg, inputs, partial) or {}) if runs_here else {}
                outputs = dist.broadcast_object(outputs)
            except KeyboardInterrupt:  # Ctrl-C: the manifest stays "running", so the stage shows as interrupted
                raise
            except BaseException as e:
                if main:
                    manifest.update(status="failed", finished=_now(), error=f"{type(e).__name__}: {e}")
                    write_json(partial / MANIFEST, manifest | {"traceback": traceback.format_exc(limit=20)})
                raise
            dist.barrier()
            if main:
                files, digest = hash_outputs(partial)
                manifest.update(
                    status="done",
                    finished=_now(),
                    seconds=round(time.perf_counter() - t0, 3),
                    files=files,
                    digest=digest,
                    outputs={k: Path(v).relative_to(partial).as_posix() for k, v in outputs.items()},
                )
                write_json(partial / MANIFEST, manifest)
                self._publish(name, partial)
                self.echo(f"{name}: done in {manifest['seconds']:.1f} s")
            dist.barrier()
            return final

    def _begin(self, stage: Stage, force: bool) -> dict[str, Any] | None:
        """Decide whether ``stage`` runs; if so, prepare its partial folder and ``running`` manifest (rank 0)."""

        name, final = stage.name, self.stage_dir(stage.name)
        self._recover(name)
        inputs = self.inputs_of(stage)
        expected = self.expected(stage, inputs)
        current = read_manifest(final)
        if not force and self._is_current(name, current, expected):
            self.echo(f"{name}: up to date ({final}), skipped")
            return None
        changed = changed_files(final, current) if current is not None and current.get("status") == "done" else []
        if changed:
            self.echo(f"{name}: {changed[0][0]} changed since the stage finished ({changed[0][1]}); redoing it")
        partial = self.dir / f"{name}.partial"
        pm = read_manifest(partial)
        if pm is None or any(pm.get(k) != v for k, v in expected.items()) or force:
            shutil.rmtree(partial, ignore_errors=True)
        elif pm.get("status") == "running":
            self.echo(f"{name}: resuming the attempt started {pm.get('started', '?')} and interrupted")
        partial.mkdir(parents=True, exist_ok=True)
        manifest = {
            "stage": name,
            "status": "running",
            **expected,
            "config": section_dict(self.cfg, stage.sections),
            "input_dirs": {k: str(v) for k, v in inputs.items()},
            **environment(),
            "world_size": dist.world_size(),
            "started": _now(),
        }
        write_json(partial / MANIFEST, manifest)
        atomic_write_text(partial / "config.yaml", dump_yaml(self.cfg.to_dict()))
        self.echo(f"{name}: running -> {final}")
        return {"partial": str(partial), "manifest": manifest}

    def _publish(self, name: str, partial: Path) -> None:  # rank 0 only
        """Move the finished ``partial`` folder into place, replacing an older output."""
        final, old = self.stage_dir(name), self.dir / f"{name}.old"
        if final.exists():
            os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(OSError):  # persist the renames
            fd = os.open(self.dir, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    def run_pipeline(self, stages: list[str], force: bool = False) -> None:
        """Run ``stages`` in order; each re-runs only if stale (a re-run makes later stages stale in turn)."""
        for name in stages:
            self.run_stage(name, force=force)
