"""`plane`: Observation 3 around single images. For each of the first n test images, how much E(x)
changes on the plane through it and its untargeted and targeted PGD images, over the square the two
attacks span (`lens.plane_spreads`, the attack explorer's "energy around this image"); prints the
mean over the images with its standard error, and `--store` writes it into a checkpoint's
config.json and model card."""

from __future__ import annotations

import json

from .. import WeatError
from .common import add_checkpoint_args, count, eval_images, log, pick_device, progress_bar, store_folder


def add_commands(sub) -> None:
    p = sub.add_parser("plane", help="Observation 3 around each image: how much E(x) changes on the plane of "
                                     "its two PGD attacks",
                       description="For each test image, attack it with untargeted and targeted PGD (a random "
                                   "other class) at L∞ 8/255, step 2/255, and measure max − min E(x) on a grid over "
                                   "the square those two images span with the natural one; prints the mean over the "
                                   "images with its standard error, and the median. Smaller: a smoother energy "
                                   "around the test images.")
    add_checkpoint_args(p)
    p.add_argument("--n", type=count, default=256, help="number of test images (the first n)")
    p.add_argument("--steps", type=count, default=10, help="PGD steps of both attacks")
    p.add_argument("--grid", type=int, default=9, help="grid points per side of the square (at least 2)")
    p.add_argument("--batch-size", type=count, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the result, each image's span too, as JSON here")
    p.add_argument("--reuse", default=None, metavar="FILE",
                   help="an earlier --out: take this checkpoint's spans from it instead of measuring them again "
                        "(it must hold the same test images, steps and grid)")
    p.add_argument("--store", action="store_true",
                   help="write the result into the checkpoint's config.json and model card (a local folder)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_plane)


def _cmd_plane(args) -> int:
    import time
    from pathlib import Path

    import numpy as np

    from .. import lens
    from ..checkpoints import load

    if args.grid < 2 or args.n < 2:
        raise WeatError(f"--grid takes 2 or more points per side and --n 2 or more images; got {args.grid} and {args.n}")
    model = lens.prepare(load(args.checkpoint, device=pick_device(args.device), revision=args.revision))
    folder = store_folder(model, args.checkpoint) if args.store else None
    dataset, test = eval_images(model, args)
    name = Path(args.checkpoint.rstrip("/")).name
    t0 = time.time()
    if args.reuse:
        spans = np.asarray(_reused(args.reuse, name, str(dataset), len(test), args.steps, args.grid), float)
        log.info("%s: the spans of %d images from %s", name, len(spans), args.reuse)
    else:
        bar, progress = progress_bar("plane", args.quiet)
        spans = lens.plane_spreads(model, test.float(), test.y, steps=args.steps, n=args.grid,
                                   batch_size=args.batch_size, callback=progress)
        bar.close()
    result = plane_result(spans, steps=args.steps, grid=args.grid, seconds=time.time() - t0)
    print(f"{name}: E(x) changes by {result['mean']:.3f} ± {result['se']:.3f} (one standard error; median "
          f"{result['median']:.3f}) across the square of each image's PGD-{args.steps} and targeted PGD-{args.steps} "
          f"images, L∞ 8/255, {args.grid} × {args.grid} grid, {len(test)} test images")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": name, "dataset": str(dataset), **result}, indent=1))
        log.info("wrote %s", args.out)
    if folder is not None:
        from ..export import store_plane

        store_plane(folder, result, dataset=str(dataset))
        log.info("stored the span in %s", folder / "config.json")
    return 0


def plane_result(spans, steps: int, grid: int, seconds: float) -> dict:
    """Each image's span of E(x) (two or more images) as JSON-ready numbers: mean, se (one standard
    error of the mean), median, n, steps, grid, eps ("8/255"), seconds, spreads (per image, 5 decimals)."""
    import numpy as np

    sp = np.asarray(spans, dtype=np.float64)
    se = float(sp.std(ddof=1) / len(sp) ** 0.5)
    return {"mean": float(sp.mean()), "se": se, "median": float(np.median(sp)), "n": len(sp), "steps": steps,
            "grid": grid, "eps": "8/255", "seconds": seconds, "spreads": [round(float(v), 5) for v in sp]}


def _reused(file: str, name: str, dataset: str, n: int, steps: int, grid: int) -> list:
    """The spans of checkpoint `name` in an earlier `--out` (one checkpoint's; or several under
    "models", as the first measurements of every shipped model were kept), checked against the
    dataset, images, steps and grid asked for."""
    from pathlib import Path

    try:
        saved = json.loads(Path(file).read_text())
        models = saved.get("models") or {saved["checkpoint"]: saved}
        spans = models[name]["spreads"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WeatError(f"--reuse {file}: no spans of {name} there ({e!r})") from None
    if saved.get("dataset") and Path(str(saved["dataset"])).name != Path(dataset).name:
        raise WeatError(f"--reuse {file} measured {saved['dataset']}, not {dataset}")
    held = (len(spans), saved.get("steps"), saved.get("grid"))
    if held != (n, steps, grid):
        raise WeatError(f"--reuse {file} holds {held[0]} images, {held[1]} steps and a {held[2]}-point grid; "
                        f"asked for {n}, {steps} and {grid}")
    return spans
