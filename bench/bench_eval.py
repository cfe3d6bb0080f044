"""Times `evaluate` (what `python -m weat_core eval` runs) on the CPU: PGD-20 and the clean pass,
with the model as `checkpoints.load` returns it and as the command now runs it (`lens.prepare`:
eval mode, frozen parameters, channels_last memory).

    python bench/bench_eval.py [--checkpoints weatnet_s-weat-adv,preactresnet18-weat-adv]
                               [--n 512] [--threads 2] [--repeat 3] [--json out.json]

The images are uniform noise: PGD-20 takes its 20 steps whatever the images are, so the time
does not depend on them. The two layouts alternate, `--repeat` times each, after one warm-up
of each; the table gives the median in images per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--checkpoints", default="weatnet_s-weat-adv,preactresnet18-weat-adv")
    ap.add_argument("--n", type=int, default=512, help="images per timing (default 512)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from weat_core.checkpoints import load
    from weat_core.evaluate import evaluate
    from weat_core.lens._common import prepare

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for name in [c.strip() for c in args.checkpoints.split(",") if c.strip()]:
        loaded = load(name, device="cpu")
        k = int(loaded(torch.zeros(1, 3, 32, 32)).shape[1])
        x = torch.rand(args.n, 3, 32, 32, generator=g)
        y = torch.randint(0, k, (args.n,), generator=g)
        models = {"as loaded": loaded, "prepared (channels_last)": prepare(loaded)}
        times: dict[str, list[float]] = {tag: [] for tag in models}
        for i in range(args.repeat + 1):
            for tag, m in models.items():
                t0 = time.perf_counter()
                evaluate(m, x, y, ["pgd20"], batch_size=args.batch_size)
                if i:  # the first round warms up (allocations, oneDNN's kernel choice)
                    times[tag].append(time.perf_counter() - t0)
        for tag, ts in times.items():
            rows.append({"checkpoint": name, "model": tag, "n": args.n, "threads": args.threads,
                         "seconds": statistics.median(ts), "img_per_s": args.n / statistics.median(ts)})
    print(f"{'checkpoint':26s} {'model':26s} {'PGD-20 + clean, img/s':>22s}")
    for r in rows:
        print(f"{r['checkpoint']:26s} {r['model']:26s} {r['img_per_s']:22.1f}")
    for name in dict.fromkeys(r["checkpoint"] for r in rows):
        a, b = (r["seconds"] for r in rows if r["checkpoint"] == name)
        print(f"{name}: prepared is {a / b:.2f} times as fast")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
