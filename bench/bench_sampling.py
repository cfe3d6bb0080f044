"""Speed of SGLD generation (weat_core.sampling.generate).

    python bench/bench_sampling.py            # CPU: weatnet_s, 16 images × 100 steps (target ≤ 10 s on 2 cores)
    python bench/bench_sampling.py --repeats 5

Prints image·steps per second and wall seconds. On CPU it also times the run without
channels_last (generate's CPU default) to show what that layout buys. On CUDA (when present)
it times preactresnet18 with 100 images × 100 steps; otherwise it says it skipped that.
Timing does not depend on the weights, so freshly initialised models are used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weat_core.models import DEFAULT_CPU_ARCH, create_model  # noqa: E402
from weat_core.sampling import generate  # noqa: E402


def _time(model, n: int, steps: int, repeats: int, **kw) -> list[float]:
    labels = torch.arange(n) % model.num_classes
    generate(model, labels, steps=3, init="uniform", seed=0, **kw)  # warm-up: oneDNN / cuDNN plans
    cuda = next(model.parameters()).is_cuda
    out = []
    for r in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        generate(model, labels, steps=steps, init="uniform", seed=r, **kw)
        if cuda:
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def _report(name: str, n: int, steps: int, secs: list[float], grads_per_step: int = 1) -> None:
    best, med = min(secs), statistics.median(secs)
    print(f"{name:44s} {n:4d} img × {steps} steps: {med:6.2f} s median, {best:6.2f} s best "
          f"→ {n * steps / med:8.0f} img·steps/s ({grads_per_step} gradient{'s' if grads_per_step > 1 else ''}/step)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip-baseline", action="store_true", help="do not time the CPU run without channels_last")
    p.add_argument("--cuda-only", action="store_true", help="only the CUDA timing (preactresnet18, 100 × 100)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if not args.cuda_only:
        model = create_model(DEFAULT_CPU_ARCH).eval()
        n, steps = 16, 100
        secs = _time(model, n, steps, args.repeats)
        _report(f"cpu  {DEFAULT_CPU_ARCH} SGLD (channels_last)", n, steps, secs)
        verdict = "meets" if statistics.median(secs) <= 10 else "MISSES"
        print(f"     target ≤ 10 s for 16 × 100: {verdict} it")
        secs = _time(model, n, steps, args.repeats, sampler="heun")
        _report(f"cpu  {DEFAULT_CPU_ARCH} Heun (channels_last)", n, steps, secs, 2)
        if not args.skip_baseline:
            secs = _time(model, n, steps, args.repeats, channels_last=False)
            _report(f"cpu  {DEFAULT_CPU_ARCH} SGLD (contiguous NCHW)", n, steps, secs)

    if torch.cuda.is_available():
        gm = create_model("preactresnet18").eval().to("cuda")
        secs = _time(gm, 100, 100, args.repeats)
        _report(f"cuda preactresnet18 SGLD ({torch.cuda.get_device_name()})", 100, 100, secs)
        verdict = "meets" if statistics.median(secs) <= 2 else "MISSES"
        print(f"     target ≤ 2 s for 100 × 100 on an H100: {verdict} it on this GPU")
        secs = _time(gm, 100, 100, args.repeats, sampler="heun")
        _report(f"cuda preactresnet18 Heun ({torch.cuda.get_device_name()})", 100, 100, secs, 2)
    else:
        print("cuda preactresnet18 100 × 100: skipped (no CUDA GPU on this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
