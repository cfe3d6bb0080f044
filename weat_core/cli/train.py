"""`train`: adversarial training from the command line (`weat_core.train`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from .. import WeatError
from .common import count, log



def add_commands(sub) -> None:
    from ..train import COMPILE_MODES, METHODS, SCHEDULES, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="adversarially train a model (SAT, TRADES, MART, WEAT)",
                       description="Train a classifier; every epoch appends a JSON record to OUT/log.jsonl and "
                                   "writes a checkpoint atomically. Multi-GPU: torchrun --nproc_per_node N -m "
                                   "weat_core train ...")
    p.add_argument("--method", choices=METHODS, default=d.method)
    p.add_argument("--arch", default=d.arch, help="architecture (see `python -m weat_core list --archs`)")
    p.add_argument("--dataset", default=d.dataset,
                   help="cifar10 | cifar100 | svhn | tinyimagenet | DIR with train/ and test/ class folders | .tar.gz")
    p.add_argument("--data-dir", default=None, help="where datasets live or download to (default $WEAT_DATA_DIR)")
    p.add_argument("--epochs", type=count, default=d.epochs)
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget: time a few throwaway steps and the per-epoch evaluation, then train "
                        "as many epochs as fit (replaces --epochs; the schedule spans them); step and constant schedules "
                        "re-plan after the first epoch if it ran at another pace")
    p.add_argument("--max-epochs", type=count, default=None,
                   help="with --minutes: train at most this many epochs (the budget only shortens the run)")
    p.add_argument("--batch-size", type=count, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="onecycle: linear warm-up (--warmup) and decay; step: lr ÷10 at 50 %% and 75 %%; cosine; "
                        "constant; onecycle-cos: PyTorch's OneCycleLR as the WEAT authors' code runs it (cosine, "
                        "lr/25 → lr → lr/2.5e5, momentum cycled 0.95 → 0.85 → 0.95 in place of --momentum)")
    p.add_argument("--warmup", type=float, default=d.warmup)
    p.add_argument("--eps", default="8/255", help="L∞ radius, e.g. 8/255")
    p.add_argument("--alpha", default="2/255", help="attack step size")
    p.add_argument("--attack-steps", type=int, default=d.attack_steps)
    p.add_argument("--beta", type=float, default=d.beta)
    p.add_argument("--limit", type=count, default=None, help="train on the first N images only")
    p.add_argument("--eval-size", type=count, default=d.eval_size, help="size of the fixed per-epoch eval subsets")
    p.add_argument("--eval-steps", type=int, default=d.eval_steps, help="PGD steps of the per-epoch robust accuracy")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="run folder (default runs/METHOD-ARCH-DATASET)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init", default=None,
                   help="start from these weights (checkpoint name, run or folder, file, Hub id): fine-tuning")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on a GPU, and on CPUs with native bf16: AVX512-BF16 or AMX)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward and the attack")
    p.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                   help="torch.compile's mode (implies --compile): reduce-overhead replays CUDA graphs")
    p.add_argument("--arch-kwargs", default="{}", help='JSON of architecture options, e.g. \'{"width": 32}\'')
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights, at most DECAY per step (e.g. 0.999, "
                        "warmed up); the average is measured every epoch, checkpointed and exported")
    p.add_argument("--quiet", action="store_true", help="no progress bar; log lines only")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from pathlib import Path

    from ..evaluate import parse_eps, parse_radius
    from ..train import TrainConfig, train

    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as e:
        raise WeatError(f"--arch-kwargs is not valid JSON: {e}") from None
    ds_tag = Path(args.dataset).name.split(".")[0] if "/" in args.dataset else args.dataset
    out = args.out or f"runs/{args.method}-{args.arch}-{ds_tag}"
    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw.update(eps=parse_radius(args.eps), alpha=parse_eps(args.alpha), out=out, arch_kwargs=arch_kwargs)
    cfg = TrainConfig(**kw)
    log.info("training %s with %s on %s → %s", cfg.arch, cfg.method, cfg.dataset, out)
    res = train(cfg, progress=not args.quiet, resume=args.resume)
    if res.history:
        r = res.history[-1]
        k = "ema_test_" if cfg.ema else "test_"  # a run with a weight average produces the average
        log.info("done: epoch %d, %stest clean %.2f %%, test PGD-%d %.2f %% (on %d images); checkpoint in %s",
                 r["epoch"], "averaged weights: " if cfg.ema else "", 100 * r[k + "clean_acc"], cfg.eval_steps,
                 100 * r[k + "pgd_acc"], cfg.eval_size, out)
    return 0
