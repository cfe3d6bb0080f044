"""Adversarial training (SAT, TRADES, MART, WEAT-adv, WEAT-nat, or standard) with live
energy tracking, atomic per-epoch checkpoints, exact resume and optional DDP.

Recipe (MISSION.md): SGD momentum 0.9, weight decay 5e-4, lr 0.1 one-cycle with 25 % warm-up,
batch 128, L∞ ε = 8/255; the TRADES attack (10 steps of 2/255) for TRADES/WEAT; PGD-10 for
SAT/MART; β = 6. Data lives on the training device as uint8 and is augmented there (random
crop with 4-pixel zero padding + horizontal flip), so the inner loop never waits for a loader.

`minutes` sets a wall-clock budget instead of an epoch count: a few throwaway steps and one
per-epoch evaluation (the second of two on a GPU or compiled) are timed (then undone), and the
run trains as many whole epochs as fit, with the learning-rate schedule spanning exactly those.
After the first real epoch the count is checked against that epoch's pace and re-planned where
that changes nothing already done (step and constant schedules); a resumed run keeps its count.

Run folder layout (`out`):
    log.jsonl          one JSON record per epoch
    state-NNNN/        newest complete checkpoint: model.safetensors, config.json,
                       optimizer.safetensors, trainer.json
    best-NNNN/         the checkpoint with the best test PGD accuracy so far (clean accuracy
                       for standard training)
    LATEST, BEST       one line each naming those folders; replaced atomically (os.replace),
                       so a kill at any moment leaves the last good checkpoint readable
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from . import WeatError
from .attacks import PGD, TradesAttack
from .data import ImageSet, dataset_info, load_split
from .energy import energy, energy_stats, joint_energy
from .evaluate import eval_logits
from .losses import get_loss
from .models import DEFAULT_CPU_ARCH, create_model

__all__ = ["TrainConfig", "TrainResult", "train", "train_step", "make_attack", "lr_at", "augment", "METHODS",
           "epochs_for_budget"]

log = logging.getLogger(__name__)

METHODS = ("standard", "sat", "trades", "mart", "weat-adv", "weat-nat")
# torch.compile's modes: "reduce-overhead" replays CUDA graphs (fewer kernel launches on a GPU),
# the max-autotune ones also search Triton kernels (minutes of compilation)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
EpochCallback = Callable[[int, dict], None]


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
        if self.schedule not in ("onecycle", "step", "cosine", "constant"):
            raise WeatError(f"unknown schedule {self.schedule!r}; choose onecycle, step, cosine or constant")
        if self.epochs < 1 or self.batch_size < 1:
            raise WeatError("epochs and batch size must be at least 1")
        if self.compile_mode is not None:
            if self.compile_mode not in COMPILE_MODES:
                raise WeatError(f"unknown compile mode {self.compile_mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
            self.compile = True
        if self.minutes is not None and not self.minutes > 0:
            raise WeatError(f"the time budget must be a positive number of minutes, not {self.minutes}")


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    out: Optional[Path]
    stopped: bool = False


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


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip, batched, on x's device.
    x (B, C, H, W) float → (B, C, H, W). Randomness from g, a generator on x's device (drawing
    on the device avoids a host→device copy, and so a host sync, every batch)."""
    B, C, H, W = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    sy = torch.randint(0, 2 * pad + 1, (B,), generator=g, device=x.device)
    sx = torch.randint(0, 2 * pad + 1, (B,), generator=g, device=x.device)
    flip = torch.rand(B, generator=g, device=x.device) < 0.5
    rows = (sy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (sx[:, None] + torch.arange(W, device=x.device))  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # (B, 1, 1, W)
    bidx = torch.arange(B, device=x.device)[:, None, None, None]
    cidx = torch.arange(C, device=x.device)[None, :, None, None]
    return xp[bidx, cidx, rows, cols]


# ---------------------------------------------------------------------------------------------
# distributed helpers (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)


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
    if world > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def _all_cat(t: torch.Tensor, world: int) -> torch.Tensor:
    if world <= 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


# ---------------------------------------------------------------------------------------------
# checkpoint folders


def _write_state(out: Path, tag: str, model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig,
                 epoch: int, step: int, best: float, record: dict, classes: tuple[str, ...],
                 runtime: Optional[dict] = None) -> str:
    from safetensors.torch import save_file

    from .checkpoints import save

    name = f"{tag}-{epoch:04d}"
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    metrics = {k: record[k] for k in ("test_clean_acc", "test_pgd_acc", "train_clean_acc", "train_pgd_acc",
                                      "delta_e", "energy_nat_mean", "energy_adv_mean") if k in record}
    save(model, tmp, {
        "dataset": cfg.dataset, "method": cfg.method, "classes": list(classes), "epoch": epoch,
        "training": asdict(cfg), "runtime": runtime or {}, "metrics": metrics, "metrics_note":
            f"per-epoch metrics on fixed {cfg.eval_size}-image subsets (PGD-{cfg.eval_steps}); "
            "run `python -m weat_core eval` for full test-set numbers",
    })
    if tag == "state":
        names = {id(p): n for n, p in model.named_parameters()}
        bufs = {f"momentum.{names[id(p)]}": s["momentum_buffer"].detach().cpu().contiguous()
                for p, s in opt.state.items() if s.get("momentum_buffer") is not None}
        if bufs:
            save_file(bufs, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer.json").write_text(json.dumps({"epoch": epoch, "step": step, "best": best}))
    final = out / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return name


def _publish(out: Path, pointer: str, name: str, prefix: str) -> None:
    """Point `out/pointer` at folder `name` atomically, then delete older `prefix-*` folders."""
    tmp = out / f".{pointer}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, out / pointer)
    for d in out.glob(f"{prefix}-*"):
        if d.name != name:
            shutil.rmtree(d, ignore_errors=True)


def _load_init(model: nn.Module, cfg: TrainConfig) -> None:
    """Copy the weights of checkpoint `cfg.init` into `model` (fine-tuning; the schedule and the
    optimizer start fresh). The checkpoint must be the same architecture with the same classes."""
    from .checkpoints import load

    src = load(cfg.init)
    want = (cfg.arch, dict(cfg.arch_kwargs), model.config["num_classes"])
    have = (src.config.get("arch"), dict(src.config.get("arch_kwargs", {})), src.config.get("num_classes"))
    if have != want:
        def says(a):
            return f"{a[0]}{' ' + json.dumps(a[1]) if a[1] else ''} with {a[2]} classes"

        raise WeatError(f"--init {cfg.init} is a {says(have)}; this run trains a {says(want)}")
    model.load_state_dict(src.state_dict())  # copied into the model's fp32 tensors (fp16 checkpoints too)
    log.info("initialised from %s", cfg.init)


def _load_resume(out: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int, float]:
    from safetensors.torch import load_file

    from .checkpoints import load_state_dict

    latest = out / "LATEST"
    if not latest.is_file():
        return 0, 0, -1.0
    d = out / latest.read_text().strip()
    model.load_state_dict(load_state_dict(d / "model.safetensors"))
    meta = json.loads((d / "trainer.json").read_text())
    if (d / "optimizer.safetensors").is_file():
        bufs = load_file(str(d / "optimizer.safetensors"))
        for n, p in model.named_parameters():
            if f"momentum.{n}" in bufs:
                opt.state[p]["momentum_buffer"] = bufs[f"momentum.{n}"].to(p.device)
    return int(meta["epoch"]), int(meta["step"]), float(meta["best"])


# ---------------------------------------------------------------------------------------------
# evaluation on fixed subsets


def _eval_subset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, amp: bool,
                 world: int, prefix: str) -> dict[str, Any]:
    """Clean and PGD accuracy and energy statistics on a fixed subset (sharded across ranks)."""
    attack = PGD(eps=cfg.eps, alpha=cfg.alpha, steps=cfg.eval_steps)
    nat_l, adv_l = [], []
    for i in range(0, x.shape[0], 256):
        xb, yb = x[i:i + 256], y[i:i + 256]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            xa = attack(model, xb, yb)
            nat_l.append(eval_logits(model, xb))
            adv_l.append(eval_logits(model, xa))
    ln, la = _all_cat(torch.cat(nat_l), world), _all_cat(torch.cat(adv_l), world)  # (N, K)
    yy = _all_cat(y, world)
    e_nat, e_adv = energy(ln), energy(la)
    rec = {f"{prefix}clean_acc": (ln.argmax(1) == yy).float().mean().item(),
           f"{prefix}pgd_acc": (la.argmax(1) == yy).float().mean().item()}
    tag = "" if prefix == "train_" else prefix
    rec.update(energy_stats(e_nat, f"{tag}energy_nat_"))
    rec.update(energy_stats(e_adv, f"{tag}energy_adv_"))
    rec[f"{tag}delta_e"] = rec[f"{tag}energy_nat_mean"] - rec[f"{tag}energy_adv_mean"]
    rec[f"{tag}joint_energy_nat_mean"] = joint_energy(ln, yy).mean().item()
    rec[f"{tag}joint_energy_adv_mean"] = joint_energy(la, yy).mean().item()
    return rec


# ---------------------------------------------------------------------------------------------


def make_attack(cfg: TrainConfig):
    """The attack that crafts x* for `cfg.method` (None for standard training)."""
    if cfg.method == "standard":
        return None
    if cfg.method in ("sat", "mart"):
        return PGD(eps=cfg.eps, alpha=cfg.alpha, steps=cfg.attack_steps)
    return TradesAttack(eps=cfg.eps, alpha=cfg.alpha, steps=cfg.attack_steps)


def train_step(model: nn.Module, fwd: nn.Module, opt: torch.optim.Optimizer, attack, loss_fn, xb: torch.Tensor,
               yb: torch.Tensor, cfg: TrainConfig, amp: bool, attack_model: Optional[nn.Module] = None):
    """One optimizer step: craft x* on `attack_model` (default `model`; eval mode, the plain
    module even under DDP, or its compiled wrapper), then forward natural and adversarial batches
    separately in train mode through `fwd` (the DDP or compiled wrapper), as the reference
    TRADES/MART code does, so BatchNorm sees each batch alone. SAT forwards only x*. Returns the
    LossOutput (per-sample terms)."""
    if cfg.compile_mode in ("reduce-overhead", "max-autotune"):  # CUDA graphs: a new step starts here
        torch.compiler.cudagraph_mark_step_begin()
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=amp):
        x_adv = attack(model if attack_model is None else attack_model, xb, yb) if attack is not None else None
        logits_nat = fwd(xb) if cfg.method != "sat" else None
        logits_adv = fwd(x_adv) if x_adv is not None else None
        res = loss_fn(logits_nat, logits_adv, yb, beta=cfg.beta)
    opt.zero_grad(set_to_none=True)
    res.loss.mean().backward()
    opt.step()
    return res


# ---------------------------------------------------------------------------------------------
# a wall-clock budget


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
    new = epochs_done + more
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
               attack_model: Optional[nn.Module] = None) -> tuple[float, float]:
    """(seconds per training step, seconds per end-of-epoch evaluation), timed on throwaway
    steps and evaluations (the second, on a GPU or compiled). Weights, BatchNorm statistics,
    optimizer state and every RNG are restored afterwards, so the run that follows is exactly
    the run that `--epochs` alone would give. Every rank runs
    the same steps (DDP's collectives); the slowest rank's times are used."""
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
        # On a GPU or compiled, the first evaluation also pays for cuDNN's autotuning and for
        # compiling the eval-mode graphs: an H100 run timed 1.8 s for an evaluation that took
        # about 0.3 s in every epoch, and its plan left 1.7 of its 8 minutes unused. There the
        # second call is timed; on a CPU, uncompiled, the first is already representative.
        for _ in range(2 if (device.type == "cuda" or cfg.compile) else 1):
            t0 = time.perf_counter()
            evaluate_once()
            sync()
            eval_s = time.perf_counter() - t0
    model.load_state_dict(weights)
    opt.load_state_dict(opt_state)
    opt.zero_grad(set_to_none=True)
    step_s = sorted(times[warm:])[timed // 2]  # the median: robust to a stray slow step
    t = torch.tensor([step_s, eval_s], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0]), float(t[1])


def _recorded_epochs(out: Path) -> Optional[int]:
    """The epoch count a budgeted run settled on, from its newest checkpoint (for --resume)."""
    latest = out / "LATEST"
    if not latest.is_file():
        return None
    cfg = json.loads((out / latest.read_text().strip() / "config.json").read_text())
    return cfg.get("training", {}).get("epochs")


# ---------------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    data: Optional[tuple[ImageSet, ImageSet]] = None,
    callback: Optional[EpochCallback] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Train a model by `cfg`; see the module docstring. `callback(epoch, record)` runs after
    every epoch; `should_stop()` is polled every batch and ends training after that batch."""
    t_start = time.perf_counter()
    rank, world, local_rank = _dist_env()
    device = _resolve_device(cfg.device, local_rank)
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if cfg.amp is None:  # bf16 where the hardware runs it natively: CUDA, or AVX512-BF16 / AMX CPUs
        from .devices import bf16_ok

        amp = bf16_ok(device)
    else:
        amp = cfg.amp
    # what `device="auto"` and `amp=None` turned into, recorded beside the settings
    runtime = {"device": device.type, "bf16": bool(amp), "world_size": world, "threads": torch.get_num_threads(),
               "torch": torch.__version__}
    if device.type == "cuda":  # which GPU: speeds differ several-fold between cards
        runtime["gpu"] = torch.cuda.get_device_name(device)

    if data is None:
        train_set = load_split(cfg.dataset, "train", root=cfg.data_dir, limit=cfg.limit)
        test_set = load_split(cfg.dataset, "test", root=cfg.data_dir, limit=cfg.eval_size)
    else:
        train_set, test_set = data[0].subset(cfg.limit), data[1]
    stats = dataset_info(cfg.dataset)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    model = create_model(cfg.arch, num_classes=train_set.num_classes, mean=stats["mean"], std=stats["std"],
                         **cfg.arch_kwargs).to(device)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.init and not resume:
        _load_init(model, cfg)
    model = model.to(memory_format=mf)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    out = Path(cfg.out) if cfg.out else None
    start_epoch, step, best = 0, 0, -1.0
    history: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            start_epoch, step, best = _load_resume(out, model, opt)
            if (out / "log.jsonl").is_file():
                history = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
                           if r["epoch"] <= start_epoch]
                if rank == 0:
                    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
            if start_epoch:
                log.info("resuming %s after epoch %d", out, start_epoch)
        elif (out / "LATEST").exists() and rank == 0:
            raise WeatError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = torch.compile(ddp_model, mode=cfg.compile_mode) if cfg.compile else ddp_model
    # the attack's forwards and input gradients are most of a step's work: compile them too (on
    # one process `fwd` already wraps the plain module; under DDP the attack needs the plain one)
    attack_model = (fwd if world == 1 else torch.compile(model, mode=cfg.compile_mode)) if cfg.compile else model

    # Data on the device as uint8; each rank takes its shard of every global batch.
    xs, ys = train_set.x.to(device), train_set.y.to(device)
    n = xs.shape[0]
    per_rank = max(1, min(cfg.batch_size, n) // world)
    steps_per_epoch = max(1, n // (per_rank * world))
    ev = cfg.eval_size - cfg.eval_size % world
    eval_train = train_set.subset(ev)
    ex_tr = eval_train.float()[rank::world].to(device).to(memory_format=mf)
    ey_tr = eval_train.y[rank::world].to(device)
    eval_test = test_set.subset(ev)
    ex_te = eval_test.float()[rank::world].to(device).to(memory_format=mf)
    ey_te = eval_test.y[rank::world].to(device)

    attack = make_attack(cfg)
    loss_fn = get_loss(cfg.method)
    if cfg.minutes is not None:
        recorded = _recorded_epochs(out) if (out is not None and resume and start_epoch) else None
        if recorded is not None:  # a resumed budgeted run keeps the schedule it started with
            cfg = replace(cfg, epochs=int(recorded))
        else:
            def evaluate_once():
                torch.manual_seed(cfg.seed + 12345 + rank)
                _eval_subset(model, ex_tr, ey_tr, cfg, amp, world, "train_")
                _eval_subset(model, ex_te, ey_te, cfg, amp, world, "test_")

            step_s, eval_s = _calibrate(model, fwd, opt, attack, loss_fn, xs, ys, per_rank, mf, cfg, amp, device,
                                        world, evaluate_once, attack_model)
            spent = time.perf_counter() - t_start
            epochs = epochs_for_budget(60 * cfg.minutes, spent, steps_per_epoch, step_s, eval_s)
            if world > 1:  # one schedule for every rank
                t = torch.tensor([epochs], device=device)
                dist.broadcast(t, 0)
                epochs = int(t)
            cfg = replace(cfg, epochs=epochs)
            log.info("time budget %.4g min: %.3f s per step × %d steps + %.1f s evaluation per epoch, %.0f s spent "
                     "setting up → %d epoch%s", cfg.minutes, step_s, steps_per_epoch, eval_s, spent, epochs,
                     "" if epochs == 1 else "s")
    total = steps_per_epoch * cfg.epochs
    stopped = False
    epoch = start_epoch
    while epoch < cfg.epochs:  # (a budgeted run may change cfg.epochs after its first epoch)
        epoch += 1
        # Every epoch's randomness derives from (seed, epoch): resuming replays it exactly.
        g = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch + rank)
        perm = torch.randperm(n, generator=g, device=device)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch")
        done = 0
        for i in range(steps_per_epoch):
            idx = perm[i * per_rank * world + rank * per_rank: i * per_rank * world + (rank + 1) * per_rank]
            xb = augment(xs[idx].float().div_(255), g).contiguous(memory_format=mf)  # (b, C, H, W)
            yb = ys[idx]
            lr = lr_at(step, total, cfg)
            for pg in opt.param_groups:
                pg["lr"] = lr
            res = train_step(model, fwd, opt, attack, loss_fn, xb, yb, cfg, amp, attack_model)
            loss = res.loss.mean()
            step += 1
            done += 1
            for k, v in {"loss": res.loss, **res.terms}.items():
                sums[k] = sums.get(k, 0) + v.detach().float().sum()
                if k == "weight":
                    sums["weight_sq"] = sums.get("weight_sq", 0) + v.detach().float().pow(2).sum()
                    sums["weight_min"] = torch.minimum(sums.get("weight_min", v.min()), v.min().detach())
                    sums["weight_max"] = torch.maximum(sums.get("weight_max", v.max()), v.max().detach())
            if bar is not None:
                bar.update(1)
                if i % 10 == 0:  # host sync only every 10 batches
                    bar.set_postfix(loss=f"{loss.item():.3f}",
                                    img_s=f"{done * per_rank * world / (time.perf_counter() - t0):.0f}")
            if should_stop is not None and should_stop():
                stopped = True
                break
        if bar is not None:
            bar.close()
        if stopped and done < steps_per_epoch:
            # A partial epoch is neither logged nor checkpointed: the run folder keeps the last
            # complete epoch, so --resume replays this one from its start.
            log.info("stopped during epoch %d after %d/%d batches", epoch, done, steps_per_epoch)
            break
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time = time.perf_counter() - t0
        seen = done * per_rank * world
        rec: dict[str, Any] = {"epoch": epoch, "epochs": cfg.epochs, "lr": lr, "method": cfg.method, "arch": cfg.arch}
        for k, v in sums.items():
            if k in ("weight_min", "weight_max"):
                continue
            rec[k if k != "weight" else "weight_mean"] = _all_sum(torch.as_tensor(v, device=device), world).item() / max(seen, 1)
        rec.pop("weight_sq", None)
        if "weight" in sums:
            wm = rec["weight_mean"]
            wsq = _all_sum(torch.as_tensor(sums["weight_sq"], device=device), world).item() / max(seen, 1)
            rec["weight_std"] = math.sqrt(max(wsq - wm * wm, 0.0))
            rec["weight_min"], rec["weight_max"] = sums["weight_min"].item(), sums["weight_max"].item()
        for k in ("energy", "energy_adv"):  # training-batch energies, renamed for clarity
            if k in rec:
                rec[f"batch_{k}_mean"] = rec.pop(k)
        torch.manual_seed(cfg.seed + 12345 + rank)  # the same eval randomness every epoch
        rec.update(_eval_subset(model, ex_tr, ey_tr, cfg, amp, world, "train_"))
        rec.update(_eval_subset(model, ex_te, ey_te, cfg, amp, world, "test_"))
        rec["eval_size"] = int(eval_test.y.shape[0])  # images behind the test_* accuracies (their noise)
        rec["train_time_s"] = train_time
        rec["time_s"] = time.perf_counter() - t0
        rec["img_per_s"] = seen / max(train_time, 1e-9)
        rec["images"] = seen
        if cfg.minutes is not None and epoch == start_epoch + 1 and epoch < cfg.epochs and not stopped:
            cfg = _after_first_epoch(cfg, epoch, steps_per_epoch, time.perf_counter() - t_start,
                                     time.perf_counter() - t0, rank, world, device)
            total, rec["epochs"] = steps_per_epoch * cfg.epochs, cfg.epochs
        history.append(rec)
        if out is not None and rank == 0:
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            name = _write_state(out, "state", model, opt, cfg, epoch, step, best, rec, train_set.classes, runtime)
            score = rec["test_clean_acc" if cfg.method == "standard" else "test_pgd_acc"]
            if score > best:  # best by robust accuracy (clean accuracy for standard training)
                best = score
                _publish(out, "BEST", _write_state(out, "best", model, opt, cfg, epoch, step, best, rec,
                                                   train_set.classes, runtime), "best")
            _publish(out, "LATEST", name, "state")
        if world > 1:
            dist.barrier()
        log.info("epoch %d/%d  loss %.4f  clean %.3f  pgd %.3f  ΔE %+.3f  %.0f img/s", epoch, cfg.epochs,
                 rec.get("loss", float("nan")), rec["test_clean_acc"], rec["test_pgd_acc"], rec["delta_e"],
                 rec["img_per_s"])
        if callback is not None:
            callback(epoch, rec)
        if stopped:
            break
    if cfg.minutes is not None:
        log.info("time budget %.4g min, used %.2f min", cfg.minutes, (time.perf_counter() - t_start) / 60)
    if owns_group:
        # a process group left alive at exit can abort the process ("terminate called without an
        # active exception") while its communication threads are torn down
        dist.barrier()
        dist.destroy_process_group()
    model.eval()
    model.config.update({"dataset": cfg.dataset, "method": cfg.method, "classes": list(train_set.classes)})
    return TrainResult(model, history, out, stopped)
