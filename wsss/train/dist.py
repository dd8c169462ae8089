"""Rank awareness for single-process and DDP runs: only rank 0 logs and writes."""

from __future__ import annotations

import torch
import torch.distributed as dist


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


def resolve_device(name: str, where: str = "run.device") -> torch.device:
    """``auto`` -> this rank's CUDA device when there is one, else the CPU; ``where`` names the setting in errors."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from wsss.errors import ConfigError

        raise ConfigError(where, "cuda requested but no CUDA device is available", f"set {where} to auto or cpu")
    return torch.device("cuda", rank() % torch.cuda.device_count())
