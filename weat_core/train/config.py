"""Training settings: the methods, `TrainConfig` and the learning-rate schedules (`lr_at`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .. import DEFAULT_CPU_ARCH, WeatError

__all__ = ["TrainConfig", "lr_at", "momentum_at", "onecycle_cos_at", "METHODS", "SCHEDULES", "COMPILE_MODES"]

METHODS = ("standard", "sat", "trades", "mart", "weat-adv", "weat-nat")
# torch.compile's modes: "reduce-overhead" replays CUDA graphs (fewer kernel launches on a GPU),
# the max-autotune ones also search Triton kernels (minutes of compilation)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SCHEDULES = ("onecycle", "step", "cosine", "constant", "onecycle-cos")
# onecycle-cos: torch.optim.lr_scheduler.OneCycleLR with its defaults, the schedule of the WEAT
# authors' training code (`OneCycleLR(optimizer, max_lr=lr, pct_start=0.25, ...)`, stepped every batch)
ONECYCLE_COS = {"div_factor": 25.0, "final_div_factor": 1e4, "base_momentum": 0.85, "max_momentum": 0.95}


@dataclass
class TrainConfig:
    method: str = "weat-adv"
    arch: str = DEFAULT_CPU_ARCH
    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9  # (onecycle-cos cycles its own)
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # one of SCHEDULES
    warmup: float = 0.25  # fraction of training spent warming up (onecycle, onecycle-cos)
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
    max_epochs: Optional[int] = None  # with `minutes`: at most this many (the budget only shortens the run)
    # exponential moving average of the weights, at most this decay per step (e.g. 0.999; warmed up,
    # see `train`): the averaged weights are evaluated every epoch, checkpointed and returned
    ema: Optional[float] = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise WeatError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise WeatError(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise WeatError("epochs and batch size must be at least 1")
        bad = [f"{name} {value} ({want})" for name, value, ok, want in (
            ("lr", self.lr, self.lr >= 0, "at least 0"),
            ("momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight decay", self.weight_decay, self.weight_decay >= 0, "at least 0"),
            ("warm-up", self.warmup, 0 <= self.warmup < 1, "a share of training in [0, 1)"),
            ("eps", self.eps, self.eps >= 0, "at least 0"),
            ("alpha", self.alpha, self.alpha > 0, "above 0"),
            ("attack steps", self.attack_steps, self.attack_steps >= 1, "at least 1"),
            ("eval steps", self.eval_steps, self.eval_steps >= 1, "at least 1"),
            ("beta", self.beta, self.beta >= 0, "at least 0"),
            ("limit", self.limit, self.limit is None or self.limit >= 1, "at least 1 image"),
            ("eval size", self.eval_size, self.eval_size >= 1, "at least 1 image")) if not ok]
        if bad:
            raise WeatError("invalid training settings: " + "; ".join(bad))
        if self.compile_mode is not None:
            if self.compile_mode not in COMPILE_MODES:
                raise WeatError(f"unknown compile mode {self.compile_mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
            self.compile = True
        if self.minutes is not None and not self.minutes > 0:
            raise WeatError(f"the time budget must be a positive number of minutes, not {self.minutes}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise WeatError(f"the most epochs of a time budget must be at least 1, not {self.max_epochs}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise WeatError(f"the weight average's decay must lie between 0 and 1 (e.g. 0.999), not {self.ema}")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at optimizer step `step` of `total` (a pure function, so resuming needs no
    scheduler state). onecycle: linear 0 → lr over `warmup`, then linear → 0; step: ÷10 at 50 %
    and 75 % (Rice et al. 2020's robust-overfitting schedule); cosine; constant; onecycle-cos:
    PyTorch's OneCycleLR (`onecycle_cos_at`)."""
    t = step / max(total, 1)
    if cfg.schedule == "onecycle":
        w = cfg.warmup
        return cfg.lr * (t / w if t < w else max(0.0, (1 - t) / (1 - w)))
    if cfg.schedule == "step":
        return cfg.lr * (0.1 if t >= 0.5 else 1.0) * (0.1 if t >= 0.75 else 1.0)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "onecycle-cos":
        return onecycle_cos_at(step, total, cfg.lr, cfg.warmup)[0]
    return cfg.lr


def momentum_at(step: int, total: int, cfg: TrainConfig) -> float:
    """SGD momentum at optimizer step `step` of `total`: `cfg.momentum`, except under onecycle-cos,
    which cycles it as OneCycleLR does (0.95 → 0.85 over the warm-up, back to 0.95 by the end)."""
    if cfg.schedule == "onecycle-cos":
        return onecycle_cos_at(step, total, cfg.lr, cfg.warmup)[1]
    return cfg.momentum


def _annealing_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def onecycle_cos_at(step: int, total: int, max_lr: float, pct_start: float) -> tuple[float, float]:
    """(learning rate, momentum) at optimizer step `step` of `total` under
    `torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps=total, pct_start=pct_start)`
    with its other defaults (cosine annealing; lr from max_lr/25 up to max_lr, then down to
    max_lr/2.5e5; momentum cycled between 0.95 and 0.85), written as a pure function of the step
    so that a resumed run needs no scheduler state; a test holds it to torch's scheduler. (Where
    the warm-up ends exactly at step 0, where torch divides by zero, the warm-up counts as done.)"""
    c = ONECYCLE_COS
    initial = max_lr / c["div_factor"]
    warm_end = float(pct_start * total) - 1  # the step where the warm-up ends, as torch counts it
    if step <= warm_end and warm_end > 0:
        pct = step / warm_end
        return _annealing_cos(initial, max_lr, pct), _annealing_cos(c["max_momentum"], c["base_momentum"], pct)
    pct = (step - warm_end) / max(total - 1 - warm_end, 1e-12)
    return (_annealing_cos(max_lr, initial / c["final_div_factor"], pct),
            _annealing_cos(c["base_momentum"], c["max_momentum"], pct))
