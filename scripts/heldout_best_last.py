"""Robust overfitting, measured away from the per-epoch subset: a training run's best epoch
(BEST, chosen on the run's per-epoch test subset) and last epoch (LATEST), evaluated on test
images the run never looked at (the class-balanced order after its per-epoch subset) and on the
run's own training images. Prints one JSON line per checkpoint.

    PYTHONPATH=. python scripts/heldout_best_last.py runs/of-sat runs/of-trades --dataset ../shared/data/cifar10-jpeg.tar.gz

The README's held-out table for the recorded 1k-image runs came from this (2,000 images, PGD-20).
`python -m weat_core export --log-only --run RUN --name NAME --heldout FILE` (FILE from `--out`)
stores a run's two rows in its recorded folder's config.json; its card and the app's training
page then show them next to the per-epoch subset's curve.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from weat_core.checkpoints import load
from weat_core.data import load_split
from weat_core.evaluate import evaluate
from weat_core.results import correct_bits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="training run folders (holding BEST and LATEST)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--n", type=int, default=2000, help="held-out test images")
    p.add_argument("--attack", default="pgd20")
    p.add_argument("--out", default=None, help="also write all results as one JSON file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (a GPU when there is one)")
    p.add_argument("--amp", action="store_true", help="attacks under bf16 autocast (about twice as fast for "
                   "PreActResNet-18 on a bf16 CPU); accuracy and energies still from fp32 forwards")
    args = p.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    results = {}
    for run in map(Path, args.runs):
        cfg = json.loads((run / (run / "LATEST").read_text().strip() / "config.json").read_text())["training"]
        skip = cfg["eval_size"]  # the per-epoch test subset: the first eval_size of the balanced order
        test = load_split(args.dataset, "test", limit=skip + args.n)
        train = load_split(args.dataset, "train", limit=cfg.get("limit"))
        for pointer in ("BEST", "LATEST"):
            ck = run / (run / pointer).read_text().strip()
            model, t0 = load(ck, device=device), time.time()
            # at the run's own threat model (its ε and step, as its per-epoch subset was measured)
            kw = dict(eps=cfg["eps"], alpha=cfg["alpha"], amp=args.amp)
            held = evaluate(model, test.float()[skip:], test.y[skip:], [args.attack], per_image=True, **kw)
            own = evaluate(model, train.float(), train.y, [args.attack], **kw)
            row = {"test_clean": held["clean_acc"], f"test_{args.attack}": held[f"{args.attack}_acc"],
                   "test_delta_e": held["delta_e"][args.attack], "train_clean": own["clean_acc"],
                   f"train_{args.attack}": own[f"{args.attack}_acc"], "train_delta_e": own["delta_e"][args.attack],
                   "n_test": int(held["n"]), "n_train": int(own["n"]), "s": round(time.time() - t0, 1),
                   "eps": cfg["eps"], "alpha": cfg["alpha"],
                   **({"amp": True} if args.amp else {}),
                   # which held-out images it got right under attack: best and last epoch, same images,
                   # compared pairwise (export.heldout_summary)
                   f"test_{args.attack}_correct": correct_bits(held["correct"][args.attack])}
            results[f"{run.name}:{ck.name}"] = row
            print(f"{run.name}:{ck.name}", json.dumps({k: v for k, v in row.items() if not k.endswith("_correct")}),
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
