#!/usr/bin/env bash
# AutoAttack on the first 1,000 test images of a PreActResNet-18, measured again on our 2-core CPU,
# where it takes about 12 hours a model: longer than a session, so it goes on from session to
# session. Progress is saved after every batch of 32 in RESULTS/cpu-DATE-eval-NAME-aa-1k.json.partial
# (committed at the end of a session, so that a session on a fresh machine goes on from it); this
# script resumes that file where it exists and starts one dated today where it does not. On a GPU,
# scripts/gpu_aa_repro.sh does the same in minutes.
#
#   bash scripts/cpu_aa_resume.sh NAME            # one thread: run two side by side, one per core
#   nohup bash scripts/cpu_aa_resume.sh preactresnet18-trades > /tmp/aa-trades.log 2>&1 &
#
# To end a job without losing the batch under way (about half an hour of work):
#   pkill -INT -f 'weat_core eval --checkpoint preactresnet18-trades'
# `eval --out` then finishes and saves that batch, and stops (a second SIGINT stops at once).
#
# Environment: RESULTS (default bench/results), DATA (default ../shared/data/cifar10-jpeg.tar.gz),
# AA_N (default 1000). The finished JSON holds each image's result (`compare --reuse`).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bash scripts/cpu_aa_resume.sh CHECKPOINT" >&2; exit 2; }
name=$1
RESULTS=${RESULTS:-bench/results}
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
AA_N=${AA_N:-1000}
k=$(( AA_N / 1000 ))
size=$([ "$k" -ge 1 ] && [ $(( AA_N % 1000 )) -eq 0 ] && echo "${k}k" || echo "$AA_N")
partial=$(ls "$RESULTS"/cpu-*-eval-"$name"-aa-"$size".json.partial 2>/dev/null | head -n 1 || true)
if [ -n "$partial" ]; then
  out=${partial%.partial}
  echo "== $name: going on from $partial ($(date -u +%FT%TZ))"
  resume=(--resume)
else
  out="$RESULTS/cpu-$(date -u +%F)-eval-$name-aa-$size.json"
  [ ! -e "$out" ] || { echo "$out exists: the measurement is done" >&2; exit 0; }
  echo "== $name: starting $out ($(date -u +%FT%TZ))"
  resume=()
fi
python -m weat_core eval --checkpoint "$name" --dataset "$DATA" --attacks aa --n "$AA_N" --batch-size 32 \
  --threads 1 --out "$out" "${resume[@]}"
echo "== $name: done ($(date -u +%FT%TZ)): $out"
