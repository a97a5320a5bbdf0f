"""GFLOP/s of the ViT-Ti probe block's matrix products in a BLAS, for comparison with the
`matmul_gflops` that `polyflow bench-model` prints (same shapes, 2 threads, best of 10 × 5).

Usage: python benches/matmul_blas.py [--threads 2] [--lib torch|numpy]
  torch: PyTorch's CPU matmul (MKL on x86-64 wheels); numpy: the OpenBLAS bundled with numpy's wheels.
Caps for an AVX2-only comparison: MKL_ENABLE_INSTRUCTIONS=AVX2 (torch), OPENBLAS_CORETYPE=Haswell (numpy).
"""
import argparse
import json
import os
import time

SHAPES = [(4160, 192, 768), (4160, 768, 192), (4160, 192, 576), (4160, 192, 192)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lib", default="torch")
    a = p.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    if a.lib == "torch":
        import torch
        torch.set_num_threads(a.threads)
        rnd = lambda r, c: torch.randn(r, c)
        name = f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"
    else:
        import numpy as np
        rnd = lambda r, c: np.random.randn(r, c).astype(np.float32)
        name = f"numpy {np.__version__} (OpenBLAS {np.show_config(mode='dicts')['Build Dependencies']['blas'].get('version')})"
    out = {}
    for m, k, n in SHAPES:
        x, w = rnd(m, k), rnd(k, n)
        for _ in range(3):
            x @ w
        best = float("inf")
        for _ in range(10):
            t = time.perf_counter()
            for _ in range(5):
                x @ w
            best = min(best, (time.perf_counter() - t) / 5)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
    print(json.dumps({"lib": name, "threads": a.threads, "matmul_gflops": out}))


if __name__ == "__main__":
    main()
