#!/usr/bin/env bash
# `status` at scale (issue 15): Table 2 (smoke profile, everything cached) plus one `command` node whose
# `deps` is a dataset folder, in two variants of the same shape:
#   empty  — the folder holds 1 file and the node's artifact is 1 byte;
#   big    — the folder holds 100,000 files (100 class folders × 1,000 files of 1 KiB) and the node's
#            artifact is 10 files of 1 GiB (the store holds > 10 GB of blobs that `status` relies on).
# Prints the median wall milliseconds of 7 `status` runs of each (after one untimed warm-up that also
# settles the stat cache), plus the same for a stat-cache-less first look at the big folder.
# Usage: benches/status_scale.sh [path/to/polyflow]   (default: target/debug/polyflow); needs ~25 GB free.
set -euo pipefail
BIN=$(realpath "${1:-target/debug/polyflow}")
REPO=$(realpath "$(dirname "$0")/..")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ms() { local s e; s=$(date +%s%N); "$@" > /dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

python3 - "$work" <<'EOF'
import os, sys
w = sys.argv[1]
os.makedirs(f"{w}/empty/data", exist_ok=True)
open(f"{w}/empty/data/only.bin", "wb").write(b"x")
for c in range(100):
    d = f"{w}/big/data/class{c:03d}"
    os.makedirs(d, exist_ok=True)
    for i in range(1000):
        open(f"{d}/img_{i:05d}.JPEG", "wb").write(os.urandom(1024))
EOF
rel=$(realpath --relative-to="$work/empty" "$REPO/pipelines/table2.toml")
write() { # variant, command producing the outputs
  cat > "$work/$1/p.toml" <<EOF
include = ["$rel"]
[node.bulk]
kind = "command"
deps = ["data"]
run = ["sh", "-c", "$2"]
EOF
}
write empty 'printf x > $POLYFLOW_OUT/out.bin'
write big 'for i in 0 1 2 3 4 5 6 7 8 9; do { echo $i; head -c 1073741824 /dev/zero; } > $POLYFLOW_OUT/part$i.bin; done'

# Table 2 computed once, its store copied so both variants start from the same cached artifacts.
(cd "$work/empty" && "$BIN" run p.toml table2 --profile smoke --store "$work/store-empty" > "$work/log" 2>&1) || { tail -20 "$work/log"; exit 1; }
cp -r "$work/store-empty" "$work/store-big"
for v in empty big; do
  (cd "$work/$v" && "$BIN" run p.toml table2 bulk --profile smoke --store "$work/store-$v" > /dev/null 2>&1)
done
echo "store-big blobs: $(du -sh "$work/store-big/blobs" | cut -f1); files under big/data: $(find "$work/big/data" -type f | wc -l)"
for v in empty big; do
  st() { (cd "$work/$v" && ms "$BIN" status p.toml table2 bulk --profile smoke --store "$work/store-$v"); }
  [ "$v" = big ] && { rm -rf "$work/store-big/stat"; cold=$(st); }
  st > /dev/null
  t=$(for r in 1 2 3 4 5 6 7; do st; done | median)
  echo "variant=$v status_ms=$t"
done
echo "big, first status without a stat cache: ${cold} ms"
(cd "$work/big" && "$BIN" status p.toml table2 bulk --profile smoke --store "$work/store-big" | tail -3)
