#!/usr/bin/env bash
# Robust overfitting on a GPU in ONE command inside the device tool's 10-minute limit: SAT, TRADES
# and WEAT-adv on PreActResNet-18, the same step schedule (lr divided by 10 at half and three
# quarters of the run, Rice et al. 2020's shape) on the first LIMIT training images, each for
# MINUTES of wall-clock (`train --minutes` fits whole epochs to it); then each run's best epoch
# (by its per-epoch test subset) and last epoch measured again on held-out test images and on
# its own training images (scripts/heldout_best_last.py), and each run shipped as a recorded
# run (`export --log-only --heldout`: log, settings, card; no weights).
#
# Here, once per machine, as for scripts/gpu_session.sh (.data and .whl are ignored):
#   mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/   (and the torchattacks wheel in .whl)
# On the device (run: carry [".data", ".whl"], timeout_s 600):
#   bash scripts/gpu_overfit.sh
# The recorded runs *-5000-step-long came from one call on an H200 (`bash scripts/device_carry.sh light`
# first; 478 s of command, 515 s of device time with the start; bench/results/h200-2026-11-27-overfit-long.log):
#   PARALLEL=1 METHODS="sat trades weat-adv weat-adv@0.3" LIMIT=5000 BATCH=128 LR=0.1 EVAL=256 HELDOUT_N=4000 \
#     RUN_TAG=-long MINUTES=6 TRAIN_LIMIT_S=430 TRAIN_EXTRA="--compile --compile-mode reduce-overhead" \
#     bash scripts/gpu_overfit.sh
#   Four runs compiled with CUDA graphs trained 1,800-2,200 img/s each (eager, three shared an H100 at
#   1,150-1,290), 81-98 epochs in their 6 minutes; the held-out checks took about 80 s.
# Then here: tar -xzf FILES_AT/runs.tar.gz -C checkpoints/_runs
#
# What comes back: session.log (every stage's output), heldout.json, runs.tar.gz (a recorded-run
# folder per run: config.json, README.md, log.jsonl each).
#
# A CPU smoke run (tiny model, seconds per stage):
#   ARCH=weatnet_tiny DEVICE=cpu MINUTES=0.15 LIMIT=256 EVAL=64 HELDOUT_N=64 BATCH=64 OUT=/tmp/of-smoke \
#     DATA=../shared/data/cifar10-jpeg.tar.gz bash scripts/gpu_overfit.sh
set -uo pipefail

OUT=${OUT:-out/gpu-overfit}
ARCH=${ARCH:-preactresnet18}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.data/cifar10-jpeg.tar.gz}
METHODS=${METHODS:-sat trades weat-adv}  # an entry METHOD@LR trains at its own learning rate (e.g. weat-adv@0.3:
                                          # WEAT's weights average about a third, so that steps like TRADES at 0.1)
RUN_TAG=${RUN_TAG:-}      # appended to the shipped names: ARCH-METHOD-LIMIT-step$RUN_TAG (e.g. -long beside earlier runs)
MINUTES=${MINUTES:-2.2}   # per run: three runs, the held-out checks and the machine's setup fit 10 minutes
LIMIT=${LIMIT:-5000}      # training images: few enough that the model fits them under attack and overfits
BATCH=${BATCH:-128}       # more SGD steps in the budget: on 2 CPU cores, 512 images and 1,120 steps of
                          # batch 32 fitted only 39-50 % of the images under attack (the recorded
                          # preactresnet18-*-512-step runs) and did not clearly overfit
LR=${LR:-0.1}
EVAL=${EVAL:-1000}        # per-epoch subsets (PGD-10): ±3 points at 1,000 images
HELDOUT_N=${HELDOUT_N:-4000}
SEED=${SEED:-0}

# shellcheck source=scripts/gpu_common.sh
source "$(dirname "$0")/gpu_common.sh"
stage "environment"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "(no nvidia-smi)"
[ -f "$DATA" ] || [ -d "$DATA" ] || { stage "no dataset at $DATA (carry .data)"; exit 1; }

runs_dir=$(mktemp -d)   # a warm machine keeps ignored folders: start clean
rec=$(mktemp -d)
ship() {  # $1: run folder, then extra export options; the tarball is rewritten after every run, so
          # a command stopped at the time limit still brings back the runs that finished
  local run=$1 m=${1##*/of-}
  shift
  local note=()
  [ "$PARALLEL" = 1 ] && note=(--note "trained side by side with the other runs of scripts/gpu_overfit.sh (PARALLEL=1) \
on one $DEVICE device: its images/s is its share of it, not what it gives one run alone")
  python3 -m weat_core export --run "$run" --name "$ARCH-$m-${LIMIT}-step$RUN_TAG" --log-only --dataset-name cifar10 \
    --dest "$rec" "${note[@]}" "$@" > "$rec/export-$m.log" 2>&1 || { cat "$rec/export-$m.log"; stage "export of $m failed"; }
  tar -czf "$OUT/runs.tar.gz" -C "$rec/_runs" .
}
PARALLEL=${PARALLEL:-0}   # 1: the runs train side by side, and their held-out checks too (one GPU: a batch
                          # of 128 keeps a single run busy launching kernels, not the GPU computing)
EPOCHS=${EPOCHS:-}        # set: that many epochs instead of MINUTES (`train --minutes` times the machine as it
                          # is: runs started side by side time each other's start-up and can plan too many;
                          # these runs' step schedule re-plans after the first epoch, at that epoch's pace)
budget=(--minutes "$MINUTES")
[ -n "$EPOCHS" ] && budget=(--epochs "$EPOCHS")
TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-$(python3 -c "print(int($MINUTES * 60 * 1.5 + 90))")}  # a stuck run is stopped
run_name() {  # METHOD or METHOD@LR -> the run's folder name: of-METHOD or of-METHOD-lrLR
  case "$1" in *@*) echo "of-${1%@*}-lr${1#*@}" ;; *) echo "of-$1" ;; esac
}
TRAIN_EXTRA=${TRAIN_EXTRA:-}  # more train options, e.g. "--compile --compile-mode reduce-overhead" (CUDA graphs: a batch
                              # of 128 keeps an eager run launching kernels, not computing); a compiled run that
                              # fails before its first epoch trains again without torch.compile in the time it has left
train_one() {  # $1 METHOD or METHOD@LR, $2 run folder; succeeds when the run wrote a checkpoint (a run stopped
               # by the time limit ships the epochs it finished)
  local method=${1%@*} lr=$LR t_start rc left eager
  [[ "$1" == *@* ]] && lr=${1#*@}
  train() {  # $1 time limit (s), then the length and the extra options
    local limit=$1
    shift
    timeout "$limit" python3 -m weat_core train --method "$method" --arch "$ARCH" --dataset "$DATA" --device "$DEVICE" \
      --batch-size "$BATCH" --lr "$lr" --schedule step --limit "$LIMIT" --eval-size "$EVAL" --eval-steps 10 \
      --seed "$SEED" --out "$run" --quiet "$@"
  }
  local run=$2
  t_start=$(date +%s)
  # shellcheck disable=SC2086  # TRAIN_EXTRA is meant to split into words
  train "$TRAIN_LIMIT_S" "${budget[@]}" $TRAIN_EXTRA
  rc=$?
  left=$(( TRAIN_LIMIT_S - ($(date +%s) - t_start) ))
  eager=$(echo " $TRAIN_EXTRA " | sed -E 's/ --compile-mode +[^ ]+ / /g; s/ --compile / /g')  # as gpu_models.sh does
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ ! -f "$run/LATEST" ] && [ "$eager" != " $TRAIN_EXTRA " ] && [ $left -gt 60 ]; then
    echo "the compiled run failed before its first epoch (above); training without torch.compile for the $left s left"
    rm -rf "$run"
    local again=(--minutes "$(python3 -c "print(round(($left - 45) / 60 / 1.05, 2))")")
    [ -n "$EPOCHS" ] && again=(--epochs "$EPOCHS")
    # shellcheck disable=SC2086
    train "$left" "${again[@]}" $eager
    rc=$?
  fi
  [ $rc -eq 124 ] && echo "stopped after $TRAIN_LIMIT_S s (TRAIN_LIMIT_S); the finished epochs ship"
  [ -f "$run/LATEST" ]
}
done_runs=()
finish() {  # $1 method, $2 run folder, $3 train_one's status
  if [ "$3" -eq 0 ]; then done_runs+=("$2"); ship "$2"; else stage "$1 failed (above); going on"; fi
}
if [ "$PARALLEL" = 1 ]; then
  pids=()
  for m in $METHODS; do
    stage "training $m on $ARCH, $LIMIT images, step schedule, ${budget[*]} (side by side)"
    train_one "$m" "$runs_dir/$(run_name "$m")" > "$runs_dir/train-$m.log" 2>&1 &
    pids+=($!)
  done
  i=0
  for m in $METHODS; do
    wait "${pids[$i]}"; st=$?
    stage "$m finished"; cat "$runs_dir/train-$m.log"
    finish "$m" "$runs_dir/$(run_name "$m")" $st
    i=$((i + 1))
  done
else
  for m in $METHODS; do
    stage "training $m on $ARCH, $LIMIT images, step schedule, ${budget[*]}"
    train_one "$m" "$runs_dir/$(run_name "$m")"; finish "$m" "$runs_dir/$(run_name "$m")" $?
  done
fi
[ ${#done_runs[@]} -gt 0 ] || { stage "no run finished"; exit 1; }

stage "held-out check: best and last epoch on $HELDOUT_N test images after the per-epoch subset"
heldout_one() {  # $1 run folder → $runs_dir/heldout-RUN.json
  python3 scripts/heldout_best_last.py "$1" --dataset "$DATA" --n "$HELDOUT_N" --device "$DEVICE" \
    --out "$runs_dir/heldout-${1##*/}.json"
}
ok=1
if [ "$PARALLEL" = 1 ]; then
  pids=()
  for run in "${done_runs[@]}"; do heldout_one "$run" > "$runs_dir/heldout-${run##*/}.log" 2>&1 & pids+=($!); done
  for i in "${!done_runs[@]}"; do
    wait "${pids[$i]}" || ok=0
    cat "$runs_dir/heldout-${done_runs[$i]##*/}.log"
  done
else
  for run in "${done_runs[@]}"; do heldout_one "$run" || ok=0; done
fi
python3 - "$OUT/heldout.json" "$runs_dir"/heldout-*.json <<'PY' || ok=0
import json, sys
rows = {}
for f in sys.argv[2:]:
    rows.update(json.load(open(f)))
json.dump(rows, open(sys.argv[1], "w"), indent=1)
PY
if [ $ok = 1 ]; then
  for run in "${done_runs[@]}"; do
    ship "$run" --heldout "$OUT/heldout.json" --heldout-run "${run##*/}"
    grep -E "robust accuracy|held-out" "$rec/_runs/$ARCH-${run##*/of-}-${LIMIT}-step$RUN_TAG/README.md"
  done
else
  stage "a held-out check failed (above); the runs ship without it"
fi
stage "done"
sleep 1
