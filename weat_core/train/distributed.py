"""Distributed helpers: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; metrics are reduced
across ranks."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .. import WeatError


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise WeatError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    dev = torch.device(name)
    return torch.device("cuda", local_rank) if dev.type == "cuda" and dev.index is None else dev


def _all_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    return _all_reduce(t, world)


def _all_reduce(t: torch.Tensor, world: int, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """`t` reduced by `op` over every rank (a copy; `t` itself where there is one rank)."""
    if world > 1:
        t = t.clone()
        dist.all_reduce(t, op=op)
    return t


def _all_cat(t: torch.Tensor, world: int) -> torch.Tensor:
    if world <= 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
