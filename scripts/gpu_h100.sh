#!/usr/bin/env bash
# One command for a lent H100 (or any CUDA GPU) inside the device tool's 10-minute limit, for a
# session that has one machine start to spend: the numbers that must come from that card first,
# then the robust-overfitting runs in the time left.
#   1. SGLD: 100 images x 100 steps of PreActResNet-18 (issue: <= 2 s on an H100)
#   2. training and attack img/s at batch 512, eager (the README's GPU table)
#   3. WEAT-adv training img/s at batch 1024 through torch.compile, default mode and
#      reduce-overhead (CUDA graphs): `train --compile-mode`
#   4. scripts/gpu_overfit.sh with the three runs side by side (PARALLEL=1), EPOCHS each
# Every stage has its own time limit, so one that hangs or compiles slowly cannot eat the rest.
#
# Here, once per machine (.data and .whl are ignored; see scripts/gpu_session.sh):
#   mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/   (and the torchattacks wheel in .whl)
# On the device (run: carry [".data", ".whl"], timeout_s 600):
#   bash scripts/gpu_h100.sh
# Then here: tar -xzf FILES_AT/runs.tar.gz -C checkpoints/_runs
# What comes back: session.log (every stage), heldout.json, runs.tar.gz.
#
# A CPU smoke run: DEVICE=cpu EPOCHS=1 ARCH=weatnet_tiny LIMIT=128 EVAL=32 HELDOUT_N=32 BATCH=32 \
#   BENCH_ARGS="--archs weatnet_tiny --batch-size 32 --steps 1" OUT=/tmp/h100-smoke \
#   DATA=../shared/data/cifar10-jpeg.tar.gz bash scripts/gpu_h100.sh
set -uo pipefail

OUT=${OUT:-out/gpu-h100}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.data/cifar10-jpeg.tar.gz}
MINUTES=${MINUTES:-4.2}  # per overfitting run when EPOCHS is empty: the stages before take about 2 min
EPOCHS=${EPOCHS-46}      # measured on an H100 with three runs side by side, 5,000 images, batch 128: 4.5
                         # (SAT), 4.7 (TRADES) and 5.1 s (WEAT-adv) an epoch, 12 s to start; 46 fit TRAIN_LIMIT_S
TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-270}
BENCH_ARGS=${BENCH_ARGS:---archs preactresnet18}
LIMIT=${LIMIT:-5000}     # 2,000 images for 2.7 min gave about 600 SGD steps and no signal either way;
EVAL=${EVAL:-256}        # 5,000 for 4.2 min about 2,000 (bench/results/h100-2026-11-26-command*.log)
export OUT DEVICE DATA MINUTES EPOCHS TRAIN_LIMIT_S LIMIT EVAL

# shellcheck source=scripts/gpu_common.sh
source "$(dirname "$0")/gpu_common.sh"
stage "environment"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "(no nvidia-smi)"
python3 -c "import torch, torchattacks; print('torch', torch.__version__, 'torchattacks', torchattacks.__version__)" \
  || { stage "the environment lacks a package; stopping"; exit 1; }

if [ "$DEVICE" = cuda ]; then
  stage "SGLD on preactresnet18, 100 images x 100 steps (at most 40 s)"
  timeout 40 python3 bench/bench_sampling.py --cuda-only || stage "the sampling benchmark stopped early; going on"
fi
stage "training and attack img/s, batch 512, eager (at most 50 s)"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout 50 python3 bench/bench_train.py --device "$DEVICE" --methods weat-adv,sat,trades $BENCH_ARGS \
  || stage "the benchmark stopped early; going on"
for mode in ${COMPILE_MODES:-default reduce-overhead}; do
  stage "WEAT-adv training img/s, batch 1024, torch.compile mode $mode (at most 75 s, compilation included)"
  # shellcheck disable=SC2086
  timeout 75 python3 bench/bench_train.py --device "$DEVICE" --methods weat-adv --batch-size 1024 \
    --compile-mode "$mode" --no-attacks $BENCH_ARGS || stage "the compiled benchmark ($mode) stopped early; going on"
done

stage "robust overfitting: SAT, TRADES and WEAT-adv side by side"
PARALLEL=1 bash "$(dirname "$0")/gpu_overfit.sh"
stage "all done"
