"""`eval`: accuracy under attack, and energies, of a checkpoint on the test split."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from typing import Callable, Iterator

from .. import WeatError
from .common import add_checkpoint_args, check_attacks, count, eval_images, log, pick_device, store_folder


def add_commands(sub) -> None:
    _add_eval(sub)
    _add_compare(sub)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="clean / PGD / AutoAttack accuracy and energies of a checkpoint")
    add_checkpoint_args(p)
    p.add_argument("--n", type=count, default=None, help="number of test images (default: all)")
    p.add_argument("--attacks", default="pgd20",
                   help="comma list: pgd20, pgd20-t, pgd20-ll, cw20, trades10, energy-lower10, apgd-ce, apgd-t, "
                        "fab-t, square, aa (standard AutoAttack), aa-fast (APGD-CE + APGD-T)")
    p.add_argument("--eps", default=None, help="default 8/255 for linf, 0.5 for l2")
    p.add_argument("--alpha", default=None,
                   help="step size of the PGD-family attacks, e.g. 0.5/255 (default 2/255 for linf, eps/4 for l2)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--batch-size", type=count, default=None,
                   help="default 256; 64 for AutoAttack-family attacks on a CPU, where one batch of 256 takes "
                        "tens of minutes (progress, and what --resume keeps, advance once per batch)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help="write the results as JSON here, each image's result too (a string of 0/1 per measure, "
                        "for `compare --reuse`); progress is saved after every batch in OUT.partial, and a first "
                        "Ctrl-C stops once the batch under way is saved")
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


@contextlib.contextmanager
def stop_after_batch(saving: bool) -> Iterator[Callable[[], bool]]:
    """With `saving` (`eval --out` keeps every batch), a first Ctrl-C (SIGINT) asks the evaluation to
    stop once the batch under way is saved, and a second stops at once, as without: an AutoAttack
    batch takes half an hour on our CPU, and a plain Ctrl-C lost it. Yields the `should_stop` for
    `evaluate`. Outside the main thread (signals cannot be caught there) nothing changes."""
    asked = threading.Event()
    if not saving or threading.current_thread() is not threading.main_thread():
        yield asked.is_set
        return

    def first(signum, frame):
        asked.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
        print("\nstopping once the batch under way is saved (Ctrl-C again: at once, losing that batch)",
              file=sys.stderr, flush=True)

    before = signal.signal(signal.SIGINT, first)
    try:
        yield asked.is_set
    finally:
        signal.signal(signal.SIGINT, before)


SLOW_ON_CPU = ("aa", "apgd", "fab", "square")  # the torchattacks evaluations (prefixes of attack names)


def _batch_size(given, device, attacks) -> int:
    """--batch-size, else 256, or 64 for the torchattacks evaluations on a CPU (where a batch of
    256 takes tens of minutes: progress, and what --resume keeps, advance once per batch)."""
    slow = device.type == "cpu" and any(a.split("-")[0] in SLOW_ON_CPU for a in attacks)
    return given or (64 if slow else 256)


def _cmd_eval(args) -> int:
    from pathlib import Path

    from ..checkpoints import load
    from ..evaluate import evaluate, parse_eps, parse_radius
    from ..results import against_stored, correct_bits, format_against_stored, format_table, stored_setting
    from ..lens._common import prepare

    # the settings are checked before anything is loaded
    if args.store and args.amp:
        raise WeatError("--store keeps fp32 measurements only (the shipped metrics are fp32); drop --amp to store")
    eps = parse_radius(args.eps, args.norm) if args.eps else (8 / 255 if args.norm == "linf" else 0.5)
    alpha = parse_eps(args.alpha) if args.alpha else None
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if args.store and (not stored_setting(args.norm, eps, alpha) or args.seed != 0):
        raise WeatError("--store keeps metrics for L∞ ε = 8/255, step 2/255 and seed 0 only; "
                        "drop --norm/--eps/--alpha/--seed")
    check_attacks(attacks, eps, args.norm, alpha)
    state = Path(args.out + ".partial") if args.out else None
    if args.resume and state is None:
        raise WeatError("--resume continues the evaluation saved beside --out; pass the same --out")
    if state is not None and state.is_file() and not args.resume:
        raise WeatError(f"{state} holds an interrupted evaluation: pass --resume to continue it, "
                        "or delete the file to start over")
    device = pick_device(args.device)
    # eval mode, frozen parameters, and channels_last on a CPU (PGD-20 on the default model: 1.4 times
    # as fast; bench/bench_eval.py)
    model = prepare(load(args.checkpoint, device=device, revision=args.revision))
    dataset, test = eval_images(model, args)
    folder = store_folder(model, args.checkpoint) if args.store else None
    batch = _batch_size(args.batch_size, device, attacks)
    with stop_after_batch(state is not None) as stopping:
        res = evaluate(model, test.float(), test.y, attacks, eps=eps, norm=args.norm, alpha=alpha, batch_size=batch,
                       seed=args.seed, progress=not args.quiet, state=state, amp=args.amp, per_image=bool(args.out),
                       should_stop=stopping)
    correct = res.pop("correct", None)
    res.update(checkpoint=args.checkpoint, dataset=str(dataset), images=test.digest(), seed=args.seed,
               **({"alpha": alpha} if alpha is not None else {}), **({"amp": True} if args.amp else {}))
    print(format_table(res))
    # the checkpoint's own numbers for the same measures and image count, beside this run's
    stored = against_stored(res, model.config.get("metrics") or {})
    if stored:
        print(format_against_stored(stored, res["n"]))
        res["stored"] = {k: a for k, (a, _) in stored.items()}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        # each image's result as 0/1 in test order, so that `compare --reuse` can pair other models with it
        Path(args.out).write_text(json.dumps({**res, "correct": {m: correct_bits(v) for m, v in correct.items()}},
                                             indent=2))
        log.info("wrote %s", args.out)
    if args.store:
        from ..export import store_metrics

        store_metrics(folder, res, attacks, dataset=str(dataset))
        log.info("stored the metrics in %s", folder / "config.json")
    return 0


# ------------------------------------------------------------------------------- compare
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="two or more checkpoints on the same test images, compared pairwise")
    p.add_argument("--checkpoints", required=True,
                   help="comma list of shipped names, local folders or Hub ids; the others are compared with the first")
    p.add_argument("--dataset", default=None, help="default: the dataset the checkpoints name")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=count, default=None, help="number of test images, the first n (default: all)")
    p.add_argument("--attacks", default="pgd20", help="comma list, as for eval (default pgd20)")
    p.add_argument("--eps", default=None, help="default 8/255")
    p.add_argument("--batch-size", type=count, default=None, help="as for eval: 256, or 64 for AutoAttack-family "
                   "attacks on a CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the accuracies, the comparisons and each image's "
                   "result (a string of 0/1 per model and measure) as JSON")
    p.add_argument("--reuse", action="append", default=[], metavar="FILE",
                   help="an earlier --out file of compare or eval (repeatable): the checkpoints it measured are "
                   "taken from it, not measured again, when it holds the same test images, ε and measures")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_compare)


def _reused(files: list[str], names: list[str]) -> dict[str, tuple[str, dict, dict]]:
    """The checkpoints of `names` that earlier `compare --out` or `eval --out` files measured:
    {name: (file, the file's settings, its result with per-image results as lists of bools)}, the
    first file that has a name winning. Only what compare measures itself pairs with it (L∞, the
    default step, fp32): a file measured otherwise is refused."""
    from pathlib import Path

    from ..results import from_bits

    found: dict[str, tuple[str, dict, dict]] = {}
    for f in files:
        try:
            saved = json.loads(Path(f).read_text())
            # compare --out: {"results": {name: result}}; eval --out: one result, naming its checkpoint
            results = saved["results"] if "results" in saved else {saved["checkpoint"]: saved}
            meta = {k: saved[k] for k in ("dataset", "n", "eps")}
            meta["images"] = saved.get("images")  # the images' fingerprint (files from before it have none)
            if any("correct" not in r for r in results.values()):  # eval files from before they were kept
                raise KeyError("correct")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WeatError(f"--reuse {f}: not a file that `compare --out` or `eval --out` wrote with per-image "
                            f"results ({e!r})") from None
        if saved.get("norm", "linf") != "linf" or saved.get("alpha") is not None or saved.get("amp"):
            raise WeatError(f"--reuse {f}: measured with --norm, --alpha or --amp, which compare does not use")
        for name in names:
            if name in results and name not in found:
                r = results[name]
                found[name] = (f, meta, {**r, "correct": {m: from_bits(v) for m, v in r["correct"].items()}})
    return found


def _cmd_compare(args) -> int:
    from pathlib import Path

    from ..checkpoints import load
    from ..data import load_split
    from ..evaluate import evaluate, parse_radius
    from ..results import compare_results, correct_bits
    from ..lens._common import prepare

    names = list(dict.fromkeys(c.strip() for c in args.checkpoints.split(",") if c.strip()))
    if len(names) < 2:
        raise WeatError("--checkpoints takes two or more checkpoints, comma-separated; the first is the reference")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip() and a.strip() != "clean"]
    eps = parse_radius(args.eps) if args.eps else 8 / 255
    check_attacks(attacks, eps)
    device = pick_device(args.device)
    reused = _reused(args.reuse, names)
    # every checkpoint to measure is loaded before any work
    models = {name: prepare(load(name, device=device)) for name in names if name not in reused}
    named = {m.config.get("dataset") for m in models.values()} | {meta["dataset"] for _, meta, _ in reused.values()}
    if args.dataset is None and len(named) != 1:
        raise WeatError(f"the checkpoints name different datasets ({', '.join(sorted(map(str, named)))}); "
                        "pass --dataset to compare them on one")
    dataset = args.dataset or named.pop()
    if not dataset:
        raise WeatError("the checkpoints do not name their dataset; pass --dataset")
    test = load_split(dataset, "test", root=args.data_dir, limit=args.n)
    measures = ["clean", *attacks]
    digest = test.digest()
    for name, (f, meta, r) in reused.items():
        # the same images: by their fingerprint where the file has one (the same copy may lie at another
        # path on another machine, or be a subset archive of the first images), else by the dataset named
        same = meta["images"] == digest if meta["images"] else str(meta["dataset"]) == str(dataset)
        if not same or meta["n"] != len(test) or abs(meta["eps"] - eps) > 1e-9 \
                or not set(measures) <= set(r["correct"]):
            raise WeatError(f"--reuse {f} measured {name} on {meta['n']:,} images of {meta['dataset']} at "
                            f"ε = {meta['eps'] * 255:g}/255 with {', '.join(r['correct'])}; this comparison is on "
                            f"{len(test):,} images of {dataset} at ε = {eps * 255:g}/255 with {', '.join(measures)}"
                            + (f"; its images' fingerprint is {meta['images']}, these are {digest} (other images, or "
                               "another order: without --n the test split comes in file order, with --n in the "
                               "class-balanced order)" if meta["images"] and meta["images"] != digest else "")
                            + ". Match those (--n, --dataset, --eps, --attacks) or leave the file out to measure it "
                            "again")
    results = {}
    for name in names:
        if name in reused:
            log.info("%s: from %s", name, reused[name][0])
            r = reused[name][2]
            results[name] = {**r, "correct": {m: r["correct"][m] for m in measures}}
            continue
        log.info("%s: %s on %d images", name, ", ".join(measures), len(test))
        results[name] = evaluate(models[name], test.float(), test.y, attacks, eps=eps,
                                 batch_size=_batch_size(args.batch_size, device, attacks),
                                 seed=args.seed, progress=not args.quiet, per_image=True)
    rows = compare_results(results, names[0])
    print(compare_text(results, rows, names[0]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        # each image's result as a string of 0/1 (test order), so later models can be paired with these
        as_bits = lambda r: {**r, "correct": {m: correct_bits(v) for m, v in r["correct"].items()}}  # noqa: E731
        Path(args.out).write_text(json.dumps({"checkpoints": names, "dataset": str(dataset), "images": digest,
                                              "n": len(test),
                                              "eps": eps, "seed": args.seed,
                                              "results": {k: as_bits(v) for k, v in results.items()},
                                              "comparisons": rows}, indent=2))
        log.info("wrote %s", args.out)
    return 0


def compare_text(results: dict, rows: list[dict], reference: str) -> str:
    """`compare`'s table: every model's accuracy per measure, and each one's difference from the
    reference with two paired standard errors and the images only one of the two gets right."""
    from ..evaluate import per_255

    width = max(len(k) for k in results)
    head = f"{'measure':10s} {'checkpoint':{width}s} {'accuracy':>9s} {'vs reference':>13s} {'± 2 SE':>8s} " \
           f"{'right only: ref / this':>23s}  verdict"
    lines = [head, "-" * len(head)]
    measures = list(results[reference]["correct"])
    for measure in measures:
        ref_acc = results[reference]["clean_acc" if measure == "clean" else f"{measure}_acc"]
        lines.append(f"{measure:10s} {reference:{width}s} {ref_acc:9.2%} {'(reference)':>13s}")
        for r in (r for r in rows if r["measure"] == measure):
            lines.append(f"{'':10s} {r['model']:{width}s} {r['acc_b']:9.2%} {100 * r['diff']:+10.2f} pts "
                         f"{200 * r['se']:8.2f} {r['only_a']:>11,} / {r['only_b']:<11,}  {r['verdict']}")
    n = results[reference]["n"]
    eps = per_255(results[reference]["eps"])
    lines.append(f"(n = {n:,} test images, the same for every checkpoint; L∞ ε = {eps}; "
                 "ahead / behind: beyond two standard errors of the paired difference)")
    return "\n".join(lines)
