"""Command line: `python -m weat_core COMMAND ...`, one module per group of commands:

    train                      `train`     adversarial training
    eval, compare              `evaluate`  accuracy under attack and energies on the test split;
                                           checkpoints compared image by image
    sweep, landscape           `observation`  Observation 1 across ε or steps; for every attack at one ε
    list, export, push         `checkpoints`  shipped models and runs; export a run; publish on the Hub
    generate                   `generate`  SGLD sampling
    gen-eval                   `gen_eval`  quality of generated images
    init-stats                 `init_stats`  class statistics for the Gaussian / PCA starts

Each module's `add_commands(subparsers)` adds its commands; every handler takes the parsed args
and returns an exit code. Options must be spelled out (no argparse abbreviations). Errors meant
for the user (`WeatError`) are printed as one line and exit with status 2. torch is imported
inside the handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Optional, Sequence

from .. import WeatError, __version__
from . import checkpoints, evaluate, gen_eval, generate, init_stats, observation, plane, train
from .common import count, setup_logging

__all__ = ["main", "build_parser"]

COMMAND_MODULES = (train, evaluate, observation, plane, checkpoints, generate, gen_eval, init_stats)  # in `--help` order
NO_COMPUTE = ("list", "push")  # the commands that run no model, so take no --threads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m weat_core", description="WEAT Lens: robustness through energies")
    p.add_argument("--version", action="version", version=f"weat_core {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    for name, command in sub.choices.items():
        # whole option names only: argparse would otherwise take `generate --n 2` as --noise-std 2
        # (eval, sweep and landscape do have --n), silently
        command.allow_abbrev = False
        if name not in NO_COMPUTE:
            command.add_argument("--threads", type=count, default=None,
                                 help="CPU threads for torch (default: torch's own, one per core). Two long jobs "
                                      "side by side on a 2-core machine run fastest at --threads 1 each; asking "
                                      "for more threads than cores in all slows each to a fraction of its speed")
    p.command_parsers = sub.choices  # for main's message on unknown options
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown(parser, args.command, extra)
    setup_logging(getattr(args, "quiet", False))
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except WeatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {_what_is_kept(args)}", file=sys.stderr)
        return 130


def _what_is_kept(args: argparse.Namespace) -> str:
    """After Ctrl-C: what the command saved, and how to go on from it."""
    if args.command == "train":
        return "the last complete epoch is saved (continue with --resume)"
    if args.command == "eval":
        if getattr(args, "out", None):
            return (f"the batches done are saved in {args.out}.partial "
                    "(continue: the same command with --resume)")
        return "nothing was saved (with --out, progress is kept after every batch for --resume)"
    if args.command == "export":
        return "the measurements done are kept in the run folder: the same command goes on from them"
    return "nothing was saved"


def _unknown(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> None:
    """Exit as argparse does for arguments a command does not take, from that command's parser
    (its usage line, not the top level's), naming the options each unknown one may have meant."""
    sub = parser.command_parsers[command]
    known = [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    hints = []
    for arg in extra:
        name = arg.split("=", 1)[0]
        if not name.startswith("--"):
            continue
        close = [k for k in known if k.startswith(name)] or difflib.get_close_matches(name, known, n=3, cutoff=0.7)
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    sub.error(f"unrecognized arguments: {' '.join(extra)}" + ("".join(f"\n  {h}" for h in hints)))
