"""How many threads or processes to use: one rule for every pool in wsss.

The usable cores are the ones this process may run on (its CPU affinity: a container's or ``taskset``'s limit),
not the machine's count, which over-subscribes a CI runner or a shared server; where the platform cannot say
(macOS, Windows), the machine's count.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def pool_size(workers: int, cap: int | None = None) -> int:
    """A configured worker count: ``workers`` itself when > 0, else the usable cores, at most ``cap`` when given."""
    if workers > 0:
        return workers
    cores = usable_cores()
    return min(cap, cores) if cap is not None else cores
