#!/usr/bin/env bash
# Peak memory of ingesting an IDX dataset of growing size (issue 3: readers stream, they do not hold a split).
#
#   benches/ingest_memory.sh [POLYFLOW_BINARY ...]
#
# Writes synthetic MNIST-layout IDX files (28×28 u8 images, gzip, as users download them) of 20k, 80k and
# 320k training images under a temp dir and runs a `dataset` node on each from an empty store, printing the
# wall time and peak resident set (/usr/bin/time). Give several binaries to compare builds in one run.
set -euo pipefail
bins=("$@")
[[ ${#bins[@]} -gt 0 ]] || bins=(target/release/polyflow)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for n in 20000 80000 320000; do
  d="$tmp/idx$n"
  mkdir -p "$d"
  python3 - "$d" "$n" <<'PY'
import gzip, os, random, struct, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)
def write(name, dims, body):
    with gzip.open(os.path.join(d, name + ".gz"), "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", x) for x in dims))
        f.write(body)
img = bytes(rng.randrange(256) for _ in range(28 * 28 * 64))
for split, m in (("train", n), ("t10k", n // 6)):
    write(f"{split}-images-idx3-ubyte", [m, 28, 28], img * (m // 64) + img[: (m % 64) * 784])
    write(f"{split}-labels-idx1-ubyte", [m], bytes(i % 10 for i in range(m)))
PY
  printf '[node.data]\nkind = "dataset"\nformat = "idx"\npath = "idx%s"\n' "$n" > "$tmp/p$n.toml"
  for b in "${bins[@]}"; do
    rm -rf "$tmp/store"
    /usr/bin/time -f "$n images  $(basename "$(dirname "$b")")/$(basename "$b")  %e s  peak %M KB" \
      "$b" run "$tmp/p$n.toml" --store "$tmp/store" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
    tail -1 "$tmp/err"
  done
done
