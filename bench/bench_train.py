"""Training and attack throughput (images/s), per method and architecture, on CPU or GPU.

    python bench/bench_train.py                      # CPU: weatnet_s, every method
    python bench/bench_train.py --device cuda --archs preactresnet18 --batch-size 512
    python bench/bench_train.py --device cuda --methods weat-adv --batch-size 512,1024,2048 --no-attacks
    python bench/bench_train.py --device cuda --methods weat-adv --compile-mode default,max-autotune-no-cudagraphs
    python bench/bench_train.py --device cuda --methods weat-adv --batch-size 1024 --compile --ema 0.999

Measures the real training step of weat_core.train (attack + forwards + backward + SGD) on
random uint8 data already on the device, after warm-up steps; prints one line per setting.
No timing is asserted anywhere: this only prints numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from weat_core.attacks import PGD, TradesAttack  # noqa: E402
from weat_core.devices import bf16_ok  # noqa: E402
from weat_core.losses import get_loss  # noqa: E402
from weat_core.models import create_model  # noqa: E402
from weat_core.train import COMPILE_MODES, METHODS, TrainConfig, augment, make_attack, train_step  # noqa: E402
from weat_core.train.loop import _weight_average  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(arch: str, method: str, device: torch.device, batch: int, steps: int, warmup: int,
                amp: bool, compile_: bool, mode: str | None = None, ema: float | None = None) -> float:
    """Training images/s; with `ema`, each step also updates a weight average, as `train --ema` does."""
    cfg = TrainConfig(method=method, arch=arch, batch_size=batch, device=str(device), compile=compile_,
                      compile_mode=mode)
    model = create_model(arch).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    fwd = torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model
    average = _weight_average(model, ema) if ema else None
    attack, loss_fn = make_attack(cfg), get_loss(method)
    g = torch.Generator(device=device).manual_seed(0)
    xs = torch.randint(0, 256, (batch * 4, 3, 32, 32), dtype=torch.uint8, device=device)
    ys = torch.randint(0, 10, (batch * 4,), device=device)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        j = (i % 4) * batch
        xb = augment(xs[j:j + batch].float().div_(255), g).contiguous(memory_format=torch.channels_last)
        train_step(model, fwd, opt, attack, loss_fn, xb, ys[j:j + batch], cfg, amp, fwd)  # as train() does
        if average is not None:
            average.update(model, step=i + 1)
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def bench_attack(arch: str, attack, device: torch.device, batch: int, reps: int, amp: bool) -> float:
    model = create_model(arch).to(device).to(memory_format=torch.channels_last).eval()
    x = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        attack(model, x, y)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            attack(model, x, y)
    _sync(device)
    return reps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", default=None, help="comma list (default: weatnet_s on CPU, preactresnet18 on GPU)")
    p.add_argument("--methods", default=",".join(m for m in METHODS))
    p.add_argument("--batch-size", default=None, help="one size or a comma list (default: 512 on GPU, 128 on CPU)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="training and attack forwards through torch.compile, "
                   "as `train --compile` does")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile's mode, as `train --compile-mode` (implies --compile); a comma list "
                        f"measures each in turn, in one process ({', '.join(COMPILE_MODES)})")
    p.add_argument("--no-attacks", action="store_true", help="training steps only, no attack throughput")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="also time each training step with a weight average (train --ema), on a second line")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: as training does, on where the hardware has native bf16)")
    a = p.parse_args()
    modes = a.compile_mode.split(",") if a.compile_mode else [None]
    bad = [m for m in modes if m is not None and m not in COMPILE_MODES]
    if bad:
        p.error(f"unknown compile mode {bad[0]!r}; choose from {', '.join(COMPILE_MODES)}")
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    archs = (a.archs or ("preactresnet18" if gpu else "weatnet_s")).split(",")
    batches = [int(b) for b in a.batch_size.split(",")] if a.batch_size else [512 if gpu else 128]
    if gpu:
        torch.backends.cudnn.benchmark = True  # as train() sets it
    steps = a.steps or (20 if gpu else 3)
    amp = bf16_ok(device) if a.amp is None else a.amp
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    compiled = a.compile or a.compile_mode is not None
    for k, mode in enumerate(modes):
        print(f"# device: {name}; bf16 autocast {'on' if amp else 'off'}; channels_last; "
              f"{'torch.compile (mode ' + (mode or 'default') + ')' if compiled else 'eager'}; "
              f"torch {torch.__version__}")
        print(f"{'arch':16s} {'what':26s} {'batch':>6s} {'img/s':>10s}")
        for arch in archs:
            for batch in batches:
                for method in a.methods.split(","):
                    for ema in [None] + ([a.ema] if a.ema else []):
                        ips = bench_train(arch, method, device, batch, steps, 3 if compiled else 2, amp, compiled, mode,
                                          ema)
                        what = f"train {method}" + (f" +ema {ema:g}" if ema else "")
                        print(f"{arch:16s} {what:26s} {batch:6d} {ips:10.0f}", flush=True)
                if a.no_attacks or k:  # the attacks run uncompiled: once is enough
                    continue
                for label, atk in (("attack PGD-10", PGD(steps=10)), ("attack TRADES-10", TradesAttack(steps=10)),
                                   ("attack PGD-20", PGD(steps=20))):
                    ips = bench_attack(arch, atk, device, batch, max(1, steps // 2), amp)
                    print(f"{arch:16s} {label:26s} {batch:6d} {ips:10.0f}", flush=True)


if __name__ == "__main__":
    main()
