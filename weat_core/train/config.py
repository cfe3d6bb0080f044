"""Training settings: the methods, `TrainConfig` and the learning-rate schedules (`lr_at`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .. import WeatError
from ..models import DEFAULT_CPU_ARCH

__all__ = ["TrainConfig", "lr_at", "METHODS", "SCHEDULES", "COMPILE_MODES"]

METHODS = ("standard", "sat", "trades", "mart", "weat-adv", "weat-nat")
# torch.compile's modes: "reduce-overhead" replays CUDA graphs (fewer kernel launches on a GPU),
# the max-autotune ones also search Triton kernels (minutes of compilation)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SCHEDULES = ("onecycle", "step", "cosine", "constant")


@dataclass
class TrainConfig:
    method: str = "weat-adv"
    arch: str = DEFAULT_CPU_ARCH
    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | step | cosine | constant
    warmup: float = 0.25  # fraction of training spent warming up (onecycle)
    eps: float = 8 / 255
    alpha: float = 2 / 255
    attack_steps: int = 10
    beta: float = 6.0
    limit: Optional[int] = None  # train on the first N images (class-balanced order)
    eval_size: int = 512  # fixed train/test subsets for the per-epoch metrics
    eval_steps: int = 10  # PGD steps of the per-epoch robust accuracy
    seed: int = 0
    out: Optional[str] = None
    device: str = "auto"
    amp: Optional[bool] = None  # bf16 autocast; default: on for CUDA and CPUs with native bf16
    channels_last: bool = True
    compile: bool = False
    compile_mode: Optional[str] = None  # torch.compile's mode ("reduce-overhead": CUDA graphs, ...); implies compile
    arch_kwargs: dict = field(default_factory=dict)
    init: Optional[str] = None  # start from these weights (checkpoint name, folder, file or Hub id)
    minutes: Optional[float] = None  # wall-clock budget: `epochs` is then chosen to fit it (`epochs_for_budget`)

    def __post_init__(self):
        if self.method not in METHODS:
            raise WeatError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise WeatError(f"unknown schedule {self.schedule!r}; choose onecycle, step, cosine or constant")
        if self.epochs < 1 or self.batch_size < 1:
            raise WeatError("epochs and batch size must be at least 1")
        if self.compile_mode is not None:
            if self.compile_mode not in COMPILE_MODES:
                raise WeatError(f"unknown compile mode {self.compile_mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
            self.compile = True
        if self.minutes is not None and not self.minutes > 0:
            raise WeatError(f"the time budget must be a positive number of minutes, not {self.minutes}")



def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at optimizer step `step` of `total` (a pure function, so resuming needs no
    scheduler state). onecycle: linear 0 → lr over `warmup`, then linear → 0; step: ÷10 at 50 %
    and 75 % (Rice et al. 2020's robust-overfitting schedule); cosine; constant."""
    t = step / max(total, 1)
    if cfg.schedule == "onecycle":
        w = cfg.warmup
        return cfg.lr * (t / w if t < w else max(0.0, (1 - t) / (1 - w)))
    if cfg.schedule == "step":
        return cfg.lr * (0.1 if t >= 0.5 else 1.0) * (0.1 if t >= 0.75 else 1.0)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    return cfg.lr
