#!/usr/bin/env bash
# Train and ship the GPU checkpoints: for each method, `train --minutes` (as many epochs as fit
# the budget), then `export` (PGD-20 and targeted PGD-20 on the whole test split, AutoAttack on
# the first AA_N images, fp16 weights in shards of at most 15 MB, model card). One method fits
# one 10-minute command with the defaults below. Every setting can be overridden from the environment:
#
#   bash scripts/gpu_models.sh                       # weat-adv, trades and sat on preactresnet18
#   DATA=.data/cifar10-jpeg.tar.gz bash scripts/gpu_models.sh weat-adv
#   ARCH=weatnet_tiny DEVICE=cpu MINUTES=0.2 TRAIN_EXTRA="--limit 256 --eval-size 64" \
#     EXPORT_EXTRA="--n 100" AA_N=0 DEST=/tmp/ck bash scripts/gpu_models.sh sat   # a CPU smoke run
set -euo pipefail

DATA=${DATA:-cifar10}              # a dataset name, or a class-folder copy / .tar.gz of CIFAR-10
ARCH=${ARCH:-preactresnet18}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-7}              # training budget per model; export and AutoAttack come on top
EPOCHS=${EPOCHS:-}                 # a fixed epoch count instead (e.g. another method with the exact settings
                                   # of a shipped run); MINUTES then only bounds an eager retry (below)
BATCH=${BATCH:-512}
LR=${LR:-0.2}
SEED=${SEED:-0}
AA_N=${AA_N:-1000}
RUNS=${RUNS:-runs}
DEST=${DEST:-}                     # export folder (default: the repo's checkpoints/)
TRAIN_EXTRA=${TRAIN_EXTRA:-}
RESUME=${RESUME:-0}                # 1: a run folder that already holds epochs (a call stopped at the device tool's
                                   # limit, its RUNS kept on the warm machine) is continued with --resume
EXPORT_EXTRA=${EXPORT_EXTRA:-}

methods=("$@")
[ ${#methods[@]} -eq 0 ] && methods=(weat-adv trades sat)
name_opts=()
case "$DATA" in cifar10|cifar100|svhn|tinyimagenet) ;; *) name_opts=(--dataset-name cifar10) ;; esac
dest_opts=()
[ -n "$DEST" ] && dest_opts=(--dest "$DEST")

train() {  # method, run folder, length (--epochs N or --minutes M), extra options
  local again=()
  if [ "$RESUME" = 1 ] && [ -f "$2/LATEST" ]; then
    again=(--resume)
    echo "== $1: continuing the run in $2 from its $(cat "$2/LATEST")"
  fi
  # shellcheck disable=SC2086  # the length and the extra options are meant to split into words
  python -m weat_core train --method "$1" --arch "$ARCH" --dataset "$DATA" --device "$DEVICE" \
    $3 --batch-size "$BATCH" --lr "$LR" --seed "$SEED" --out "$2" --quiet "${again[@]}" $4
}

for m in "${methods[@]}"; do
  if [ -n "$EPOCHS" ]; then
    run="$RUNS/$ARCH-$m-${EPOCHS}ep" length="--epochs $EPOCHS"
    echo "== $m: training for $EPOCHS epochs into $run"
  else
    run="$RUNS/$ARCH-$m-${MINUTES}min" length="--minutes $MINUTES"
    echo "== $m: training for $MINUTES min into $run"
  fi
  t_run=$(date +%s)
  if ! train "$m" "$run" "$length" "$TRAIN_EXTRA"; then
    # A compiled run that fails (a compiler error on a machine where no whole compiled run has been
    # tried) goes on eagerly in the rest of its budget, rather than losing the session's device time.
    eager=$(echo " $TRAIN_EXTRA " | sed -E 's/ --compile-mode +[^ ]+ / /g; s/ --compile / /g')
    left=$(python -c "print(round($MINUTES - ($(date +%s) - $t_run) / 60 - 0.1, 2))")
    if [ "$eager" = " $TRAIN_EXTRA " ] || [ "$(python -c "print(int($left < 0.1))")" = 1 ]; then
      echo "== $m: training failed"; exit 1
    fi
    run="$run-eager"
    echo "== $m: the compiled run failed; training without torch.compile for the $left min left, into $run"
    train "$m" "$run" "--minutes $left" "$eager"
  fi
  echo "== $m: exporting $ARCH-$m"
  # shellcheck disable=SC2086
  python -m weat_core export --run "$run" --name "$ARCH-$m" --dataset "$DATA" --device "$DEVICE" \
    --aa-n "$AA_N" --max-shard-size 15MB "${name_opts[@]}" "${dest_opts[@]}" $EXPORT_EXTRA
done
