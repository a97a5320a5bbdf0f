#!/usr/bin/env bash
# GPU checks for the `device` machine (issue 14; not part of CI, never needed by tests). Build here with
#   cargo build --release --features cuda && mkdir -p gpu && strip -o gpu/polyflow target/release/polyflow && gzip -f gpu/polyflow
# then run this script there with `gpu` carried (`run` tool: carry ["gpu"], timeout ≤ 600 s). Every step has
# its own timeout and writes its result under $OUT as it goes, so a run cut short still reports what it did.
# Order: what issue 14 asks first. PyTorch runs beside polyflow in the same call, on the same card.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
B=gpu/polyflow
[ -f gpu/polyflow.gz ] && { gunzip -c gpu/polyflow.gz > /tmp/polyflow && chmod +x /tmp/polyflow && B=/tmp/polyflow; }
# A cold kernel cache (CubeCL autotune results + PTX) on this machine; its cost is measured below.
export POLYFLOW_KERNEL_CACHE=/tmp/pf_kernels
rm -rf "$POLYFLOW_KERNEL_CACHE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
T0=$(date +%s)
# One call of the `run` tool lasts at most 600 s: every step's timeout is cut to what is left of BUDGET.
BUDGET=${BUDGET:-560}
left() { local l=$(( BUDGET - ($(date +%s) - T0) )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
# Issue 16 on this machine's CPU (often an Intel Xeon), in the background on its last two cores while the GPU
# steps run on the others (each GPU process keeps one host thread busy; PyTorch's CPU pair uses its two).
NCPU=$(nproc)
if [ "$NCPU" -ge 8 ]; then
  # f32 first (the protocol), then bf16 against PyTorch's bf16 autocast (AMX there if the CPU has it).
  ( POLYFLOW=$B CPUS=$((NCPU - 2)),$((NCPU - 1)) timeout 220 benches/cpu_pairs.sh 2 "$OUT/cpu" > "$OUT/cpu_pairs.txt" 2>&1
    POLYFLOW=$B CPUS=$((NCPU - 2)),$((NCPU - 1)) BENCH_ARGS=--bf16 TORCH_ARGS=--bf16 timeout 170 benches/cpu_pairs.sh 2 "$OUT/cpu_bf16" > "$OUT/cpu_pairs_bf16.txt" 2>&1 ) &
  GPU_PIN=(taskset -c 0-$((NCPU - 3)))
else
  GPU_PIN=()
fi

# step NAME TIMEOUT CMD...: runs CMD under `timeout`, samples the card's used memory every 100 ms, appends
# the command's last lines, its wall time (ms), exit code and peak used memory (MiB, whole card) to $OUT/NAME.txt.
step() {
  local name=$1 limit; limit=$(left "$2"); shift 2
  if [ "$limit" -le 5 ]; then echo "[$name skipped: budget spent]" | tee "$OUT/$name.txt"; return; fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/$name.mem" 2>/dev/null &
  local smi=$! t=$(date +%s%N)
  timeout "$limit" "${GPU_PIN[@]}" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  kill $smi 2>/dev/null
  local wall_ms=$(( ($(date +%s%N) - t) / 1000000 ))
  local peak; peak=$(sort -n "$OUT/$name.mem" | tail -1)
  { tail -3 "$OUT/$name.log"; echo "wall_ms=$wall_ms rc=$rc peak_used_mib=$peak"; } | tee "$OUT/$name.txt"
  echo "[$name done at +$(( $(date +%s) - T0 ))s]"
}

TI="--dim 192 --depth 6 --heads 3 --mlp 768 --image 32 --patch 4 --classes 10 --batch 64 --steps 20"
B16="--dim 768 --depth 12 --heads 12 --mlp 3072 --image 224 --patch 16 --classes 1000 --batch 64 --steps 10"
B384="--dim 768 --depth 12 --heads 12 --mlp 3072 --image 384 --patch 16 --classes 1000 --batch 512 --steps 1"

echo "== 1. ViT-Ti probe: autotune with a cold cache, then warm (what a new machine costs, once)"
step ti_cold 150 $B bench-model --backend cuda $TI
step ti_warm 90 $B bench-model --backend cuda $TI
du -sh "$POLYFLOW_KERNEL_CACHE" 2>&1 | tee -a "$OUT/ti_warm.txt"
step torch_ti_f32 60 python3 benches/vit_torch.py --device cuda $TI
step torch_ti_tf32 60 python3 benches/vit_torch.py --device cuda --tf32 $TI

echo "== 2. ViT-B/16 224², batch 64, f32 (burn runs f32 products as TF32 on tensor cores: PyTorch TF32 is the anchor, true f32 beside it)"
step b16_f32 150 $B bench-model --backend cuda $B16
step torch_b16_f32 90 python3 benches/vit_torch.py --device cuda $B16
step torch_b16_tf32 90 python3 benches/vit_torch.py --device cuda --tf32 $B16

echo "== 2b. Where a step's time goes: CubeCL's kernel timings (every kernel waited for: read shares, not speed)"
# prof NAME TIMEOUT CMD...: step with POLYFLOW_KERNEL_PROFILE set, then the per-kernel table (benches/cubecl_profile.py).
prof() {
  local name=$1 limit=$2; shift 2
  step "$name" "$limit" env POLYFLOW_KERNEL_PROFILE="$OUT/$name.kernels.log" "$@"
  python3 benches/cubecl_profile.py "$OUT/$name.kernels.log" --short --top 30 --json "$OUT/$name.json" > "$OUT/$name.table.txt" 2>&1
  python3 benches/cubecl_profile.py "$OUT/$name.kernels.log" --top 30 > "$OUT/$name.table_full.txt" 2>&1
  head -20 "$OUT/$name.table.txt"; gzip -f "$OUT/$name.kernels.log"
}
prof ti_prof 45 $B bench-model --backend cuda --only train ${TI/--steps 20/--steps 4}
prof b16_prof 75 $B bench-model --backend cuda --only train ${B16/--steps 10/--steps 2}

echo "== 3. bf16: polyflow precision = bf16 (autocast-style block) vs PyTorch bf16 autocast + SDPA"
step b16_bf16 120 $B bench-model --backend cuda --bf16 $B16
step torch_b16_bf16 90 python3 benches/vit_torch.py --device cuda --bf16 --sdpa $B16

echo "== 4. Host synchronisation: the same Ti run reading losses every update (POLYFLOW_SYNC_EVERY=1)"
step ti_sync1 90 env POLYFLOW_SYNC_EVERY=1 $B bench-model --backend cuda $TI

echo "== 5. Small profile, Table 2, on cuda (the 2-core CPU takes 7–8.5 min for it from an empty store)"
step smoke_table2 150 $B run pipelines/table2.toml --backend cuda --store /tmp/gpu_store
cp results/table2.md "$OUT/table2_small_cuda.md" 2>/dev/null || true

echo "== 6. B/16 384², batch 512 (ImageNet in Table 6) by micro-batches: peak memory per micro-batch size"
for mb in 64 128; do
  step b384_mb$mb 150 $B bench-model --backend cuda $B384 --micro-batch $mb
  step torch_b384_mb$mb 90 python3 benches/vit_torch.py --device cuda $B384 --micro-batch $mb
done

echo "== 7. Data parallelism on the one GPU (N = 1 device): co_image.s0 with gpus = 2 beside gpus = 1"
step dp 150 $B run pipelines/table2.toml co_image.s0 --profile smoke --backend cuda --store /tmp/gpu_store --set co_image.gpus=2
for g in 1 2; do
  echo "gpus = $g" | tee -a "$OUT/dp.txt"
  timeout 30 $B show pipelines/table2.toml co_image.s0 --profile smoke --backend cuda --store /tmp/gpu_store --set co_image.gpus=$g 2>&1 | grep -A3 '"test"' | tee -a "$OUT/dp.txt"
done
echo "== 8. precision = f16 with loss scaling (the path of GPUs without bf16) vs PyTorch f16 autocast + GradScaler"
step ti_f16 60 $B bench-model --backend cuda --f16 $TI
step torch_ti_f16 60 python3 benches/vit_torch.py --device cuda --f16 $TI
echo "== 8a. polyflow's GPU kernels, attention node and flattened linear against burn's compositions (--no-fused; its reductions autotune first)"
step ti_composed 75 $B bench-model --backend cuda --no-fused $TI
# ViT-B/16 as burn composes it (also burn's batched `linear`, whose weight gradients are B products and a sum)
step b16_composed 120 $B bench-model --backend cuda --no-fused $B16
# bf16: the attention node in bf16 (scores and probabilities kept in bf16) against the autocast-style composition
step b16_bf16_composed 120 $B bench-model --backend cuda --bf16 --no-fused $B16
echo "== 8b. nsys's kernel summary of B/16 training (where the device has Nsight Systems)"
if command -v nsys >/dev/null; then
  step b16_nsys 90 nsys profile -t cuda --stats=true -o "$OUT/b16_nsys" -f true $B bench-model --backend cuda --only train ${B16/--steps 10/--steps 2}
  grep -A40 "cuda_gpu_kern_sum" "$OUT/b16_nsys.log" > "$OUT/b16_nsys_kernels.txt" 2>/dev/null; rm -f "$OUT"/b16_nsys.sqlite
else
  echo "no nsys on this machine" | tee "$OUT/b16_nsys.txt"
fi
wait
echo "== 9. CPU pairs (background, cores $((NCPU - 2))-$((NCPU - 1)))"; tail -4 "$OUT/cpu_pairs.txt" 2>/dev/null; tail -1 "$OUT/cpu_pairs_bf16.txt" 2>/dev/null
echo "done at +$(( $(date +%s) - T0 ))s"
