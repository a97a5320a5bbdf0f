"""GFLOP/s of the MLP's three matrix products (forward x·w, input gradient dy·wᵀ, weight gradient xᵀ·dy) and the
second layer's weight gradient (hᵀ·dz) at the
ViT-Ti probe's and ViT-B/16's shapes in PyTorch: f32 (MKL) and bf16 tensors (oneDNN) — the anchor for
`cargo run --release -p polyflow-kernels --example products` (same shapes, same count: best of 5 rounds of 5).

Usage: python benches/products_torch.py [--threads 2]
"""
import argparse
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for name, m, d, h in [("ViT-Ti probe", 4160, 192, 768), ("ViT-B/16", 3152, 768, 3072)]:
        for dt in (torch.float32, torch.bfloat16):
            x, w, dy = torch.randn(m, d, dtype=dt), torch.randn(d, h, dtype=dt), torch.randn(m, h, dtype=dt)

            def best(f):
                f()
                r = []
                for _ in range(5):
                    t = time.perf_counter()
                    for _ in range(5):
                        f()
                    r.append(10.0 * m * d * h / (time.perf_counter() - t) / 1e9)
                return max(r)

            with torch.no_grad():
                fwd = best(lambda: x @ w)
                bx = best(lambda: dy @ w.t())
                bw = best(lambda: x.t() @ dy)
                bw2 = best(lambda: dy.t() @ x)  # the second layer's weight gradient: hᵀ·dz, [h, m]·[m, d]
            tag = "F32" if dt == torch.float32 else "Bf16"
            print(f"{name:<13} {tag}: x·w [{m},{d}]·[{d},{h}] {fwd:6.1f}  dy·wᵀ {bx:6.1f}  xᵀ·dy {bw:6.1f}  hᵀ·dz {bw2:6.1f} GFLOP/s (torch {torch.__version__})")


if __name__ == "__main__":
    main()
