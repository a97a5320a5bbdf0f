#!/usr/bin/env bash
# GPU checks for the `device` machine (not part of CI): build here with
#   cargo build --release --features cuda && mkdir -p gpu && cp target/release/polyflow gpu/ && strip gpu/polyflow
# then run this script there with gpu/ carried. Writes its results under $OUT.
set -u
B=gpu/polyflow
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
B16="--dim 768 --depth 12 --heads 12 --mlp 3072 --image 224 --patch 16 --classes 1000 --batch 64 --steps 10"
TI="--dim 192 --depth 6 --heads 3 --mlp 768 --image 32 --patch 4 --classes 10 --batch 64 --steps 20"
echo "== ViT-B/16 224², batch 64: burn cuda then PyTorch (same card)"
timeout 240 $B bench-model --backend cuda $B16 2>&1 | tail -5 | tee "$OUT/burn_b16.txt"
timeout 120 python3 benches/vit_torch.py --device cuda $B16 2>&1 | tail -3 | tee "$OUT/torch_b16.txt"
echo "== ViT-Ti probe (3×32², patch 4), batch 64"
timeout 90 $B bench-model --backend cuda $TI 2>&1 | tail -3 | tee "$OUT/burn_ti.txt"
timeout 60 python3 benches/vit_torch.py --device cuda $TI 2>&1 | tail -3 | tee "$OUT/torch_ti.txt"
echo "== Table 2, smoke profile, on the cuda backend"
timeout 150 $B run pipelines/table2.toml --profile smoke --backend cuda --store /tmp/gpu_store 2>&1 | tail -25 | tee "$OUT/smoke_cuda.txt"
cp results/smoke/table2.md "$OUT/table2_smoke_cuda.md" 2>/dev/null || true
echo "== Data parallelism on the one GPU (issue 14, N = 1 device): co_image.s0 with gpus = 2 (two replicas on device 0) beside gpus = 1"
timeout 120 $B run pipelines/table2.toml co_image.s0 --profile smoke --backend cuda --store /tmp/gpu_store --set co_image.gpus=2 2>&1 | tail -3 | tee "$OUT/dp_cuda.txt"
for g in 1 2; do
  echo "gpus = $g" | tee -a "$OUT/dp_cuda.txt"
  timeout 30 $B show pipelines/table2.toml co_image.s0 --profile smoke --backend cuda --store /tmp/gpu_store --set co_image.gpus=$g 2>&1 | grep -A3 '"test"' | tee -a "$OUT/dp_cuda.txt"
done
echo done
