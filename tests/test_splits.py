"""Grouped, stratified, deterministic splits."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from wsss.config import SplitConfig
from wsss.data.base import Sample
from wsss.data.splits import assign_splits
from wsss.errors import ConfigError


def dataset(n_groups: int = 50, per_group: int = 8, defect_every: int = 4) -> list[Sample]:
    """KSDD-like: groups of images, one defective image in every `defect_every`-th group."""
    out = []
    for g in range(n_groups):
        for k in range(per_group):
            labels = ("defect",) if g % defect_every == 0 and k == 0 else ()
            out.append(Sample(id=f"g{g:02d}_{k}", path=Path(f"/x/g{g}/{k}.png"), labels=labels, group=f"g{g:02d}"))
    return out


def test_groups_never_straddle_splits_and_ratios_are_close():
    samples = dataset()
    a = assign_splits(samples, SplitConfig(train=0.6, val=0.2, test=0.2))
    by_group: dict[str, set[str]] = {}
    for s in samples:
        by_group.setdefault(s.group, set()).add(a[s.id].split)
    assert all(len(v) == 1 for v in by_group.values())
    counts = Counter(a[s.id].split for s in samples)
    assert abs(counts["train"] / len(samples) - 0.6) < 0.05 and abs(counts["test"] / len(samples) - 0.2) < 0.05
    defects = Counter(a[s.id].split for s in samples if s.labels)
    assert defects["train"] >= 6 and defects["val"] >= 2 and defects["test"] >= 2  # stratified: 13 defective


def test_deterministic_and_independent_of_input_order():
    samples = dataset()
    a = assign_splits(samples, SplitConfig(seed=3))
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(shuffled, SplitConfig(seed=3)) == a
    assert assign_splits(samples, SplitConfig(seed=4)) != a


def test_every_class_reaches_every_split():
    classes = ["Blowhole", "Break", "Crack", "Fray", "Uneven"]
    samples = [Sample(id=f"{c}_{i}", path=Path(f"/x/{c}{i}"), labels=(c,)) for c in classes for i in range(10)]
    samples += [Sample(id=f"ok_{i}", path=Path(f"/x/ok{i}")) for i in range(50)]
    a = assign_splits(samples, SplitConfig(train=0.6, val=0.2, test=0.2))
    for c in classes:
        got = Counter(a[s.id].split for s in samples if s.labels == (c,))
        assert got == {"train": 6, "val": 2, "test": 2}, (c, got)


def test_kfold_tests_each_group_exactly_once():
    samples = dataset()
    test_groups = []
    for fold in range(3):
        a = assign_splits(samples, SplitConfig(mode="kfold", folds=3, fold=fold, val=0.15))
        test_groups += sorted({s.group for s in samples if a[s.id].split == "test"})
        assert {a[s.id].fold for s in samples} == {0, 1, 2}
        assert all((a[s.id].split == "test") == (a[s.id].fold == fold) for s in samples)
        assert Counter(a[s.id].split for s in samples if s.labels)["test"] >= 4
    assert sorted(test_groups) == sorted({s.group for s in samples})


def test_official_split_keeps_test_and_carves_val_from_train():
    samples = [
        Sample(id=f"tr{i}", path=Path(f"/t{i}"), labels=("d",) if i % 3 == 0 else (), split="train") for i in range(30)
    ]
    samples += [
        Sample(id=f"te{i}", path=Path(f"/e{i}"), labels=("d",) if i % 2 else (), split="test") for i in range(10)
    ]
    a = assign_splits(samples, SplitConfig(mode="official", val=0.2))
    assert all(a[f"te{i}"].split == "test" for i in range(10))
    assert Counter(a[f"tr{i}"].split for i in range(30)) == {"train": 24, "val": 6}
    with pytest.raises(ConfigError, match="has no official split"):
        assign_splits(dataset(2, 2), SplitConfig(mode="official"), kind="folder")


def test_too_few_groups_for_folds():
    with pytest.raises(ConfigError, match="5 folds but only 2 groups"):
        assign_splits(dataset(2, 2), SplitConfig(mode="kfold", folds=5))
