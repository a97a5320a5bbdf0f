#!/usr/bin/env bash
# Issue 16's CPU protocol in one command: alternating pairs of `polyflow bench-model` and PyTorch's
# `benches/vit_torch.py` on the same two threads (ViT-Ti probe, batch 64, 30 timed steps), then the matrix
# products of the block's shapes through MKL and OpenBLAS (`benches/matmul_blas.py`). Prints the CPU (model
# name, family/model, the ISA flags that choose kernels), the ratio of the means and each pair's own ratio
# (with their median: on a VM whose speed drifts, adjacent runs compare best); raw JSON lines go to OUTDIR.
# Nothing here decides anything: BENCHMARKS.md rows are written from its output.
#
#   benches/cpu_pairs.sh [PAIRS] [OUTDIR]
#   POLYFLOW=target/release/polyflow  the binary (default target/debug/polyflow, the dev profile of the rows)
#   CPUS=0,1                          pin both sides to these cores (a machine with more than two)
#   BENCH_ARGS="--bf16" TORCH_ARGS="--bf16"   e.g. the bf16 pair
set -u
PAIRS=${1:-3}
OUTDIR=${2:-/tmp/cpu_pairs}
PF=${POLYFLOW:-target/debug/polyflow}
mkdir -p "$OUTDIR"
: > "$OUTDIR/polyflow.jsonl"
: > "$OUTDIR/torch.jsonl"
PIN=()
[ -n "${CPUS:-}" ] && PIN=(taskset -c "$CPUS")
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
{
  grep -m1 "model name" /proc/cpuinfo
  grep -m1 "cpu family" /proc/cpuinfo
  grep -m1 "^model\s" /proc/cpuinfo
  echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16|amx_bf16|amx_tile)$' | tr '\n' ' ')"
  echo "pinned: ${CPUS:-no}"
} | tee "$OUTDIR/cpu.txt"
for p in $(seq 1 "$PAIRS"); do
  "${PIN[@]}" "$PF" bench-model --steps 30 ${BENCH_ARGS:-} 2>/dev/null | tail -1 | tee -a "$OUTDIR/polyflow.jsonl"
  "${PIN[@]}" python3 benches/vit_torch.py --threads 2 --steps 30 ${TORCH_ARGS:-} 2>/dev/null | tail -1 | tee -a "$OUTDIR/torch.jsonl"
done
python3 - "$OUTDIR" <<'EOF'
import json, sys, statistics as st
d = sys.argv[1]
rows = {k: [json.loads(l) for l in open(f"{d}/{k}.jsonl") if l.strip()] for k in ("polyflow", "torch")}
m = {k: (st.mean(r["train_img_s"] for r in v), st.mean(r["infer_img_s"] for r in v)) for k, v in rows.items() if v}
if len(m) == 2:
    (pt, pi), (tt, ti) = m["polyflow"], m["torch"]
    print(f"polyflow {pt:.1f} / {pi:.1f} img/s, PyTorch {tt:.1f} / {ti:.1f}: ratio train {pt / tt:.2f}x, infer {pi / ti:.2f}x "
          f"({len(rows['polyflow'])} pairs; matmul peak {rows['polyflow'][-1].get('matmul_peak_gflops', 0):.0f} GFLOP/s, "
          f"kernel {rows['polyflow'][-1].get('matmul_kernel', '?')})")
    # Each pair ran back to back, so its own ratio is the one least moved by a VM whose speed drifts between pairs.
    pr = [(a["train_img_s"] / b["train_img_s"], a["infer_img_s"] / b["infer_img_s"]) for a, b in zip(rows["polyflow"], rows["torch"])]
    fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)
    print(f"per-pair ratios: train {fmt(r[0] for r in pr)} (median {st.median(r[0] for r in pr):.2f}x), "
          f"infer {fmt(r[1] for r in pr)} (median {st.median(r[1] for r in pr):.2f}x)")
EOF
"${PIN[@]}" python3 benches/matmul_blas.py 2>/dev/null | tee "$OUTDIR/blas.txt" | tail -8
