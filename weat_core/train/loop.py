"""The training loop: `train(cfg)` runs a whole training (see the package docstring)."""

from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from .. import WeatError
from ..data import ImageSet, dataset_info, load_split
from ..losses import get_loss
from ..models import arch_name, create_model
from .budget import _after_first_epoch, _calibrate, epochs_for_budget
from .config import TrainConfig, lr_at, momentum_at
from .distributed import _dist_env, _resolve_device
from .run_folder import _load_init, _load_resume, _publish, _recorded_epochs, _write_state
from .steps import _EpochSums, _eval_subset, augment, make_attack, train_step

__all__ = ["TrainResult", "train"]

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]


@dataclass
class TrainResult:
    model: nn.Module  # the trained weights; with `cfg.ema`, their average
    history: list[dict]
    out: Optional[Path]
    stopped: bool = False


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
        # DDP imports torch._dynamo; imported after the group exists, it keeps ten references to
        # it (torch 2.14), so destroy_process_group cannot free it, and a gloo worker thread still
        # releasing a finished collective as the interpreter exits aborts the process ("terminate
        # called without an active exception"; 3 of 20 two-process CPU runs here). Imported first,
        # it holds none: the group and its threads end at destroy_process_group.
        importlib.import_module("torch._dynamo")  # (not `import torch._dynamo`: that makes `torch` local here)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if cfg.amp is None:  # bf16 where the hardware runs it natively: CUDA, or AVX512-BF16 / AMX CPUs
        from ..devices import bf16_ok

        amp = bf16_ok(device)
    else:
        amp = cfg.amp
    # what `device="auto"` and `amp=None` turned into, recorded beside the settings
    runtime = {"device": device.type, "bf16": bool(amp), "world_size": world, "threads": torch.get_num_threads(),
               "torch": torch.__version__}
    if device.type == "cuda":  # which GPU: speeds differ several-fold between cards
        runtime["gpu"] = torch.cuda.get_device_name(device)

    arch_name(cfg.arch)  # an unknown architecture fails here, not after reading the dataset
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
    ema = _weight_average(model, cfg.ema) if cfg.ema else None
    averaged = ema.module if ema is not None else None

    out = Path(cfg.out) if cfg.out else None
    start_epoch, step, best = 0, 0, -1.0
    history: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            start_epoch, step, best = _load_resume(out, model, opt, averaged)
            if (out / "log.jsonl").is_file():
                history = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
                           if r["epoch"] <= start_epoch]
                if rank == 0:
                    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
            if start_epoch:
                log.info("resuming %s after epoch %d", out, start_epoch)
            else:
                log.info("%s holds no finished epoch yet: --resume starts at the first", out)
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
    stopped = False
    if cfg.minutes is not None:
        recorded = _recorded_epochs(out) if (out is not None and resume and start_epoch) else None
        if recorded is not None:  # a resumed budgeted run keeps the schedule it started with
            cfg = replace(cfg, epochs=int(recorded))
        else:
            def evaluate_once():
                torch.manual_seed(cfg.seed + 12345 + rank)
                _eval_subset(model, ex_tr, ey_tr, cfg, amp, world, "train_")
                _eval_subset(model, ex_te, ey_te, cfg, amp, world, "test_")
                if averaged is not None:
                    _eval_subset(averaged, ex_te, ey_te, cfg, amp, world, "ema_test_")

            timing = _calibrate(model, fwd, opt, attack, loss_fn, xs, ys, per_rank, mf, cfg, amp, device, world,
                                evaluate_once, attack_model, should_stop if world == 1 else None)
            if timing is None:  # stopped while timing: no epoch is trained
                stopped = True
                log.info("stopped while timing the %.4g-minute budget, before the first epoch", cfg.minutes)
            else:
                step_s, eval_s = timing
                spent = time.perf_counter() - t_start
                epochs = min(epochs_for_budget(60 * cfg.minutes, spent, steps_per_epoch, step_s, eval_s),
                             cfg.max_epochs or 10**9)
                if world > 1:  # one schedule for every rank
                    t = torch.tensor([epochs], device=device)
                    dist.broadcast(t, 0)
                    epochs = int(t)
                cfg = replace(cfg, epochs=epochs)
                log.info("time budget %.4g min: %.3f s per step × %d steps + %.1f s evaluation per epoch, %.0f s spent "
                         "setting up → %d epoch%s", cfg.minutes, step_s, steps_per_epoch, eval_s, spent, epochs,
                         "" if epochs == 1 else "s")
    total = steps_per_epoch * cfg.epochs
    epoch = start_epoch
    while epoch < cfg.epochs and not stopped:  # (a budgeted run may change cfg.epochs after its first epoch)
        epoch += 1
        # Every epoch's randomness derives from (seed, epoch): resuming replays it exactly.
        g = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch + rank)
        perm = torch.randperm(n, generator=g, device=device)
        model.train()
        sums = _EpochSums()
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
            lr, momentum = lr_at(step, total, cfg), momentum_at(step, total, cfg)
            for pg in opt.param_groups:
                pg["lr"], pg["momentum"] = lr, momentum
            res = train_step(model, fwd, opt, attack, loss_fn, xb, yb, cfg, amp, attack_model)
            loss = res.loss.mean()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            done += 1
            sums.add({"loss": res.loss, **res.terms})
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
        if cfg.schedule == "onecycle-cos":  # the schedule that cycles it
            rec["momentum"] = momentum
        rec.update(sums.means(seen, world))
        torch.manual_seed(cfg.seed + 12345 + rank)  # the same eval randomness every epoch
        rec.update(_eval_subset(model, ex_tr, ey_tr, cfg, amp, world, "train_"))
        rec.update(_eval_subset(model, ex_te, ey_te, cfg, amp, world, "test_"))
        if averaged is not None:  # the weights this run produces
            rec.update(_eval_subset(averaged, ex_te, ey_te, cfg, amp, world, "ema_test_"))
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
            name = _write_state(out, "state", model, opt, cfg, epoch, step, best, rec, train_set.classes, runtime,
                                averaged)
            score = rec[("ema_" if averaged is not None else "") + ("test_clean_acc" if cfg.method == "standard"
                                                                      else "test_pgd_acc")]
            if score > best:  # best by robust accuracy (clean accuracy for standard training)
                best = score
                _publish(out, "BEST", _write_state(out, "best", model, opt, cfg, epoch, step, best, rec,
                                                   train_set.classes, runtime, averaged), "best")
            _publish(out, "LATEST", name, "state")
        if world > 1:
            dist.barrier()
        log.info("epoch %d/%d  loss %.4f  clean %.3f  pgd %.3f%s  ΔE %+.3f  %.0f img/s", epoch, cfg.epochs,
                 rec.get("loss", float("nan")), rec["test_clean_acc"], rec["test_pgd_acc"],
                 f"  (averaged: clean {rec['ema_test_clean_acc']:.3f}  pgd {rec['ema_test_pgd_acc']:.3f})"
                 if averaged is not None else "", rec["delta_e"], rec["img_per_s"])
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
    if averaged is not None:  # the run's result is the weight average
        model = averaged
    model.eval()
    model.config.update({"dataset": cfg.dataset, "method": cfg.method, "classes": list(train_set.classes)})
    return TrainResult(model, history, out, stopped)


def _weight_average(model: nn.Module, decay: float):
    """timm's `ModelEmaV3` over `model`'s parameters and buffers, at most `decay` per step, with
    its warm-up (after step t, d_t = 1 − t^(−3/4), capped): early averages forget the random start fast."""
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=3 / 4)
