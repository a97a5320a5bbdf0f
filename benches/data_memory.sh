#!/usr/bin/env bash
# Peak memory of the data path at growing dataset sizes (issue 13: flat in the dataset's size).
#
#   benches/data_memory.sh [POLYFLOW_BINARY] [SIZES...]      (default: target/release/polyflow 10000 100000 1000000)
#
# Writes a CIFAR-10 binary folder of N training images (+ N/10 test) under a temp dir, then runs from an empty
# store, one node at a time: `dataset` (ingestion into 256 MiB shards), `image_prep` (u8 cache, 3 × 32 × 32)
# and `train` (a 1-block ViT, 50 updates of batch 64, evaluated on the val and test splits), printing each
# node's wall time and the process's peak resident set (/usr/bin/time).
set -euo pipefail
bin=${1:-target/release/polyflow}
shift || true
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10000 100000 1000000)
bin=$(realpath "$bin")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for n in "${sizes[@]}"; do
  d="$tmp/cifar$n"
  mkdir -p "$d"
  python3 - "$d" "$n" <<'PY'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)
recs = [bytes([i % 10]) + bytes(rng.randrange(256) for _ in range(3072)) for i in range(100)]
def write(name, m):
    with open(os.path.join(d, name), "wb") as f:
        for k in range(0, m, 10000):
            f.write(b"".join(recs[i % 100] for i in range(k, min(m, k + 10000))))
per = (n + 4) // 5
for b in range(5):
    write(f"data_batch_{b + 1}.bin", min(per, n - b * per))
write("test_batch.bin", max(n // 10, 10))
PY
  cat > "$tmp/p$n.toml" <<TOML
[node.data]
kind = "dataset"
format = "cifar10"
path = "cifar$n"
val_fraction = 0.01

[node.x]
kind = "image_prep"
inputs = { data = "data" }
channels = 3
dtype = "u8"

[node.t]
kind = "task"
inputs = { data = "x" }
steps = 50
batch_size = 64
warmup = 5
augment = { crop_pad = 2, flip = true }

[node.m]
kind = "train"
inputs = { task = "t" }
dim = 32
depth = 1
heads = 2
mlp = 64
optimizer = "adam"
TOML
  for node in data x m; do
    /usr/bin/time -f "$n examples  $node  %e s  peak %M KB" "$bin" run "$tmp/p$n.toml" "$node" --store "$tmp/store$n" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
    tail -1 "$tmp/err"
  done
  rm -rf "$tmp/store$n" "$d"
done
