"""`generate`: draw images from a classifier by SGLD (`weat_core.sampling`), and the sampling
arguments that `gen-eval` shares.

    generate --checkpoint NAME --classes 0-9 --per-class 8 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .. import WeatError
from .common import count, pick_device

if TYPE_CHECKING:
    import torch

# torch and the sampling code are imported inside the commands: building the parser stays light


def parse_classes(spec: str, num_classes: int, names: Sequence[str] = ()) -> list[int]:
    """"0-9", "0,3,5-7", "cat,dog" (class names) or "all" → sorted class indices."""
    if spec.strip().lower() == "all":
        return list(range(num_classes))
    lookup = {n.lower(): i for i, n in enumerate(names)}
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if a > b:
                raise WeatError(f"bad class range {part!r}: start after end")
            out.update(range(a, b + 1))
        elif part.isdigit():
            out.add(int(part))
        elif part.lower() in lookup:
            out.add(lookup[part.lower()])
        else:
            known = f" (classes: {', '.join(names)})" if names else ""
            raise WeatError(f"unknown class {part!r} in --classes {spec!r}{known}")
    bad = [c for c in out if c >= num_classes]
    if bad:
        raise WeatError(f"class {bad[0]} does not exist: the model has {num_classes} classes (0–{num_classes - 1})")
    if not out:
        raise WeatError(f"--classes {spec!r} names no class")
    return sorted(out)


def class_names(model: Any) -> list[str]:
    cfg = getattr(model, "config", {}) or {}
    names = list(cfg.get("classes") or [])
    if not names and str(cfg.get("dataset", "")).lower() == "cifar10":
        from ..data import CIFAR10_CLASSES

        names = list(CIFAR10_CLASSES)
    return names


def add_generation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (left out: the checkpoint's defaults)")
    g.add_argument("--classes", default="all", help='classes to draw: "0-9", "0,3,5", "cat,dog" or "all"')
    g.add_argument("--per-class", type=count, default=8, help="images per class")
    g.add_argument("--steps", type=int, default=None, help="SGLD steps")
    g.add_argument("--step-size", type=float, default=None, help="η, in pixel units (the update is −η/2·∇E)")
    g.add_argument("--noise-std", type=float, default=None, help="σ, std of the Gaussian noise added each step")
    g.add_argument("--momentum", type=float, default=None, help="ζ in [0, 1)")
    g.add_argument("--init", choices=("uniform", "gaussian", "pca"), default=None,
                   help="starting images (gaussian/pca need `init-stats` once)")
    g.add_argument("--pca-variance", type=float, default=None, help="variance share the pca start keeps (0.95–0.99)")
    g.add_argument("--objective", choices=("joint", "ce", "marginal"), default=None,
                   help="joint: E(x,y); ce: CE(x,y); marginal: E(x), unconditional")
    g.add_argument("--sampler", choices=("sgld", "heun"), default=None, help="heun: second order, 2 gradients a step")
    g.add_argument("--max-update", type=float, default=None, help="clamp each step's velocity to this radius; 0: no clamp "
                   "(standard models clamp to 2/255 by default)")
    g.add_argument("--update-norm", choices=("linf", "l2"), default=None, help="norm of --max-update")
    g.add_argument("--stats", default=None, help="class statistics file (default: the one beside the checkpoint)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, recorded in the output)")
    g.add_argument("--batch-size", type=count, default=256, help="chains run together")


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="draw images from a classifier by SGLD",
        description="Sample images with SGLD on the classifier's energy and write grid.png, images/*.png, "
                    "samples.npz (uint8 images N×H×W×C, labels) and energies.json (settings, per-step traces).")
    p.add_argument("--checkpoint", required=True, help="shipped name, folder, or Hub id")
    p.add_argument("--out", required=True, help="output folder")
    add_generation_args(p)
    add_device_args(p)
    p.set_defaults(func=cmd_generate)


def run_generation(args: argparse.Namespace, model: Any):
    import torch
    from tqdm.auto import tqdm

    from ..sampling.generation import default_settings, generate

    names = class_names(model)
    classes = parse_classes(args.classes, model.num_classes, names)
    if args.per_class < 1:
        raise WeatError("--per-class must be at least 1")
    labels = torch.tensor(classes).repeat_interleave(args.per_class)  # (N,) grouped by class
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    steps = args.steps if args.steps is not None else default_settings(model).steps
    batches = -(-labels.numel() // args.batch_size) if args.batch_size else 1
    bar = None  # drawn at the first callback, after generate has checked the settings

    def callback(step: int, state) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=steps * batches, desc="SGLD", unit="step", disable=args.quiet, leave=False)
        if step > 0:
            bar.update(1)
            if step % 10 == 0 or step == steps:
                bar.set_postfix(E=f"{state.energy[state.alive].mean().item():.3f}" if state.alive.any() else "nan")

    try:
        res = generate(model, labels, steps=args.steps, step_size=args.step_size, noise_std=args.noise_std,
                       momentum=args.momentum, init=args.init, objective=args.objective, seed=seed,
                       callback=callback, sampler=args.sampler, max_update=args.max_update,
                       update_norm=args.update_norm, pca_variance=args.pca_variance,
                       stats=args.stats if args.stats else "auto", batch_size=args.batch_size)
    finally:
        if bar is not None:
            bar.close()
    return res, names


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    import torch

    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def _write_outputs(res: Any, names: Sequence[str], per_class: int, out: Path, checkpoint: str) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    out.mkdir(parents=True, exist_ok=True)
    img_dir = out / "images"
    img_dir.mkdir(exist_ok=True)
    for old in img_dir.glob("*.png"):  # a second run into the same folder must not leave stale images
        old.unlink()
    u8 = _to_uint8(res.images)  # (M, C, H, W)
    hwc = u8.permute(0, 2, 3, 1).contiguous().numpy()  # (M, H, W, C)

    def label_name(y: int) -> str:
        return re.sub(r"[^\w.-]", "_", names[y]) if y < len(names) else f"class{y}"

    for img, i, y in zip(hwc, res.chain.tolist(), res.labels.tolist()):
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(img_dir / f"{i:04d}_{label_name(y)}.png")
    # grid: one row per class (in request order); a diverged chain leaves its cell blank
    tiles = torch.zeros(res.requested.numel(), *u8.shape[1:], dtype=torch.uint8)
    tiles[res.chain] = u8
    grid = make_grid(tiles, nrow=per_class, padding=2, pad_value=255)  # (C, H', W') uint8
    Image.fromarray(grid.permute(1, 2, 0).squeeze(-1).numpy()).save(out / "grid.png")
    np.savez_compressed(out / "samples.npz", images=hwc, labels=res.labels.numpy().astype(np.int64),
                        chain=res.chain.numpy().astype(np.int64),
                        classes=np.array([names[y] if y < len(names) else str(y) for y in range(
                            int(res.requested.max()) + 1)]))
    trace = res.trace_dict()
    trace.update(checkpoint=checkpoint, classes=list(names))
    tmp = out / "energies.json.tmp"
    tmp.write_text(json.dumps(trace, allow_nan=False))
    os.replace(tmp, out / "energies.json")


def cmd_generate(args: argparse.Namespace) -> int:
    """`generate`: sample images and write grid.png, images/, samples.npz, energies.json."""
    import torch

    from .. import checkpoints

    model = checkpoints.load(args.checkpoint, device=pick_device(args.device))
    res, names = run_generation(args, model)
    out = Path(args.out)
    _write_outputs(res, names, args.per_class, out, args.checkpoint)
    s = res.settings
    e0, e1 = res.energies[0], res.energies[-1]
    ok = torch.isfinite(e1)
    print(f"wrote {res.images.shape[0]} images to {out} ({s.steps} {s.sampler.upper()} steps, η={s.step_size:g}, "
          f"σ={s.noise_std:g}, ζ={s.momentum:g}, init {s.init}, objective {s.objective}, seed {res.seed}; "
          f"{res.seconds:.1f} s)")
    if bool(ok.any()):
        print(f"energy {s.objective}: {e0[ok].mean():.3f} at the start → {e1[ok].mean():.3f} at the end")
    if res.diverged:
        d = res.diverged[0]
        print(f"warning: {res.num_diverged} of {res.requested.numel()} chains diverged (NaN/inf) and were not "
              f"written, e.g. chain {d['index']} (class {d['label']}) at step {d['step']}: {d['reason']}; "
              "see energies.json", flush=True)
    return 0
