"""The self-training rounds the retrain round and the segmenter share: each round trains on the previous round's
masks and relabels; a killed stage resumes in the round where it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsss.train.self_training import ROUND_DONE, ROUND_TRAINED, remove_rounds, self_training


def _rounds(tmp_path: Path, calls: list, fail_in: tuple[str, int] | None = None):
    def train(k: int, masks: Path, model_dir: Path) -> None:
        if fail_in == ("train", k):
            raise KeyboardInterrupt
        calls.append(("train", k, masks.parent.name))
        (model_dir / "checkpoints").mkdir(parents=True)

    def relabel(k: int, model_dir: Path, rdir: Path) -> None:
        if fail_in == ("relabel", k):
            raise KeyboardInterrupt
        calls.append(("relabel", k, model_dir.parent.name))
        (rdir / "masks").mkdir()

    return train, relabel


def test_each_round_learns_from_the_last_ones_masks(tmp_path: Path):
    calls: list = []
    first = tmp_path / "pseudo-labels" / "masks"
    last = self_training(tmp_path / "out", 3, first, *_rounds(tmp_path, calls), announce=lambda *_: None)
    assert last == tmp_path / "out" / "round3" / "masks"
    assert calls == [
        ("train", 1, "pseudo-labels"),
        ("relabel", 1, "round1"),
        ("train", 2, "round1"),
        ("relabel", 2, "round2"),
        ("train", 3, "round2"),
        ("relabel", 3, "round3"),
    ]
    for k in (1, 2, 3):  # markers written, the training checkpoint gone
        rdir = tmp_path / "out" / f"round{k}"
        assert (rdir / ROUND_TRAINED).is_file() and (rdir / ROUND_DONE).is_file()
        assert not (rdir / "model" / "checkpoints").exists()
    remove_rounds(tmp_path / "out", 3)
    assert not list((tmp_path / "out").iterdir())
    assert self_training(tmp_path / "x", 0, first, *_rounds(tmp_path, []), announce=lambda *_: None) == first


@pytest.mark.parametrize("killed", [("relabel", 2), ("train", 2)])
def test_a_killed_run_resumes_in_the_round_where_it_stopped(tmp_path: Path, killed: tuple[str, int]):
    calls: list = []
    first = tmp_path / "pseudo-labels" / "masks"
    with pytest.raises(KeyboardInterrupt):
        self_training(tmp_path / "out", 2, first, *_rounds(tmp_path, calls, killed), announce=lambda *_: None)
    calls.clear()
    said: list[int] = []
    self_training(tmp_path / "out", 2, first, *_rounds(tmp_path, calls), announce=lambda k, _m: said.append(k))
    # round 1 is done: not announced, trained or relabelled again; round 2 trains again only if it had not finished
    assert said == [2]
    expected = (
        [("relabel", 2, "round2")] if killed[0] == "relabel" else [("train", 2, "round1"), ("relabel", 2, "round2")]
    )
    assert calls == expected
