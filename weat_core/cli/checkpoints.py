"""`list` (shipped checkpoints and recorded runs), `export` (a training run into a shipped
checkpoint) and `push` (a checkpoint onto the Hugging Face Hub)."""

from __future__ import annotations

import json

from .. import WeatError
from .common import count, pick_device



def add_commands(sub) -> None:
    _add_list(sub)
    _add_export(sub)
    _add_push(sub)


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list shipped checkpoints (or architectures)")
    p.add_argument("--archs", action="store_true", help="list architectures instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    if args.archs:
        from ..models import _ARCHS

        for name in sorted(_ARCHS):
            print(f"{name:16s} {_ARCHS[name].description}")
        return 0
    from ..checkpoints import list_checkpoints, list_runs

    infos = list_checkpoints()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return 0
    if not infos:
        print("no checkpoints shipped yet (train one with `python -m weat_core train`)")
    else:
        # the measures every shipped card has first, in the order of the README's tables; any other after them
        shown = [k for k in LIST_MEASURES if any(k in i.metrics for i in infos)]
        shown += sorted({k for i in infos for k, v in i.metrics.items()
                         if k.endswith("_acc") and isinstance(v, float) and k not in shown})
        rows = [[i.name, i.arch, i.method, _short(i.dataset),
                 *(f"{100 * i.metrics[k]:.1f}" if isinstance(i.metrics.get(k), float) else "" for k in shown)]
                for i in infos]
        heads = ["checkpoint", "arch", "method", "dataset", *(LIST_MEASURES.get(k, k[:-4]) + " %" for k in shown)]
        print(_table(heads, rows, right=range(4, len(heads))))
    runs = list_runs()
    if runs:
        print("\nrecorded training runs (per-epoch log only, no weights; the app's training page):")
        print(_table(["run", "arch", "method", "dataset", "epochs"],
                     [[r.name, r.arch, r.method, _short(r.dataset), str(r.config.get("epochs", "?"))] for r in runs],
                     right=[4]))
    return 0


# the measures `list` shows first, with their column names
LIST_MEASURES = {"clean_acc": "clean", "pgd20_acc": "PGD-20", "pgd20-t_acc": "PGD-20-T", "aa_acc": "AutoAttack"}


def _short(dataset: str) -> str:
    """A dataset as `list` shows it: a name as it is, a path by its last part."""
    return dataset.rstrip("/").rsplit("/", 1)[-1] if "/" in dataset else dataset


def _table(heads: list[str], rows: list[list[str]], right=()) -> str:
    """Rows of text in columns as wide as their widest cell, two spaces apart; the columns in
    `right` (numbers) aligned right."""
    widths = [max(len(str(c)) for c in col) for col in zip(heads, *rows)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        (str(c).rjust(w) if k in right else str(c).ljust(w)) for k, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join(fmt(r) for r in [heads, *rows])


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
    p.add_argument("--n", type=count, default=None, help="test images for PGD (default: all)")
    p.add_argument("--aa-n", type=int, default=0, help="test images for AutoAttack (0: skip)")
    p.add_argument("--fp32", action="store_true", help="store fp32 weights (default fp16)")
    p.add_argument("--dest", default=None, help="folder to export into (default: the repo's checkpoints/)")
    p.add_argument("--dataset-name", default=None, help="dataset name to record (default: cifar10 for a local copy "
                   "with CIFAR-10's classes, else the run's dataset as it names it)")
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

    from ..export import export_log, export_run, heldout_summary

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
                      device=str(pick_device(args.device)), dataset_name=args.dataset_name,
                      max_shard_size=args.max_shard_size, note=args.note)
    print((dest / "README.md").read_text())
    return 0


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

    from ..export.hub import push_checkpoint, stage

    if args.dry_run:
        dest = stage(args.checkpoint, Path(args.dry_run), args.repo)
        print(f"{dest}: " + ", ".join(sorted(f.name for f in dest.iterdir())) + f" (would go to {args.repo})")
        return 0
    print(push_checkpoint(args.checkpoint, args.repo, private=args.private, revision=args.revision,
                          message=args.message))
    return 0
