#!/usr/bin/env bash
# Engine overhead on synthetic pipelines of N trivial `value` nodes (a binary tree of dependencies):
# `status`, a no-op `run`, and a `run` after changing one leaf's parameter. Median of 5, milliseconds.
# Usage: [NODES="30 300 3000"] benches/engine.sh [path/to/polyflow]   (default: target/debug/polyflow)
set -euo pipefail
BIN=$(realpath "${1:-target/debug/polyflow}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ms() { local s e; s=$(date +%s%N); "$@" > /dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for n in ${NODES:-30 300 3000}; do
  d="$work/p$n"; mkdir -p "$d"
  { for i in $(seq 0 $((n - 1))); do
      echo "[node.n$i]"; echo 'kind = "value"'; echo "value = $i"
      if [ "$i" -gt 0 ]; then echo "inputs = { after = \"n$(( (i - 1) / 2 ))\" }"; fi
    done; } > "$d/p.toml"
  (cd "$d" && "$BIN" run p.toml > /dev/null 2>&1)
  st=$(for r in 1 2 3 4 5; do (cd "$d" && ms "$BIN" status p.toml); done | median)
  noop=$(for r in 1 2 3 4 5; do (cd "$d" && ms "$BIN" run p.toml); done | median)
  leaf=$((n - 1))
  ch=$(for r in 1 2 3 4 5; do sed -i "s/^value = $leaf\$/value = $((leaf + 100000 + r))/; s/^value = $((leaf + 100000 + r - 1))\$/value = $((leaf + 100000 + r))/" "$d/p.toml"; (cd "$d" && ms "$BIN" run p.toml); done | median)
  echo "nodes=$n status_ms=$st noop_run_ms=$noop changed_one_ms=$ch"
done
