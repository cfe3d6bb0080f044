"""The run folder on disk: checkpoints written atomically every epoch, the LATEST/BEST pointers,
`--init` (fine-tuning from a checkpoint) and `--resume`."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .. import WeatError
from .config import TrainConfig

log = logging.getLogger(__name__)


def _write_state(out: Path, tag: str, model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig,
                 epoch: int, step: int, best: float, record: dict, classes: tuple[str, ...],
                 runtime: Optional[dict] = None, averaged: Optional[nn.Module] = None) -> str:
    """Write checkpoint folder `tag-epoch` atomically. With `averaged` (the weight average of
    `cfg.ema`) the folder's model is the average, with the average's metrics, and a state folder
    keeps the trained weights beside it in trained.safetensors."""
    from safetensors.torch import save_file

    from ..checkpoints import save

    name = f"{tag}-{epoch:04d}"
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if averaged is None:
        metrics = {k: record[k] for k in ("test_clean_acc", "test_pgd_acc", "train_clean_acc", "train_pgd_acc",
                                          "delta_e", "energy_nat_mean", "energy_adv_mean") if k in record}
    else:  # the test subset's numbers of the weights this folder ships
        metrics = {k[len("ema_"):]: record[k] for k in ("ema_test_clean_acc", "ema_test_pgd_acc", "ema_test_delta_e")
                   if k in record}
    save(averaged if averaged is not None else model, tmp, {
        "dataset": cfg.dataset, "method": cfg.method, "classes": list(classes), "epoch": epoch,
        "training": asdict(cfg), "runtime": runtime or {}, "metrics": metrics, "metrics_note":
            f"per-epoch metrics on fixed {cfg.eval_size}-image subsets (PGD-{cfg.eval_steps})"
            f"{' of the averaged weights' if averaged is not None else ''}; "
            "run `python -m weat_core eval` for full test-set numbers",
    })
    if tag == "state":
        if averaged is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(tmp / "trained.safetensors"))
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
    from ..checkpoints import load

    src = load(cfg.init)
    want = (cfg.arch, dict(cfg.arch_kwargs), model.config["num_classes"])
    have = (src.config.get("arch"), dict(src.config.get("arch_kwargs", {})), src.config.get("num_classes"))
    if have != want:
        def says(a):
            return f"{a[0]}{' ' + json.dumps(a[1]) if a[1] else ''} with {a[2]} classes"

        raise WeatError(f"--init {cfg.init} is a {says(have)}; this run trains a {says(want)}")
    model.load_state_dict(src.state_dict())  # copied into the model's fp32 tensors (fp16 checkpoints too)
    log.info("initialised from %s", cfg.init)


def _load_resume(out: Path, model: nn.Module, opt: torch.optim.Optimizer,
                 averaged: Optional[nn.Module] = None) -> tuple[int, int, float]:
    """Load the newest state folder's weights, momentum buffers and counters; with `averaged`
    (a run with `ema`), its weight average too."""
    from safetensors.torch import load_file

    from ..checkpoints import load_state_dict

    latest = out / "LATEST"
    if not latest.is_file():
        return 0, 0, -1.0
    d = out / latest.read_text().strip()
    has_trained = (d / "trained.safetensors").is_file()
    if (averaged is not None) != has_trained:
        raise WeatError(f"{d} was written {'with' if has_trained else 'without'} a weight average (--ema); "
                        f"resume it {'with' if has_trained else 'without'} one, as it was started")
    if averaged is not None:
        averaged.load_state_dict(load_state_dict(d / "model.safetensors"))
        model.load_state_dict(load_state_dict(d / "trained.safetensors"))
    else:
        model.load_state_dict(load_state_dict(d / "model.safetensors"))
    meta = json.loads((d / "trainer.json").read_text())
    if (d / "optimizer.safetensors").is_file():
        bufs = load_file(str(d / "optimizer.safetensors"))
        for n, p in model.named_parameters():
            if f"momentum.{n}" in bufs:
                opt.state[p]["momentum_buffer"] = bufs[f"momentum.{n}"].to(p.device)
    return int(meta["epoch"]), int(meta["step"]), float(meta["best"])


def last_epoch(out: Path) -> int:
    """The epoch of run folder `out`'s newest checkpoint (the one LATEST names), 0 when it has none:
    where `train(..., resume=True)` goes on from."""
    latest = out / "LATEST"
    if not latest.is_file():
        return 0
    return int(json.loads((out / latest.read_text().strip() / "trainer.json").read_text())["epoch"])


def _recorded_epochs(out: Path) -> Optional[int]:
    """The epoch count a budgeted run settled on, from its newest checkpoint (for --resume)."""
    latest = out / "LATEST"
    if not latest.is_file():
        return None
    cfg = json.loads((out / latest.read_text().strip() / "config.json").read_text())
    return cfg.get("training", {}).get("epochs")
