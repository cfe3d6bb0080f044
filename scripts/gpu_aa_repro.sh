#!/usr/bin/env bash
# AutoAttack measured again, on a GPU, for shipped checkpoints whose stored AutoAttack number was
# measured once: issue 4 asks that `eval` reproduce every stored metric within ±1 point (AutoAttack on
# at least 1,000 test images), and a CPU needs about 12 hours for 1,000 images of one PreActResNet-18
# (docs/models.md), a GPU 2-3 minutes. Still measured once (2026-12-07): `preactresnet18-trades`
# (45.0 %, 189 s on an H100), `preactresnet18-sat` (41.8 %, 140 s on an H200) and
# `preactresnet18-weat-adv-100ep` (45.4 %, 171 s on an H200).
#
# Only two PreActResNet-18 (22 MB each) fit in one call's 64 MiB, and only beside 1,000 test images
# rather than the whole CIFAR-10 copy. Here, once:
#   mkdir -p .data && python scripts/subset_archive.py ../shared/data/cifar10-jpeg.tar.gz .data/cifar10-test1000.tar.gz
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl torchattacks==3.5.1        # the device image has no torchattacks
#   bash scripts/device_carry.sh only preactresnet18-trades preactresnet18-sat   # says how many MiB it sends
# On the device (run: carry [".data", ".whl"], timeout_s 600; about 6 minutes for the two):
#   bash scripts/gpu_aa_repro.sh preactresnet18-trades preactresnet18-sat
# Then, for the third, in a second call on the warm machine:
#   bash scripts/device_carry.sh only preactresnet18-weat-adv-100ep
#   bash scripts/gpu_aa_repro.sh preactresnet18-weat-adv-100ep           # (on the device)
#   bash scripts/device_carry.sh restore                                  # (here, before any commit)
# A session's device time is now 15 minutes, the machine's start-up included: the two calls (about 9
# minutes of work) fit, with no third try; a start that takes long leaves the third model to a later session.
#
# What comes back: session.log, which ends with each model's stored and measured AutoAttack accuracy,
# and aa-NAME.json per model (each image's result, for `compare --reuse`), or aa-NAME.json.partial where
# the time ran out: `eval ... --out aa-NAME.json --resume` goes on from it (use the same --dataset and
# --batch-size 256). Keep them in bench/results.
#
# A CPU smoke run (a few images, a small model; seconds):
#   OUT=/tmp/aa-smoke DEVICE=cpu AA_N=4 bash scripts/gpu_aa_repro.sh weatnet_s-sat
set -uo pipefail

OUT=${OUT:-out/aa-repro}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.data/cifar10-test1000.tar.gz}
AA_N=${AA_N:-1000}
END_S=${END_S:-580}  # the device tool stops a command at 600 s; a model is not started with under 30 s left
[ $# -gt 0 ] || { echo "usage: bash scripts/gpu_aa_repro.sh CHECKPOINT [CHECKPOINT ...]" >&2; exit 2; }

# shellcheck source=scripts/gpu_common.sh
source "$(dirname "$0")/gpu_common.sh"

stage "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "(no nvidia-smi)"
python3 -c "import torch, torchattacks, weat_core; print('torch', torch.__version__, '| torchattacks', \
torchattacks.__version__, '| cuda', torch.cuda.is_available())" \
  || { stage "the environment lacks a package; stopping"; exit 1; }
[ -f "$DATA" ] || [ -d "$DATA" ] || { stage "no dataset at $DATA (make it with scripts/subset_archive.py, carry .data)"; exit 1; }

for name in "$@"; do
  left=$(( END_S - ($(date +%s) - t0) ))
  if [ "$left" -lt 30 ]; then
    stage "$name: skipped, $left s left"
    continue
  fi
  stage "AutoAttack on $name, the first $AA_N test images (at most $left s)"
  timeout "$left" python3 -m weat_core eval --checkpoint "$name" --dataset "$DATA" --attacks aa --n "$AA_N" \
    --batch-size 256 --device "$DEVICE" --out "$OUT/aa-$name.json" \
    || stage "$name: AutoAttack did not finish; its progress is in aa-$name.json.partial"
done

stage "stored against measured"
python3 - "$OUT" "$@" <<'EOF'
import json, sys
from pathlib import Path

from weat_core.checkpoints import list_checkpoints

out = Path(sys.argv[1])
print(f"{'checkpoint':<34} {'stored AA':>10} {'on':>6} {'measured AA':>12} {'on':>6} {'difference':>11}")
shipped = {c.name: c.metrics for c in list_checkpoints()}
for name in sys.argv[2:]:
    m = shipped.get(name, {})
    f = out / f"aa-{name}.json"
    got = json.loads(f.read_text()) if f.is_file() else None
    stored = f"{100 * m['aa_acc']:.2f} %" if "aa_acc" in m else "none"
    measured = f"{100 * got['aa_acc']:.2f} %" if got else "not done"
    diff = f"{100 * (got['aa_acc'] - m['aa_acc']):+.2f}" if got and "aa_acc" in m else ""
    print(f"{name:<34} {stored:>10} {m.get('aa_n', ''):>6} {measured:>12} {got['n'] if got else '':>6} {diff:>11}")
EOF
stage "done"
sleep 1  # let tee write the last lines of session.log before the command returns
