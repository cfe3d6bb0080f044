"""`init-stats`: fit the class statistics that the Gaussian and PCA starts of `generate` draw
from, once per dataset, and keep them beside a checkpoint or shared by several.

    init-stats --checkpoint NAME [--dataset cifar10] [--share FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Optional

from .. import WeatError
from .common import count

DEFAULT_MAX_MB = 8.0  # init-stats --max-mb: class_stats.DEFAULT_MAX_BYTES in MiB (a test holds the two equal)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "init-stats", help="fit the class statistics for the Gaussian / PCA starts",
        description="Fit per-class means and principal components on the training set and save them as "
                    "init_stats.safetensors beside the checkpoint (once; generation then needs no dataset).")
    p.add_argument("--checkpoint", default=None, help="write beside this checkpoint")
    p.add_argument("--dataset", default=None, help="training data (default: the checkpoint's dataset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="write here instead (a file or folder)")
    p.add_argument("--share", default=None, metavar="FILE",
                   help="keep the statistics in FILE, shared by checkpoints of one dataset: computed when FILE "
                        "does not exist yet, else reused; the checkpoint's config.json then names FILE")
    p.add_argument("--variance", type=float, default=0.99, help="keep the components that reach this variance share")
    p.add_argument("--max-mb", type=float, default=DEFAULT_MAX_MB,
                   help="size budget of the file in MiB (default %(default)g; int8 components: ~3 KB each per class "
                        "on 32×32 RGB)")
    p.add_argument("--limit", type=count, default=None, help="use the first N training images only")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_init_stats)


def cmd_init_stats(args: argparse.Namespace) -> int:
    """`init-stats`: fit ClassStats on the training set and save them beside the checkpoint."""
    from tqdm.auto import tqdm

    from .. import checkpoints
    from ..data import load_split
    from ..sampling.class_stats import STATS_NAME, ClassStats

    if not args.checkpoint and not args.out:
        raise WeatError("give --checkpoint (to save beside it) or --out")
    if args.share and (args.out or not args.checkpoint):
        raise WeatError("--share goes with --checkpoint (and not with --out)")
    cfg: dict[str, Any] = {}
    target: Optional[Path] = Path(args.out) if args.out else None
    directory: Optional[Path] = None
    if args.checkpoint:
        path = checkpoints.resolve(args.checkpoint)
        directory = path if path.is_dir() else path.parent
        cfg = checkpoints.load_config(directory)
        target = target or directory / STATS_NAME
    if args.share:
        target = Path(args.share)
        if target.suffix != ".safetensors":
            raise WeatError(f"--share names a .safetensors file, not {target}")
        _check_beside(directory, target)
        if target.is_file():  # reuse: check it fits, then only point the config at it
            stats = ClassStats.load(target)
            k = cfg.get("num_classes")
            if k is not None and int(k) != stats.num_classes:
                raise WeatError(f"{target} holds {stats.num_classes} classes but the checkpoint {k}")
            _link_stats(directory, target)
            print(f"{directory.name} now uses {target} ({stats.num_classes} classes, {stats.rank} components "
                  f"per class, from {stats.source or 'an unnamed dataset'})")
            return 0
    dataset = args.dataset or cfg.get("dataset")
    if not dataset:
        raise WeatError("the checkpoint's config names no dataset; pass --dataset")
    if not 0 < args.variance <= 1:
        raise WeatError("--variance must be in (0, 1]")
    data = load_split(dataset, "train", root=args.data_dir, limit=args.limit)
    k = cfg.get("num_classes")
    if k is not None and int(k) != data.num_classes:
        raise WeatError(f"{dataset} has {data.num_classes} classes but the checkpoint {k}")
    bar = tqdm(total=data.num_classes, desc="class statistics", disable=args.quiet, leave=False)
    stats = ClassStats.fit(data, max_variance=args.variance, max_bytes=int(args.max_mb * 2**20),
                           callback=lambda i, n: bar.update(1))
    bar.close()
    written = stats.save(target)
    if args.share:
        _link_stats(directory, written)
    ret = stats.retained()
    print(f"wrote {written} ({written.stat().st_size / 2**20:.2f} MiB): {stats.num_classes} classes, "
          f"{stats.rank} components per class covering {100 * ret.min():.1f}–{100 * ret.max():.1f} % of the "
          f"variance, from {len(data)} images of {dataset}")
    return 0


def _link_stats(directory: Path, stats_file: Path) -> None:
    """Point the checkpoint in `directory` at shared statistics: its config.json gets "init_stats",
    the file's path relative to the folder. A byte-identical copy beside it goes (it would take
    precedence); a different one is refused before anything is computed (`_check_beside`)."""
    from ..sampling.class_stats import STATS_NAME

    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["init_stats"] = Path(os.path.relpath(stats_file.resolve(), directory.resolve())).as_posix()
    tmp = cfg_path.with_name(cfg_path.name + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
    os.replace(tmp, cfg_path)
    beside = directory / STATS_NAME
    if beside.is_file() and beside.resolve() != stats_file.resolve():
        beside.unlink()
        print(f"removed {beside}: the same statistics as {stats_file}")


def _check_beside(directory: Path, stats_file: Path) -> None:
    """Refuse to share over statistics beside the checkpoint that differ from `stats_file`."""
    import filecmp

    from ..sampling.class_stats import STATS_NAME

    beside = directory / STATS_NAME
    if beside.is_file() and not (stats_file.is_file() and filecmp.cmp(beside, stats_file, shallow=False)):
        raise WeatError(f"{beside} holds other statistics and would take precedence over {stats_file}; "
                        "move it away first")
