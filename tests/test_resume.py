"""The per-image progress log that lets killed stages resume."""

from pathlib import Path

from wsss.resume import RowLog


def test_rows_survive_and_torn_or_orphan_rows_are_redone(tmp_path: Path):
    art = tmp_path / "out"
    art.mkdir()
    log = RowLog(tmp_path / "rows.jsonl")
    assert RowLog.done_in(tmp_path, lambda i: art / i) == {}
    with log:
        for i in ("a", "b", "c"):
            (art / i).write_text("x")
            log.append({"id": i, "v": 1})
        log.append({"id": "a", "v": 2})  # a redone image: the later row wins
    (art / "b").unlink()  # row written but artifact lost: redo b
    with open(log.path, "a") as f:
        f.write('{"id": "d", "v"')  # torn by a kill mid-write
    (art / "d").write_text("x")
    done = RowLog.done_in(tmp_path, lambda i: art / i)
    assert done == {"a": {"id": "a", "v": 2}, "c": {"id": "c", "v": 1}}
    with log:  # appending after a torn line starts a fresh line
        log.append({"id": "e"})
    (art / "e").write_text("x")
    assert "e" in RowLog.done_in(tmp_path, lambda i: art / i)
    RowLog.remove_all(tmp_path)
    assert not log.path.exists()
    RowLog.remove_all(tmp_path)  # idempotent


def _images(n: int) -> list:
    from types import SimpleNamespace

    return [SimpleNamespace(id=f"img{i}") for i in range(n)]


def test_an_image_pass_shares_what_is_left_among_ranks_and_resumes(tmp_path: Path, monkeypatch):
    """Rank 1 of 2 takes every other image still to do and logs to its own file; a stage that rank 0 runs alone
    (shared=False) takes them all and waits for no rank."""
    import wsss.resume as resume

    barriers = []
    monkeypatch.setattr(resume.dist, "rank", lambda: 1)
    monkeypatch.setattr(resume.dist, "world_size", lambda: 2)
    monkeypatch.setattr(resume.dist, "barrier", lambda: barriers.append(1))
    art = tmp_path / "art"
    art.mkdir()
    rows = _images(7)
    with RowLog(tmp_path / "rows.1.jsonl") as log:  # an earlier attempt finished img0
        (art / "img0").write_text("x")
        log.append({"id": "img0"})
    shared = resume.ImagePass(tmp_path, rows, lambda i: art / i, "toy")
    assert [r.id for r in shared.todo] == ["img2", "img4", "img6"] and len(barriers) == 1
    with shared:
        for batch in shared.batches(2):
            for r in batch:
                (art / r.id).write_text("x")
                shared.record({"id": r.id})
    # leaving: one barrier before reading every rank's log, one after (no rank's finish() deletes a log being read)
    assert len(barriers) == 3 and set(shared.done) == {"img0", "img2", "img4", "img6"}
    assert (tmp_path / "rows.1.jsonl").is_file()
    alone = resume.ImagePass(tmp_path, rows, lambda i: art / i, "toy", shared=False)
    assert [r.id for r in alone.todo] == ["img1", "img3", "img5"] and len(barriers) == 3
    with alone:
        for r in alone.todo:
            (art / r.id).write_text("x")
            alone.record({"id": r.id})
    assert len(barriers) == 3 and set(alone.done) == {r.id for r in rows}
    alone.finish()
    assert not list(tmp_path.glob("rows*.jsonl"))
