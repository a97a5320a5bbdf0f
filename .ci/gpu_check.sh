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
# RESUME=1 (a second call on the same, still warm machine): keep the kernel cache and skip the steps already done.
DONE=/tmp/pf_done
if [ "${RESUME:-0}" = 1 ]; then echo "resuming: $(ls $DONE 2>/dev/null | wc -l) steps done before"; else rm -rf "$POLYFLOW_KERNEL_CACHE" "$DONE"; fi
mkdir -p "$DONE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
T0=$(date +%s)
# One call of the `run` tool lasts at most 600 s: every step's timeout is cut to what is left of BUDGET.
BUDGET=${BUDGET:-560}
left() { local l=$(( BUDGET - ($(date +%s) - T0) )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
# Issue 16 on this machine's CPU (often an Intel Xeon), in the background on its last two cores while the GPU
# steps run on the others (each GPU process keeps one host thread busy; PyTorch's CPU pair uses its two).
NCPU=$(nproc)
if [ "${CPU_PAIRS:-0}" = 1 ] && [ "$NCPU" -ge 8 ]; then
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
  if [ -e "$DONE/$name" ]; then echo "[$name done in an earlier call]"; return; fi
  if [ "$limit" -le 5 ]; then echo "[$name skipped: budget spent]" | tee "$OUT/$name.txt"; return; fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/$name.mem" 2>/dev/null &
  local smi=$! t=$(date +%s%N)
  timeout "$limit" ${GPU_PIN[@]+"${GPU_PIN[@]}"} "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  kill $smi 2>/dev/null
  local wall_ms=$(( ($(date +%s%N) - t) / 1000000 ))
  local peak; peak=$(sort -n "$OUT/$name.mem" | tail -1)
  { tail -3 "$OUT/$name.log"; echo "wall_ms=$wall_ms rc=$rc peak_used_mib=$peak"; } | tee "$OUT/$name.txt"
  [ "$rc" -eq 0 ] && touch "$DONE/$name"
  echo "[$name done at +$(( $(date +%s) - T0 ))s]"
}

TI="--dim 192 --depth 6 --heads 3 --mlp 768 --image 32 --patch 4 --classes 10 --batch 64 --steps 20"
B16="--dim 768 --depth 12 --heads 12 --mlp 3072 --image 224 --patch 16 --classes 1000 --batch 64 --steps 10"
B384="--dim 768 --depth 12 --heads 12 --mlp 3072 --image 384 --patch 16 --classes 1000 --batch 512 --steps 1"

# Order: what issue 14 asks first, as the one call of a session's 15 device minutes allows. bench-model prints
# each warm-up step's seconds on stderr and `train_warmup_s` (kernel compilation and autotuning with a cold
# cache) in its JSON line.
echo "== 1. ViT-B/16 224², batch 64, f32 with a cold kernel cache (its warm-up is what a new machine costs, once)"
# burn runs f32 products as TF32 on tensor cores: PyTorch TF32 is the anchor, true f32 beside it.
step b16_f32 200 $B bench-model --backend cuda $B16
du -sh "$POLYFLOW_KERNEL_CACHE" 2>&1 | tee -a "$OUT/b16_f32.txt"
step torch_b16_tf32 45 python3 benches/vit_torch.py --device cuda --tf32 $B16
step torch_b16_f32 45 python3 benches/vit_torch.py --device cuda $B16

echo "== 2. ViT-Ti probe (launch-bound), then again in a new process with the cache warm"
step ti_f32 90 $B bench-model --backend cuda $TI
step ti_warm 40 $B bench-model --backend cuda $TI
step torch_ti_tf32 30 python3 benches/vit_torch.py --device cuda --tf32 $TI
step torch_ti_f32 30 python3 benches/vit_torch.py --device cuda $TI

echo "== 3. bf16: polyflow precision = bf16 (autocast-style block) vs PyTorch bf16 autocast + SDPA"
step b16_bf16 100 $B bench-model --backend cuda --bf16 $B16
step torch_b16_bf16 45 python3 benches/vit_torch.py --device cuda --bf16 --sdpa $B16

echo "== 4. Small profile, Table 2, on cuda (the 2-core CPU takes 335–370 s for it from an empty store)"
step small_table2 150 $B run pipelines/table2.toml --backend cuda --store /tmp/gpu_store
cp results/table2.md "$OUT/table2_small_cuda.md" 2>/dev/null || true

echo "== 5. B/16 384², batch 512 (ImageNet in Table 6) by micro-batches: peak memory per micro-batch size"
for mb in 64 128; do
  step b384_mb$mb 100 $B bench-model --backend cuda $B384 --micro-batch $mb
  step torch_b384_mb$mb 60 python3 benches/vit_torch.py --device cuda --tf32 $B384 --micro-batch $mb
done

echo "== 6. Data parallelism on the one GPU (N = 1 device): co_image.s0 with gpus = 2 beside gpus = 1"
step dp 90 $B run pipelines/table2.toml co_image.s0 --profile smoke --backend cuda --store /tmp/gpu_store --set co_image.gpus=2
for g in 1 2; do
  echo "gpus = $g" | tee -a "$OUT/dp.txt"
  timeout 30 $B show pipelines/table2.toml co_image.s0 --profile smoke --backend cuda --store /tmp/gpu_store --set co_image.gpus=$g 2>&1 | grep -A3 '"test"' | tee -a "$OUT/dp.txt"
done

echo "== 7. polyflow's GPU kernels, attention node and flattened linear against burn's compositions (--no-fused)"
step b16_composed 90 $B bench-model --backend cuda --no-fused $B16
step b16_bf16_composed 90 $B bench-model --backend cuda --bf16 --no-fused $B16
step ti_composed 60 $B bench-model --backend cuda --no-fused $TI

echo "== 8. Where a step's time goes: CubeCL's kernel timings (every kernel waited for: read shares, not speed)"
# prof NAME TIMEOUT CMD...: step with POLYFLOW_KERNEL_PROFILE set, then the per-kernel table (benches/cubecl_profile.py).
prof() {
  local name=$1 limit=$2; shift 2
  step "$name" "$limit" env POLYFLOW_KERNEL_PROFILE="$OUT/$name.kernels.log" "$@"
  [ -f "$OUT/$name.kernels.log" ] || return
  python3 benches/cubecl_profile.py "$OUT/$name.kernels.log" --short --top 30 --json "$OUT/$name.json" > "$OUT/$name.table.txt" 2>&1
  python3 benches/cubecl_profile.py "$OUT/$name.kernels.log" --top 30 > "$OUT/$name.table_full.txt" 2>&1
  head -20 "$OUT/$name.table.txt"; gzip -f "$OUT/$name.kernels.log"
}
prof b16_prof 60 $B bench-model --backend cuda --only train ${B16/--steps 10/--steps 2}
prof ti_prof 40 $B bench-model --backend cuda --only train ${TI/--steps 20/--steps 4}

echo "== 9. Host synchronisation (POLYFLOW_SYNC_EVERY=1) and f16 with loss scaling"
step ti_sync1 40 env POLYFLOW_SYNC_EVERY=1 $B bench-model --backend cuda $TI
step ti_f16 60 $B bench-model --backend cuda --f16 $TI
step torch_ti_f16 30 python3 benches/vit_torch.py --device cuda --f16 $TI
wait
if [ "${CPU_PAIRS:-0}" = 1 ]; then
  echo "== 10. CPU pairs (background, cores $((NCPU - 2))-$((NCPU - 1)))"; tail -4 "$OUT/cpu_pairs.txt" 2>/dev/null; tail -1 "$OUT/cpu_pairs_bf16.txt" 2>/dev/null
fi
echo "done at +$(( $(date +%s) - T0 ))s"
