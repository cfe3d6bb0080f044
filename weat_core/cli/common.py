"""What the commands share: logging, the device, and the test images and checkpoint folder
that `eval`, `sweep`, `landscape` and `plane` read and write."""

from __future__ import annotations

import logging
import sys

from .. import WeatError

log = logging.getLogger("weat_core")


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("huggingface_hub").setLevel(logging.WARNING)


def count(text: str) -> int:
    """argparse type of a number of images, epochs or chains: a whole number, 1 or more (argparse
    prints the message after the option's name, with the command's usage)."""
    import argparse

    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number, 1 or more; got {text!r}")
    return v


def pick_device(name: str):
    """--device (auto, cpu, cuda, cuda:N, mps) → torch.device; asking for CUDA without a GPU is a
    user error, not a traceback."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WeatError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def check_attacks(attacks, eps: float, norm: str = "linf", alpha=None) -> None:
    """Build every attack named (the measures `eval` and `compare` take), so that an unknown name or a
    bad step fails at once, before the checkpoints and the test images are read (seconds to minutes)."""
    from ..attacks import make_attack

    for name in attacks:
        if name != "clean":
            make_attack(name, eps=eps, norm=norm, alpha=alpha)


def add_checkpoint_args(p) -> None:
    """--checkpoint, --revision, --dataset and --data-dir: the model and the test images that
    `eval`, `sweep` and `landscape` measure it on (`eval_images`)."""
    p.add_argument("--checkpoint", required=True, help="shipped name, local folder/file, or Hub id owner/name")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    p.add_argument("--data-dir", default=None)


def store_folder(model, checkpoint: str):
    """The local checkpoint folder that `--store` writes into (its config.json and model card);
    a Hub cache or a lone weights file is refused."""
    from pathlib import Path

    folder = Path(str(model.config.get("source", "")))
    if not (folder / "config.json").is_file() or (folder / "config.json").is_symlink():
        raise WeatError(f"--store needs a local checkpoint folder (not a Hub cache); {checkpoint!r} is not one")
    return folder


def eval_images(model, args):
    """(dataset, the first `args.n` test images) for eval, sweep and landscape: `--dataset`, else
    the one the checkpoint names."""
    from ..data import load_split

    dataset = args.dataset or model.config.get("dataset")
    if not dataset:
        raise WeatError("the checkpoint does not name its dataset; pass --dataset")
    return dataset, load_split(dataset, "test", root=args.data_dir, limit=args.n)


def progress_bar(desc: str, quiet: bool):
    """(tqdm bar, callback(done, total, label)) for the lens functions' batch callbacks."""
    from tqdm.auto import tqdm

    bar = tqdm(total=1, desc=desc, unit="batch", disable=quiet, leave=False)

    def progress(done: int, total: int, label: str) -> None:
        bar.total = total
        bar.set_postfix_str(label, refresh=False)
        # moved by update, not set: its rate (and the time left) then follows the recent batches, a
        # slow attack's rather than the average since the start, which the natural images' fast
        # batches made promise far too little time
        bar.update(done - bar.n)
        bar.refresh()

    return bar, progress
