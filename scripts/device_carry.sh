#!/usr/bin/env bash
# What a device-tool call sends to the GPU machine is capped at 64 MiB: the tracked files, the
# untracked files git does not ignore, and the ignored paths named in `carry` (.data: the CIFAR-10
# tarball, 19.6 MB; .whl: torchattacks, 0.15 MB). The shipped PreActResNet-18 weights (fp16, about
# 22 MB per model) are not needed there, and with a second one shipped the total passes 64 MiB.
#
#   bash scripts/device_carry.sh            # how many MiB a call carrying .data and .whl sends
#   bash scripts/device_carry.sh light      # leave those weights out: untracked and ignored, files kept
#   ... the device calls ...
#   bash scripts/device_carry.sh restore    # track them again, as they were
#
# A call that measures shipped PreActResNet-18 models needs their weights there, and only two of them
# fit (with .data holding scripts/subset_archive.py's 1,000 test images, not the whole copy):
#   bash scripts/device_carry.sh only preactresnet18-sat preactresnet18-trades
# leaves out every shipped weights file (the SGLD statistics in checkpoints/_shared too) but those
# of the named checkpoints; `restore` brings them all back.
#
# `light` and `only` stage the removal from the index, so commit nothing before `restore`:
# a commit then would delete the shipped weights from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

weights='checkpoints/preactresnet18-*/model*.safetensors'
exclude="$(git rev-parse --git-path info/exclude)"
line="/$weights"
left="$(git rev-parse --git-path device_carry_left_out)"  # what `only` left out, one path a line

case "${1:-size}" in
  light)
    git rm -q --cached --ignore-unmatch -- "$weights"
    mkdir -p "$(dirname "$exclude")"
    touch "$exclude"
    grep -qxF -- "$line" "$exclude" || echo "$line" >>"$exclude"
    echo "left out of the carry: $weights (commit nothing until: bash scripts/device_carry.sh restore)" ;;
  only)
    shift
    [ $# -gt 0 ] || { echo "usage: bash scripts/device_carry.sh only CHECKPOINT [CHECKPOINT ...]" >&2; exit 2; }
    for name in "$@"; do
      [ -f "checkpoints/$name/config.json" ] || { echo "no shipped checkpoint checkpoints/$name" >&2; exit 2; }
    done
    mkdir -p "$(dirname "$exclude")"
    touch "$exclude" "$left"
    git ls-files -- 'checkpoints/*.safetensors' | while IFS= read -r f; do
      keep=0
      for name in "$@"; do case "$f" in "checkpoints/$name/"*) keep=1 ;; esac; done
      if [ "$keep" = 0 ]; then
        git rm -q --cached -- "$f"
        grep -qxF -- "/$f" "$exclude" || echo "/$f" >>"$exclude"
        grep -qxF -- "$f" "$left" || echo "$f" >>"$left"
      fi
    done
    echo "left out of the carry: the weights of every shipped checkpoint but $* (commit nothing until:" \
      "bash scripts/device_carry.sh restore)" ;;
  restore)
    if [ -f "$exclude" ]; then
      { grep -vxF -- "$line" "$exclude" || true; } >"$exclude.tmp"
      if [ -f "$left" ]; then
        sed 's|^|/|' "$left" >"$left.lines"
        { grep -vxF -f "$left.lines" "$exclude.tmp" || true; } >"$exclude.tmp2"
        mv "$exclude.tmp2" "$exclude.tmp"
        rm -f "$left.lines"
      fi
      mv "$exclude.tmp" "$exclude"
    fi
    git reset -q -- "$weights"
    if [ -f "$left" ]; then
      while IFS= read -r f; do git reset -q -- "$f"; done <"$left"
      rm -f "$left"
    fi
    echo "tracked again: the shipped weights" ;;
  size) ;;
  *)
    echo "usage: bash scripts/device_carry.sh [size|light|only CHECKPOINT ...|restore]" >&2
    exit 2 ;;
esac

# What travels: tracked files still in the index, untracked files git does not ignore, .data and .whl.
bytes=$( { git ls-files -z --cached; git ls-files -z --others --exclude-standard; } \
  | while IFS= read -r -d '' f; do [ -f "$f" ] && stat -c %s -- "$f"; done \
  | awk '{s += $1} END {print s + 0}')
extra=0
for d in .data .whl; do
  [ -e "$d" ] && extra=$((extra + $(du -sb -- "$d" | cut -f1)))
done
awk -v b="$bytes" -v e="$extra" 'BEGIN {
  t = (b + e) / 1048576
  printf "a call carrying .data and .whl sends %.1f MiB (working tree %.1f, .data and .whl %.1f) of at most 64\n", t, b / 1048576, e / 1048576
  if (t > 64) { print "over the limit: bash scripts/device_carry.sh light"; exit 1 }
}'
