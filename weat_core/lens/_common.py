"""A model as the lens uses it: a private inference copy, its device and memory format,
batched fp32 logits, and a thread cap for single-image work."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ..attacks import eval_mode


def prepare(model: nn.Module, channels_last: Optional[bool] = None) -> nn.Module:
    """A private, inference-ready copy of `model`: eval mode, parameters frozen (attacks only
    need input gradients) and, on CPU, channels_last memory (about 2× faster convolutions)."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    dev = _device(m)
    if channels_last if channels_last is not None else dev.type == "cpu":
        m = m.to(memory_format=torch.channels_last)
    return m


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _to_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x on the model's device, in the model's memory format."""
    x = x.to(_device(model), torch.float32)
    w = next((m.weight for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if w is not None and x.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
            callback: Optional[Callable[[int, int, str], None]] = None) -> torch.Tensor:
    """The logits of x in batches, in fp32 on the CPU; `callback(done, total, "")` after each."""
    out = []
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            out.append(model(_to_model(model, x[i:i + batch_size])).float().cpu())
            if callback is not None:
                callback(min(i + batch_size, x.shape[0]), x.shape[0], "")
    return torch.cat(out)  # (N, K)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with n intra-op threads. Work on a single image gains nothing from a second thread,
    and on a busy 2-core machine (a shared Space) the OpenMP hand-offs make it several times
    slower. (The setting is process-wide; it is restored right after.)"""
    old = torch.get_num_threads()
    if n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
