"""A wall-clock budget (`train --minutes`): time a few throwaway steps and the per-epoch
evaluation (`_calibrate`), plan the epochs that fit (`epochs_for_budget`), and after the first real
epoch re-plan where that is exact (`replanned_epochs`) or say where the plan will end."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from .config import TrainConfig, lr_at
from .steps import augment, train_step

__all__ = ["epochs_for_budget", "replanned_epochs", "CALIBRATION_STEPS"]

log = logging.getLogger(__name__)


CALIBRATION_STEPS = (3, 10)  # throwaway steps: warm-up (cuDNN autotuning, torch.compile), then timed


def _check_pace(cfg: TrainConfig, epoch: int, elapsed_s: float, epoch_s: float) -> None:
    """After a budgeted run's first epoch: say so when, at the pace that epoch really took, the
    planned epochs end more than 10 % past the budget or leave more than a fifth of it unused (the
    steps timed at the start ran at another speed: another job on the machine or GPU started or
    ended), for the schedules that cannot be re-planned exactly (`replanned_epochs`): the plan
    stands, so the run stays the one its epoch count gives."""
    budget = 60 * cfg.minutes
    end = elapsed_s + (cfg.epochs - epoch) * epoch_s
    if end > 1.1 * budget:
        log.warning("at the pace of epoch %d (%.1f s), the %d planned epochs end after %.1f min, past the %.4g-minute "
                    "budget: the steps timed at the start ran faster (another job on this machine or GPU?). The "
                    "plan stands (this schedule's first epoch depends on the epoch count, so a new count would not be "
                    "the run --epochs gives); stop the run when you must (each epoch's checkpoint is kept)",
                    epoch, epoch_s, cfg.epochs, end / 60, cfg.minutes)
    elif end < 0.8 * budget:
        log.info("at the pace of epoch %d (%.1f s), the %d planned epochs end after %.1f min, leaving %.1f of the "
                 "%.4g minutes unused: the steps timed at the start ran slower (another job on this machine or GPU?)",
                 epoch, epoch_s, cfg.epochs, end / 60, (budget - end) / 60, cfg.minutes)


def replanned_epochs(cfg: TrainConfig, epochs_done: int, steps_per_epoch: int, elapsed_s: float, epoch_s: float,
                     margin: float = 1.05) -> Optional[int]:
    """After a budgeted run's first epoch: the epoch count that fits the budget at the pace that
    epoch really took (`epoch_s`, evaluation included; `elapsed_s` since the run started), when it
    differs from the plan AND the learning rates of the steps already taken are exactly those the
    new count gives, so the run stays exactly the run `--epochs N` gives (the step and constant
    schedules, whose first epoch does not depend on the count; one-cycle and cosine do). Else None:
    the plan stands (`_check_pace` then says where it will end)."""
    more = max(0, int((60 * cfg.minutes - elapsed_s) // (margin * epoch_s)))
    new = min(epochs_done + more, cfg.max_epochs or 10**9)
    if new == cfg.epochs:
        return None
    taken = epochs_done * steps_per_epoch
    old_total, new_total = steps_per_epoch * cfg.epochs, steps_per_epoch * new
    if any(lr_at(s, old_total, cfg) != lr_at(s, new_total, cfg) for s in range(taken)):
        return None
    return new


def _after_first_epoch(cfg: TrainConfig, epoch: int, steps_per_epoch: int, elapsed_s: float, epoch_s: float,
                       rank: int, world: int, device: torch.device) -> TrainConfig:
    """A budgeted run's check of its plan after its first epoch: re-planned when that is exact
    (`replanned_epochs`; rank 0 decides for every rank), else the plan stands and `_check_pace`
    says where it will end. A resumed run (its first epoch here is not epoch 1) keeps its count:
    its budget was spent partly before, so only the pace is checked."""
    new = replanned_epochs(cfg, epoch, steps_per_epoch, elapsed_s, epoch_s) if rank == 0 and epoch == 1 else None
    if world > 1:
        t = torch.tensor([new or 0], device=device)
        dist.broadcast(t, 0)
        new = int(t) or None
    if new is None:
        if rank == 0:
            _check_pace(cfg, epoch, elapsed_s, epoch_s)
        return cfg
    if rank == 0:
        log.info("re-planned from %d to %d epochs: epoch %d took %.1f s (evaluation included), so %d epochs fit the "
                 "%.4g-minute budget; the steps taken had the learning rates %d epochs give, so the run is exactly "
                 "the one --epochs %d gives", cfg.epochs, new, epoch, epoch_s, new, cfg.minutes, new, new)
    return replace(cfg, epochs=new)


def epochs_for_budget(budget_s: float, spent_s: float, steps_per_epoch: int, step_s: float, eval_s: float,
                      margin: float = 1.05) -> int:
    """How many whole epochs fit the rest of a `budget_s`-second budget after `spent_s` seconds,
    when one step takes `step_s` and the per-epoch evaluation and checkpoint `eval_s` (with a
    `margin` for noise). At least one: a budget too small for an epoch still trains one."""
    per_epoch = margin * (steps_per_epoch * step_s + eval_s)
    return max(1, int((budget_s - spent_s) // per_epoch))


def _calibrate(model: nn.Module, fwd: nn.Module, opt: torch.optim.Optimizer, attack, loss_fn,
               xs: torch.Tensor, ys: torch.Tensor, per_rank: int, mf, cfg: TrainConfig, amp: bool,
               device: torch.device, world: int, evaluate_once: Callable[[], Any],
               attack_model: Optional[nn.Module] = None,
               should_stop: Optional[Callable[[], bool]] = None) -> Optional[tuple[float, float]]:
    """(seconds per training step, seconds per end-of-epoch evaluation), timed on throwaway
    steps and evaluations (the second, on a GPU or compiled). Weights, BatchNorm statistics,
    optimizer state and every RNG are restored afterwards, so the run that follows is exactly
    the run that `--epochs` alone would give. Every rank runs
    the same steps (DDP's collectives); the slowest rank's times are used. `should_stop()`
    (one process only) is polled after every step: None once it says stop, state restored."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(opt.state_dict())
    warm, timed = CALIBRATION_STEPS
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        g = torch.Generator(device=device).manual_seed(cfg.seed + 777)
        model.train()
        times = []
        for i in range(warm + timed):
            idx = torch.randint(0, xs.shape[0], (per_rank,), generator=g, device=device)
            xb = augment(xs[idx].float().div_(255), g).contiguous(memory_format=mf)
            sync()
            t0 = time.perf_counter()
            train_step(model, fwd, opt, attack, loss_fn, xb, ys[idx], cfg, amp, attack_model)
            sync()
            times.append(time.perf_counter() - t0)
            if should_stop is not None and should_stop():  # a Stop (or a server's time limit) while timing
                break
        # On a GPU or compiled, the first evaluation also pays for cuDNN's autotuning and for
        # compiling the eval-mode graphs: an H100 run timed 1.8 s for an evaluation that took
        # about 0.3 s in every epoch, and its plan left 1.7 of its 8 minutes unused. There the
        # second call is timed; on a CPU, uncompiled, the first is already representative.
        stopped = len(times) < warm + timed
        for _ in range(0 if stopped else 2 if (device.type == "cuda" or cfg.compile) else 1):
            t0 = time.perf_counter()
            evaluate_once()
            sync()
            eval_s = time.perf_counter() - t0
    model.load_state_dict(weights)
    opt.load_state_dict(opt_state)
    opt.zero_grad(set_to_none=True)
    if stopped:
        return None
    step_s = sorted(times[warm:])[timed // 2]  # the median: robust to a stray slow step
    t = torch.tensor([step_s, eval_s], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0]), float(t[1])
