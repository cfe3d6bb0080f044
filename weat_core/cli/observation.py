"""The Observation 1 commands: `sweep` (untargeted and targeted PGD across ε or attack steps)
and `landscape` (every attack the energy landscape page offers, at one ε). Both print the mean
shift of E(x) from the natural images with its noise and the verdict, and `--store` writes them
into a checkpoint's config.json and model card."""

from __future__ import annotations

import json

from .. import WeatError
from .common import add_checkpoint_args, count, eval_images, log, pick_device, progress_bar, store_folder


def add_commands(sub) -> None:
    _add_sweep(sub)
    _add_landscape(sub)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="Observation 1 across ε: how PGD and targeted PGD move E(x) as ε grows",
                       description="Untargeted and targeted L∞ PGD at each ε on the same test images (step "
                                   "max(2/255, 2.5·ε/steps)); prints the mean shift of E(x) from the natural "
                                   "images with its standard error, the share of images sent lower, accuracy "
                                   "and the Observation 1 verdict per ε.")
    add_checkpoint_args(p)
    p.add_argument("--n", type=int, default=500, help="number of test images (the first n)")
    p.add_argument("--eps", default="2,4,8,16,32,64", help="comma list of ε in units of 1/255")
    p.add_argument("--steps", type=int, default=20, help="PGD steps per attack")
    p.add_argument("--steps-list", default=None,
                   help="comma list of PGD step counts (e.g. 1,2,5,20): sweep these at the one ε that --eps "
                        "names, step 2/255, instead of sweeping ε (not with --store)")
    p.add_argument("--batch-size", type=count, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--store", action="store_true",
                   help="write the sweep into the checkpoint's config.json and model card (a local folder)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sweep)


def _within_255(eps: list[float]) -> None:
    """`sweep` and `landscape` take ε in units of 1/255: above 255 it would exceed the pixel range."""
    if eps and max(eps) > 255:
        raise WeatError(f"--eps is in units of 1/255 (8 means 8/255), so at most 255; got {max(eps):g}")


def _cmd_sweep(args) -> int:
    from pathlib import Path

    from .. import lens
    from ..checkpoints import load

    try:
        eps = [float(e) for e in args.eps.split(",") if e.strip()]
    except ValueError:
        raise WeatError(f"--eps takes numbers in units of 1/255, e.g. 2,4,8,16; got {args.eps!r}") from None
    _within_255(eps)
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
    # as landscape and eval run it: eval mode, frozen weights, channels_last on a CPU
    model = lens.prepare(load(args.checkpoint, device=pick_device(args.device), revision=args.revision))
    folder = store_folder(model, args.checkpoint) if args.store else None
    dataset, test = eval_images(model, args)
    bar, progress = progress_bar("sweep", args.quiet)
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
        from ..export import store_sweep

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


# ------------------------------------------------------------------------------- landscape


def _add_landscape(sub) -> None:
    p = sub.add_parser("landscape", help="Observation 1 for every attack at one ε (the energy landscape page)",
                       description="Run the attacks of the energy landscape page on the same test images and print, "
                                   "for each, accuracy, the mean shift of E(x) from the natural images with two "
                                   "standard errors, the share of images sent lower or handed back unchanged, the "
                                   "Observation 1 verdict, and the shift split by what the attack did to each "
                                   "prediction.")
    add_checkpoint_args(p)
    p.add_argument("--n", type=int, default=256, help="number of test images (the first n of the class-balanced "
                                                      "order, as on the page)")
    p.add_argument("--attacks", default=None,
                   help="comma list of the page's attacks, e.g. PGD,PGD-T,FAB-T,Square (default: every attack "
                        "Observation 1 names; an unknown name lists them all)")
    p.add_argument("--eps", type=float, default=8, help="L∞ radius in units of 1/255")
    p.add_argument("--steps", type=int, default=10,
                   help="attack steps (Square: 100 queries a step), step 2/255 for the PGD family")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--store", action="store_true",
                   help="write the results into the checkpoint's config.json and model card (a local folder; "
                        "ε 8/255)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_landscape)


def _cmd_landscape(args) -> int:
    from pathlib import Path

    from .. import lens
    from ..checkpoints import load

    kinds = ([a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks is not None
             else list(lens.EXPECTED_SHIFT))
    unknown = [k for k in kinds if k not in lens.ATTACKS]
    if unknown or not kinds:
        raise WeatError(f"--attacks takes the page's attacks ({', '.join(lens.ATTACKS)}); got {args.attacks!r}")
    _within_255([args.eps])
    if args.eps <= 0 or args.steps < 1 or args.n < 2:
        raise WeatError("--eps must be positive, --steps at least 1 and --n at least 2 images")
    if args.store and abs(args.eps - 8) > 1e-9:
        raise WeatError("--store keeps Observation 1 at ε = 8/255 only, as every stored metric; drop --eps")
    model = lens.prepare(load(args.checkpoint, device=pick_device(args.device), revision=args.revision))
    folder = store_folder(model, args.checkpoint) if args.store else None
    dataset, test = eval_images(model, args)
    attacks = {k: lens.attack_from(k, eps=args.eps / 255, steps=args.steps) for k in kinds}
    bar, progress = progress_bar("landscape", args.quiet)
    res = lens.energy_landscape(model, test.float(), test.y, attacks, batch_size=lens.batch_size_for(kinds),
                                callback=progress)
    bar.close()
    result = landscape_result(res, n=len(test), eps=args.eps, steps=args.steps)
    print(landscape_text(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, **result}, indent=2))
        log.info("wrote %s", args.out)
    if folder is not None:
        from ..export import store_attacks

        store_attacks(folder, result, dataset=str(dataset))
        log.info("stored Observation 1 for %d attacks in %s", len(kinds), folder / "config.json")
    return 0


def landscape_result(res, n: int, eps: float, steps: int) -> dict:
    """An `energy_landscape` result as JSON-ready numbers: the natural images' accuracy and mean
    E(x), and one row per attack with an expected direction (attack, expected, accuracy, shift,
    se, share_lower, unchanged, verdict, seconds, by_outcome: {group: {n, shift}})."""
    from .. import lens
    from ..lens.attack_specs import SQUARE_QUERIES_PER_STEP

    s = res.summary.set_index("attack")
    groups = lens.shift_by_outcome(res.per_image)
    rows = []
    for _, r in lens.observation1(res.summary).iterrows():
        g = groups[groups["attack"] == r["attack"]]
        rows.append({"attack": r["attack"], "expected": r["expected"],
                     "accuracy": float(s.loc[r["attack"], "accuracy"]), "shift": float(r["shift E(x)"]),
                     "se": float(r["se"]), "share_lower": float(r["share E(x)↓"]), "unchanged": float(r["unchanged"]),
                     "verdict": r["verdict"], "seconds": float(s.loc[r["attack"], "time_s"]),
                     "by_outcome": {o: {"n": int(k), "shift": float(v)}
                                    for o, k, v in zip(g["outcome"], g["n"], g["shift E(x)"])}})
    square = {"square_queries": SQUARE_QUERIES_PER_STEP * steps} if "Square" in s.index else {}
    natural = {"accuracy": float(s.loc["natural", "accuracy"]), "energy_mean": float(s.loc["natural", "mean E(x)"])}
    return {"n": n, "eps": eps, "steps": steps, **square, "natural": natural, "rows": rows}


def landscape_text(result: dict) -> str:
    """The table `landscape` prints: one line per attack."""
    nat = result["natural"]
    lines = [f"natural images: accuracy {100 * nat['accuracy']:.1f} %, mean E(x) {nat['energy_mean']:.3f} "
             f"(n = {result['n']}, L∞ ε = {result['eps']:g}/255, {result['steps']} steps)",
             f"{'attack':10s} {'expected':8s} {'accuracy':>8s} {'shift E(x)':>10s} {'± 2 SE':>7s} {'lower':>6s} "
             f"{'unchanged':>9s}  verdict   flipped images"]
    for r in result["rows"]:
        flipped = r["by_outcome"].get("flipped")
        lines.append(f"{r['attack']:10s} {r['expected']:8s} {100 * r['accuracy']:7.1f}% {r['shift']:+10.3f} "
                     f"{2 * r['se']:7.3f} {100 * r['share_lower']:5.0f}% {100 * r['unchanged']:8.0f}%  "
                     f"{r['verdict']:9s} " + (f"{flipped['n']}: {flipped['shift']:+.3f}" if flipped else "none"))
    return "\n".join(lines)
