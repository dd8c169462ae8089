"""One rule for pool sizes: a configured count wins; 0 means the cores this process may use, optionally capped."""

from __future__ import annotations

import os

from wsss import parallel


def test_configured_count_wins():
    assert parallel.pool_size(3) == 3
    assert parallel.pool_size(7, cap=4) == 7  # the cap bounds only the automatic choice


def test_automatic_count_is_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert parallel.usable_cores() == 3  # the process's cores, not the machine's
    assert parallel.pool_size(0) == 3 and parallel.pool_size(0, cap=2) == 2


def test_without_affinity_the_machine_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert parallel.usable_cores() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert parallel.pool_size(0, cap=4) == 4
