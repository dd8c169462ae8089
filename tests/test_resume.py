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
