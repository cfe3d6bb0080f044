"""Times the command line's start: each command in a fresh Python process, from launch to exit.

    python bench/bench_cli.py [--repeat 5] [--json out.json]

`--help` and `list` read no weights, so they should not wait for torch (about 2 s to import here)
or timm (another 1.5–3 s with torchvision and torch._dynamo); `list --archs` builds the model
registry and so imports torch, though no longer timm (our architectures join timm's registry
only when timm is imported), which makes it the yardstick of a command that builds models.
Prints the median of --repeat runs after one warm-up run (which fills the OS file cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

COMMANDS = [["--help"], ["train", "--help"], ["generate", "--help"], ["list"], ["list", "--archs"]]


def _time(argv: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "weat_core", *argv]
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        if i:  # the first run only warms the file cache
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    rows = {}
    print(f"{'command':42s} {'seconds':>8s}")
    for argv in COMMANDS:
        name = "python -m weat_core " + " ".join(argv)
        rows[name] = _time(argv, args.repeat)
        print(f"{name:42s} {rows[name]:8.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
