"""Observation 3 image by image: how much E(x) changes on the plane through each test image and
its untargeted and targeted PGD images (the attack explorer's "energy around this image"), per
shipped checkpoint, next to its stored PGD-20 accuracy and |ΔE|. Prints a table; `--out` writes
every image's spread as JSON.

    PYTHONPATH=. python scripts/plane_spread.py --dataset ../shared/data/cifar10-jpeg.tar.gz --n 256

docs/models.md ("Observation 3 on the attack plane") has the numbers this gave.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from weat_core import lens
from weat_core.checkpoints import list_checkpoints, load
from weat_core.data import load_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default=None, help="comma list (default: every shipped checkpoint)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--n", type=int, default=256, help="test images (the first n of the class-balanced order)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps of both attacks (L∞ 8/255, step 2/255)")
    p.add_argument("--grid", type=int, default=9, help="grid points per side over |u|, |v| ≤ 1")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    infos = {c.name: c for c in list_checkpoints()}
    names = args.checkpoints.split(",") if args.checkpoints else list(infos)
    test = load_split(args.dataset, "test", limit=args.n)
    rows = {}
    print(f"{'checkpoint':28s} {'spread mean':>11s} {'median':>7s} {'PGD-20':>7s} {'|ΔE|':>6s} {'s':>6s}", flush=True)
    for name in names:
        model, t0 = lens.prepare(load(name)), time.time()
        sp = lens.plane_spreads(model, test.float(), test.y, steps=args.steps, n=args.grid)
        m = infos[name].metrics if name in infos else {}
        gap = (m.get("delta_e") or {}).get("pgd20")
        rows[name] = {"mean": float(sp.mean()), "median": float(np.median(sp)), "se": float(sp.std(ddof=1) / len(sp) ** 0.5),
                      "pgd20_acc": m.get("pgd20_acc"), "abs_delta_e": abs(gap) if gap is not None else None,
                      "seconds": time.time() - t0, "spreads": [round(float(v), 5) for v in sp]}
        r = rows[name]
        print(f"{name:28s} {r['mean']:11.3f} {r['median']:7.3f} {100 * (r['pgd20_acc'] or 0):7.2f} "
              f"{r['abs_delta_e'] or 0:6.3f} {r['seconds']:6.0f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"dataset": args.dataset, "n": len(test), "steps": args.steps, "grid": args.grid, "eps": "8/255",
                       "models": rows}, f, indent=1)


if __name__ == "__main__":
    main()
