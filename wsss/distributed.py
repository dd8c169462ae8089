"""Rank awareness for single-process and DDP runs: only rank 0 logs and writes.

Under ``torchrun`` (which sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address),
:func:`init_from_env` joins the process group: NCCL when CUDA is available (each rank on GPU ``LOCAL_RANK``), gloo on
the CPU. Without those variables everything here is the single-process no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from wsss.errors import ConfigError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group after the work succeeded on every rank: wait for all ranks, then destroy it.

    Without the barrier, a rank that finishes first tears its gloo connections down while a slower rank still uses
    them, and the slower one can abort at exit ("terminate called without an active exception"). Call it only on
    success: after a failure the other ranks may never reach the barrier.
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(name: str, where: str = "run.device") -> torch.device:
    """``auto`` -> this rank's CUDA device when there is one, else the CPU; ``where`` names the setting in errors."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(where, "cuda requested but no CUDA device is available", f"set {where} to auto or cpu")
    return torch.device("cuda", rank() % torch.cuda.device_count())


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment; True when running distributed."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; the identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward only, so after an epoch each rank holds the statistics of its
    own last batches; validating with those, ranks could reach different early-stopping decisions and diverge.
    """
    if is_distributed():
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
