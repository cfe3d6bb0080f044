"""Command line: `python -m weat_core {train,eval,list,export,generate,gen-eval,init-stats} ...`.

Errors meant for the user (`WeatError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from typing import Optional, Sequence

from . import WeatError, __version__

__all__ = ["main", "build_parser"]

log = logging.getLogger("weat_core")


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("huggingface_hub").setLevel(logging.WARNING)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WeatError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------------- train


def _add_train(sub) -> None:
    from .train import COMPILE_MODES, METHODS, SCHEDULES, TrainConfig

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
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget: time a few throwaway steps and the per-epoch evaluation, then train "
                        "as many epochs as fit (replaces --epochs; the schedule spans them); step and constant schedules "
                        "re-plan after the first epoch if it ran at another pace")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
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
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--eval-size", type=int, default=d.eval_size, help="size of the fixed per-epoch eval subsets")
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

    from .evaluate import parse_eps
    from .train import TrainConfig, train

    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as e:
        raise WeatError(f"--arch-kwargs is not valid JSON: {e}") from None
    ds_tag = Path(args.dataset).name.split(".")[0] if "/" in args.dataset else args.dataset
    out = args.out or f"runs/{args.method}-{args.arch}-{ds_tag}"
    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw.update(eps=parse_eps(args.eps), alpha=parse_eps(args.alpha), out=out, arch_kwargs=arch_kwargs)
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


# ------------------------------------------------------------------------------------ eval


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="clean / PGD / AutoAttack accuracy and energies of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="shipped name, local folder/file, or Hub id owner/name")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=None, help="number of test images (default: all)")
    p.add_argument("--attacks", default="pgd20",
                   help="comma list: pgd20, pgd20-t, pgd20-ll, cw20, trades10, energy-lower10, apgd-ce, apgd-t, "
                        "fab-t, square, aa (standard AutoAttack), aa-fast (APGD-CE + APGD-T)")
    p.add_argument("--eps", default=None, help="default 8/255 for linf, 0.5 for l2")
    p.add_argument("--alpha", default=None,
                   help="step size of the PGD-family attacks, e.g. 0.5/255 (default 2/255 for linf, eps/4 for l2)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 256; 64 for AutoAttack-family attacks on a CPU, where one batch of 256 takes "
                        "tens of minutes (progress, and what --resume keeps, advance once per batch)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help="write the results as JSON here; progress is saved after every batch in OUT.partial")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation from OUT.partial (same settings; same results as "
                        "an uninterrupted run)")
    p.add_argument("--amp", action="store_true",
                   help="run the attacks under bf16 autocast (PGD-20 on PreActResNet-18: 2.3 times as fast on a "
                        "bf16 CPU); accuracy and energies still come from fp32 forwards (not with --store)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--store", action="store_true",
                   help="write the measured metrics into the checkpoint's config.json and model card "
                        "(a local checkpoint folder; L∞ 8/255, seed 0)")
    p.set_defaults(func=_cmd_eval)


SLOW_ON_CPU = ("aa", "apgd", "fab", "square")  # the torchattacks evaluations (prefixes of attack names)


def _store_folder(model, checkpoint: str):
    """The local checkpoint folder that `--store` writes into (its config.json and model card);
    a Hub cache or a lone weights file is refused."""
    from pathlib import Path

    folder = Path(str(model.config.get("source", "")))
    if not (folder / "config.json").is_file() or (folder / "config.json").is_symlink():
        raise WeatError(f"--store needs a local checkpoint folder (not a Hub cache); {checkpoint!r} is not one")
    return folder


def _test_split(model, args):
    """(dataset, the first `args.n` test images) for eval and sweep: `--dataset`, else the one the
    checkpoint names."""
    from .data import load_split

    dataset = args.dataset or model.config.get("dataset")
    if not dataset:
        raise WeatError("the checkpoint does not name its dataset; pass --dataset")
    return dataset, load_split(dataset, "test", root=args.data_dir, limit=args.n)


def _cmd_eval(args) -> int:
    from pathlib import Path

    from .checkpoints import load
    from .evaluate import evaluate, format_table, parse_eps

    # the settings are checked before anything is loaded
    if args.store and args.amp:
        raise WeatError("--store keeps fp32 measurements only (the shipped metrics are fp32); drop --amp to store")
    eps = parse_eps(args.eps) if args.eps else (8 / 255 if args.norm == "linf" else 0.5)
    alpha = parse_eps(args.alpha) if args.alpha else None
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if args.store and (args.norm != "linf" or abs(eps - 8 / 255) > 1e-9 or args.seed != 0 or alpha is not None):
        raise WeatError("--store keeps metrics for L∞ ε = 8/255, step 2/255 and seed 0 only; "
                        "drop --norm/--eps/--alpha/--seed")
    state = Path(args.out + ".partial") if args.out else None
    if args.resume and state is None:
        raise WeatError("--resume continues the evaluation saved beside --out; pass the same --out")
    if state is not None and state.is_file() and not args.resume:
        raise WeatError(f"{state} holds an interrupted evaluation: pass --resume to continue it, "
                        "or delete the file to start over")
    device = _device(args.device)
    model = load(args.checkpoint, device=device, revision=args.revision)
    dataset, test = _test_split(model, args)
    folder = _store_folder(model, args.checkpoint) if args.store else None
    batch = args.batch_size or (64 if device.type == "cpu" and any(a.split("-")[0] in SLOW_ON_CPU for a in attacks)
                                else 256)
    res = evaluate(model, test.float(), test.y, attacks, eps=eps, norm=args.norm, alpha=alpha, batch_size=batch,
                   seed=args.seed, progress=not args.quiet, state=state, amp=args.amp)
    res.update(checkpoint=args.checkpoint, dataset=str(dataset))
    print(format_table(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
        log.info("wrote %s", args.out)
    if args.store:
        from .export import store_metrics

        store_metrics(folder, res, attacks, dataset=str(dataset))
        log.info("stored the metrics in %s", folder / "config.json")
    return 0


# ------------------------------------------------------------------------------------ sweep


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="Observation 1 across ε: how PGD and targeted PGD move E(x) as ε grows",
                       description="Untargeted and targeted L∞ PGD at each ε on the same test images (step "
                                   "max(2/255, 2.5·ε/steps)); prints the mean shift of E(x) from the natural "
                                   "images with its standard error, the share of images sent lower, accuracy "
                                   "and the Observation 1 verdict per ε.")
    p.add_argument("--checkpoint", required=True, help="shipped name, local folder/file, or Hub id owner/name")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=500, help="number of test images (the first n)")
    p.add_argument("--eps", default="2,4,8,16,32,64", help="comma list of ε in units of 1/255")
    p.add_argument("--steps", type=int, default=20, help="PGD steps per attack")
    p.add_argument("--steps-list", default=None,
                   help="comma list of PGD step counts (e.g. 1,2,5,20): sweep these at the one ε that --eps "
                        "names, step 2/255, instead of sweeping ε (not with --store)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--store", action="store_true",
                   help="write the sweep into the checkpoint's config.json and model card (a local folder)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from . import lens
    from .checkpoints import load

    try:
        eps = [float(e) for e in args.eps.split(",") if e.strip()]
    except ValueError:
        raise WeatError(f"--eps takes numbers in units of 1/255, e.g. 2,4,8,16; got {args.eps!r}") from None
    if not eps or min(eps) <= 0 or args.steps < 1 or args.n < 2:
        raise WeatError("--eps needs positive values, --steps at least 1 and --n at least 2 images")
    steps_list = None
    if args.steps_list is not None:
        try:
            steps_list = [int(k) for k in args.steps_list.split(",") if k.strip()]
        except ValueError:
            raise WeatError(f"--steps-list takes whole numbers, e.g. 1,2,5,20; got {args.steps_list!r}") from None
        if not steps_list or min(steps_list) < 1 or len(eps) != 1 or args.store:
            raise WeatError("--steps-list needs step counts of at least 1, one value in --eps (e.g. --eps 8), "
                            "and no --store (model cards keep the ε sweep)")
    model = load(args.checkpoint, device=_device(args.device), revision=args.revision)
    folder = _store_folder(model, args.checkpoint) if args.store else None
    dataset, test = _test_split(model, args)
    bar = tqdm(total=1, desc="sweep", unit="batch", disable=args.quiet, leave=False)

    def progress(done: int, total: int, label: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(label)
        bar.refresh()

    by = "eps" if steps_list is None else "steps"
    if steps_list is None:
        df = lens.strength_sweep(model, test.float(), test.y, eps, steps=args.steps, batch_size=args.batch_size,
                                 callback=progress)
    else:
        df = lens.steps_sweep(model, test.float(), test.y, steps_list, eps=eps[0], batch_size=args.batch_size,
                              callback=progress)
    bar.close()
    view = df.assign(**{"± 2 SE": 2 * df["se"], "eps": df["eps"].map("{:g}/255".format)})[
        ([] if by == "eps" else ["steps"]) + ["eps", "attack", "accuracy", "shift E(x)", "± 2 SE", "share E(x)↓",
                                              "verdict"]]
    print(view.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"(n = {len(test)}, {f'{args.steps} steps' if by == 'eps' else 'step 2/255'}, L∞)")
    print(lens.sweep_summary(df, by=by))
    rows = sweep_rows(df)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "n": len(test),
                                              "steps": args.steps if by == "eps" else steps_list,
                                              "rows": rows}, indent=2))
        log.info("wrote %s", args.out)
    if folder is not None:
        from .export import store_sweep

        store_sweep(folder, rows, len(test), args.steps, args.eps, dataset=str(dataset))
        log.info("stored the sweep in %s", folder / "config.json")
    return 0


def sweep_rows(df) -> list[dict]:
    """A strength_sweep (or steps_sweep: steps first) as JSON-ready rows (eps, attack, accuracy,
    shift, se, share_lower, verdict, by_outcome)."""
    return [{**({"steps": int(r["steps"])} if "steps" in r else {}), "eps": float(r["eps"]), "attack": r["attack"],
             "accuracy": float(r["accuracy"]),
             "shift": float(r["shift E(x)"]), "se": float(r["se"]), "share_lower": float(r["share E(x)↓"]),
             "verdict": r["verdict"], **({"by_outcome": r["by outcome"]} if "by outcome" in r else {})}
            for _, r in df.iterrows()]


# ------------------------------------------------------------------------------------ list


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list shipped checkpoints (or architectures)")
    p.add_argument("--archs", action="store_true", help="list architectures instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    if args.archs:
        from .models import _ARCHS

        for name in sorted(_ARCHS):
            print(f"{name:16s} {_ARCHS[name].description}")
        return 0
    from .checkpoints import list_checkpoints, list_runs

    infos = list_checkpoints()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return 0
    if not infos:
        print("no checkpoints shipped yet (train one with `python -m weat_core train`)")
    for i in infos:
        m = i.metrics
        acc = "  ".join(f"{k}={100 * v:.1f}" for k, v in m.items() if k.endswith("_acc") and isinstance(v, float))
        print(f"{i.name:28s} {i.arch:14s} {i.method:9s} {i.dataset:9s} {acc}")
    runs = list_runs()
    if runs:
        print("\nrecorded training runs (per-epoch log only, no weights; the app's training page):")
    for r in runs:
        print(f"{r.name:38s} {r.arch:14s} {r.method:9s} {r.dataset:9s} {r.config.get('epochs', '?')} epochs")
    return 0


# ---------------------------------------------------------------------------------- export


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="ship a training run as a checkpoint with measured metrics and a model card")
    p.add_argument("--run", required=True, help="training run folder (holds BEST / LATEST)")
    p.add_argument("--name", required=True, help="checkpoint name (folder under checkpoints/)")
    p.add_argument("--max-shard-size", default="100MB",
                   help="split larger weights into safetensors shards with an index (Hub layout), e.g. 15MB")
    p.add_argument("--which", choices=("auto", "best", "last"), default="auto",
                   help="which epoch to ship: best (by per-epoch test-subset PGD accuracy), last, or auto: the "
                        "best only when the last fell from it by more than the subset's noise, else the last")
    p.add_argument("--dataset", default=None, help="test data (default: the run's dataset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--attacks", default="pgd20,pgd20-t")
    p.add_argument("--n", type=int, default=None, help="test images for PGD (default: all)")
    p.add_argument("--aa-n", type=int, default=0, help="test images for AutoAttack (0: skip)")
    p.add_argument("--fp32", action="store_true", help="store fp32 weights (default fp16)")
    p.add_argument("--dest", default=None, help="folder to export into (default: the repo's checkpoints/)")
    p.add_argument("--dataset-name", default=None, help="dataset name to record (e.g. cifar10 for a folder copy)")
    p.add_argument("--device", default="auto")
    p.add_argument("--log-only", action="store_true",
                   help="ship the run's per-epoch log, settings and card without weights or evaluation, to "
                        "DEST/_runs/NAME (a recorded run for the training page)")
    p.add_argument("--heldout", default=None, metavar="JSON",
                   help="with --log-only: the run's best and last epoch measured on held-out test images "
                        "(the --out file of scripts/heldout_best_last.py), stored in config.json and the card")
    p.add_argument("--note", default=None,
                   help="a sentence for the card about how the run was made that its numbers do not tell "
                        "(e.g. that it shared its GPU with other runs)")
    p.add_argument("--heldout-run", default=None,
                   help="which run's rows of a --heldout file holding several (its run folder's name)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from pathlib import Path

    from .export import export_log, export_run, heldout_summary

    if args.heldout and not args.log_only:
        raise WeatError("--heldout goes with --log-only (a recorded run); an exported checkpoint is measured "
                        "on the whole test split")
    if args.log_only:
        heldout = None
        if args.heldout:
            try:
                rows = json.loads(Path(args.heldout).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise WeatError(f"cannot read the held-out results {args.heldout}: {e}") from None
            heldout = heldout_summary(rows, args.heldout_run)
        dest = export_log(Path(args.run), args.name, dest_root=Path(args.dest) if args.dest else None,
                          dataset_name=args.dataset_name, heldout=heldout, note=args.note)
        print((dest / "README.md").read_text())
        return 0
    dest = export_run(Path(args.run), args.name, dataset=args.dataset, data_dir=args.data_dir,
                      attacks=[a for a in args.attacks.split(",") if a], n=args.n, aa_n=args.aa_n, which=args.which,
                      fp16=not args.fp32, dest_root=Path(args.dest) if args.dest else None,
                      device=str(_device(args.device)), dataset_name=args.dataset_name,
                      max_shard_size=args.max_shard_size, note=args.note)
    print((dest / "README.md").read_text())
    return 0


# ------------------------------------------------------------------------------------ push


def _add_push(sub) -> None:
    p = sub.add_parser("push", help="publish a checkpoint on the Hugging Face Hub (loadable by its repo id)")
    p.add_argument("--checkpoint", required=True, help="shipped name or checkpoint folder")
    p.add_argument("--repo", required=True, help="Hub model repo, owner/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--dry-run", default=None, metavar="DIR",
                   help="write what would be uploaded into DIR (a new folder), check that it loads, upload nothing")
    p.set_defaults(func=_cmd_push)


def _cmd_push(args) -> int:
    from pathlib import Path

    from .export.hub import push_checkpoint, stage

    if args.dry_run:
        dest = stage(args.checkpoint, Path(args.dry_run), args.repo)
        print(f"{dest}: " + ", ".join(sorted(f.name for f in dest.iterdir())) + f" (would go to {args.repo})")
        return 0
    print(push_checkpoint(args.checkpoint, args.repo, private=args.private, revision=args.revision,
                          message=args.message))
    return 0


# ------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m weat_core", description="WEAT Lens: robustness through energies")
    p.add_argument("--version", action="version", version=f"weat_core {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_sweep(sub)
    _add_list(sub)
    _add_export(sub)
    _add_push(sub)
    from .sampling.cli import add_commands

    add_commands(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except WeatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete epoch is saved (continue with --resume)", file=sys.stderr)
        return 130
