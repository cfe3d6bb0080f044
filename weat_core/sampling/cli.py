"""The generation commands of `python -m weat_core`:

    generate    --checkpoint NAME --classes 0-9 --per-class 8 --out DIR
    gen-eval    --samples DIR/samples.npz --classifier NAME      (or --checkpoint NAME to generate first)
    init-stats  --checkpoint NAME [--dataset cifar10]

`add_commands(subparsers)` adds them to an argparse subparsers object; each handler takes the
parsed args and returns an exit code. User errors are raised as `WeatError`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .. import WeatError

if TYPE_CHECKING:
    import torch

# torch and the sampling code are imported inside the commands: building the parser stays light
DEFAULT_MAX_MB = 8.0  # init-stats --max-mb: init.DEFAULT_MAX_BYTES in MiB (a test holds the two equal)

__all__ = ["add_commands", "cmd_generate", "cmd_gen_eval", "cmd_init_stats", "parse_classes"]

log = logging.getLogger(__name__)


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


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WeatError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def _class_names(model: Any) -> list[str]:
    cfg = getattr(model, "config", {}) or {}
    names = list(cfg.get("classes") or [])
    if not names and str(cfg.get("dataset", "")).lower() == "cifar10":
        from ..data import CIFAR10_CLASSES

        names = list(CIFAR10_CLASSES)
    return names


# ------------------------------------------------------------------------------ arguments


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (left out: the checkpoint's defaults)")
    g.add_argument("--classes", default="all", help='classes to draw: "0-9", "0,3,5", "cat,dog" or "all"')
    g.add_argument("--per-class", type=int, default=8, help="images per class")
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
    g.add_argument("--batch-size", type=int, default=256, help="chains run together")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(subparsers: Any) -> None:
    """Add `generate`, `gen-eval` and `init-stats` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "generate", help="draw images from a classifier by SGLD",
        description="Sample images with SGLD on the classifier's energy and write grid.png, images/*.png, "
                    "samples.npz (uint8 images N×H×W×C, labels) and energies.json (settings, per-step traces).")
    p.add_argument("--checkpoint", required=True, help="shipped name, folder, or Hub id")
    p.add_argument("--out", required=True, help="output folder")
    _add_generation_args(p)
    _common(p)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser(
        "gen-eval", help="quality metrics of generated images (agreement, diversity, IS, FID)",
        description="Score samples.npz from `generate` (or generate afresh with --checkpoint): the share an "
                    "independent classifier assigns to the intended class, within-class diversity vs real test "
                    "images (in pixels, and in that classifier's penultimate features), and Inception Score / FID vs real training images (Inception weights download once).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", help="samples.npz written by `generate`")
    src.add_argument("--checkpoint", help="generate from this checkpoint first (settings as for `generate`)")
    p.add_argument("--classifier", default=None, help="an independently trained classifier checkpoint (agreement)")
    p.add_argument("--dataset", default=None, help="real images: cifar10 | … | folder | .tar.gz "
                                                   "(default: the checkpoint's dataset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--real", type=int, default=5000, help="real training images for FID")
    p.add_argument("--no-inception", action="store_true", help="skip IS and FID (no download, faster on CPU)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_generation_args(p)
    p.set_defaults(per_class=50)
    _common(p)
    p.set_defaults(func=cmd_gen_eval)

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
    p.add_argument("--limit", type=int, default=None, help="use the first N training images only")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_init_stats)


# ------------------------------------------------------------------------------- generate


def _run_generation(args: argparse.Namespace, model: Any):
    import torch
    from tqdm.auto import tqdm

    from .generation import default_settings, generate

    names = _class_names(model)
    classes = parse_classes(args.classes, model.num_classes, names)
    if args.per_class < 1:
        raise WeatError("--per-class must be at least 1")
    labels = torch.tensor(classes).repeat_interleave(args.per_class)  # (N,) grouped by class
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    steps = args.steps if args.steps is not None else default_settings(model).steps
    batches = -(-labels.numel() // args.batch_size) if args.batch_size else 1
    bar = tqdm(total=steps * batches, desc="SGLD", unit="step", disable=args.quiet, leave=False)

    def callback(step: int, state) -> None:
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

    model = checkpoints.load(args.checkpoint, device=_device(args.device))
    res, names = _run_generation(args, model)
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


# ------------------------------------------------------------------------------- gen-eval


def _load_samples(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    import torch

    p = Path(path)
    if p.is_dir():
        p = p / "samples.npz"
    if not p.is_file():
        raise WeatError(f"no samples at {p}; write them with `python -m weat_core generate`")
    try:
        with np.load(p, allow_pickle=False) as z:
            images = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
            labels = torch.from_numpy(z["labels"]).long()
    except (KeyError, ValueError, OSError) as e:
        raise WeatError(f"{p} is not a samples.npz from `generate` ({e})") from None
    return images, labels


def cmd_gen_eval(args: argparse.Namespace) -> int:
    """`gen-eval`: print agreement, diversity (pixels and features), IS and FID of generated images."""
    import torch

    from .. import checkpoints
    from ..data import load_split
    from .metrics import evaluate_samples, fid, inception_score

    device = _device(args.device)
    dataset = args.dataset
    classifier = None
    if args.samples:
        images, labels = _load_samples(args.samples)
    else:
        model = checkpoints.load(args.checkpoint, device=device)
        res, _ = _run_generation(args, model)
        images, labels = res.images, res.labels
        dataset = dataset or model.config.get("dataset")
    if args.classifier:
        classifier = checkpoints.load(args.classifier, device=device)
        dataset = dataset or classifier.config.get("dataset")
        if args.checkpoint and str(checkpoints.resolve(args.classifier)) == str(checkpoints.resolve(args.checkpoint)):
            log.warning("the classifier is the generating model itself: agreement is then not an independent check")
    real_test = load_split(dataset, "test", root=args.data_dir) if dataset else None
    if not dataset:
        log.info("no --dataset: diversity without a real reference, no FID")
    m = evaluate_samples(images, labels, classifier=classifier, real_test=real_test, inception=False)
    if args.no_inception:
        m["skipped"]["inception"] = "turned off (--no-inception)"
    else:
        m["skipped"].pop("inception", None)
        log.info("Inception Score / FID of %d images (slow on a CPU; --no-inception skips them)", images.shape[0])
        try:
            m["inception_score"] = inception_score(images, device=device)
            if dataset and args.real > 0:  # load the real images only once Inception is known to work
                real_train = load_split(dataset, "train", root=args.data_dir, limit=args.real).x
                m["fid"] = fid(images, real_train, device=device)
                m["fid_real_n"] = int(real_train.shape[0])
            else:
                m["skipped"]["fid"] = "no real training images (--dataset, --real)"
        except WeatError as e:
            m["skipped"]["inception"] = str(e)
    judge_method = classifier.config.get("method", "?") if classifier is not None else None
    if "classifier" in m:
        m["classifier"]["method"] = judge_method  # what kind of judge: its features see differently
    if args.json:
        print(json.dumps(m, indent=2, default=float))
        return 0
    print(f"samples               {m['n']} ({len(torch.unique(labels))} classes)")
    if "classifier" in m:
        c = m["classifier"]
        print(f"classifier agreement  {100 * c['agreement']:.1f} %  (mean p(y|x) {c['confidence']:.3f}; "
              f"classifier {args.classifier}, trained {judge_method})")
    d = m["diversity"]
    line = f"diversity             {d['generated']:.3f} mean pairwise L2 within a class"
    if d.get("real"):
        line += f"; real test images {d['real']:.3f}; ratio {d['ratio']:.3f}"
    print(line)
    if "feature_diversity" in m:
        f = m["feature_diversity"]
        line = f"feature diversity     {f['generated']:.3f} in the classifier's penultimate features"
        if f.get("real"):
            line += f"; real test images {f['real']:.3f}; ratio {f['ratio']:.3f}"
        print(line)
        if judge_method == "standard":  # measured on the PreActResNet-18 samples (docs/generation.md)
            print("                      (a standard classifier's features hardly tell repeated textures from "
                  "varied images; a robust classifier as --classifier shows collapse better)")
    if "inception_score" in m:
        print(f"Inception Score       {m['inception_score'][0]:.3f} ± {m['inception_score'][1]:.3f}")
    if "fid" in m:
        print(f"FID                   {m['fid']:.2f}  (vs {m['fid_real_n']} training images; compare at equal N)")
    for what, why in m["skipped"].items():
        print(f"skipped {what}: {why}")
    return 0


# ----------------------------------------------------------------------------- init-stats


def cmd_init_stats(args: argparse.Namespace) -> int:
    """`init-stats`: fit ClassStats on the training set and save them beside the checkpoint."""
    from tqdm.auto import tqdm

    from .. import checkpoints
    from ..data import load_split
    from .init import STATS_NAME, ClassStats

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
    from .init import STATS_NAME

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

    from .init import STATS_NAME

    beside = directory / STATS_NAME
    if beside.is_file() and not (stats_file.is_file() and filecmp.cmp(beside, stats_file, shallow=False)):
        raise WeatError(f"{beside} holds other statistics and would take precedence over {stats_file}; "
                        "move it away first")
