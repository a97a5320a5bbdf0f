"""PyTorch reference for `polyflow bench-model`: the same pre-LN ViT (fused qkv, tanh GELU, LN eps 1e-6,
class token, learned positions, linear head), Adam, softmax CE, random data. Prints one JSON line.

Usage: python benches/vit_torch.py [--dim 192 --depth 6 --heads 3 --mlp 768 --image 32 --patch 4 --batch 64]
                                   [--threads 2] [--device cpu|cuda] [--steps 10] [--bf16 | --f16] [--tf32] [--sdpa]
                                   [--micro-batch N]

--bf16: bf16 autocast (`torch.autocast(device, torch.bfloat16)`) around forward passes, f32 weights and
optimizer state: what a PyTorch user runs for bf16 training; the counterpart of `bench-model --bf16`.
--f16: f16 autocast with `torch.amp.GradScaler` (dynamic loss scaling; it reads whether the gradients
overflowed every step): the counterpart of `bench-model --f16`.
--tf32: f32 matmuls on TF32 tensor cores (`torch.backends.cuda.matmul.allow_tf32`). --sdpa: attention by
`F.scaled_dot_product_attention` (flash / memory-efficient kernels) instead of matmul + softmax.
--micro-batch N: gradient accumulation over slices of N (the counterpart of `bench-model --micro-batch`).
Also prints the CPU ISA PyTorch dispatches to (`ATEN_CPU_CAPABILITY` caps it, e.g. `avx2`) and, on CUDA,
the peak memory PyTorch allocated and reserved during training.
"""
import contextlib
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


SDPA = False


class Block(nn.Module):
    def __init__(s, d, h, m):
        super().__init__()
        s.h = h
        s.n1, s.n2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        s.qkv, s.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        s.fc1, s.fc2 = nn.Linear(d, m), nn.Linear(m, d)

    def forward(s, x):
        b, n, d = x.shape
        q, k, v = s.qkv(s.n1(x)).reshape(b, n, 3, s.h, d // s.h).permute(2, 0, 3, 1, 4)
        if SDPA:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(q @ k.transpose(-2, -1) / (d // s.h) ** 0.5, -1) @ v
        x = x + s.proj(o.transpose(1, 2).reshape(b, n, d))
        return x + s.fc2(F.gelu(s.fc1(s.n2(x)), approximate="tanh"))


class ViT(nn.Module):
    def __init__(s, a):
        super().__init__()
        s.embed = nn.Conv2d(3, a.dim, a.patch, a.patch)
        n = (a.image // a.patch) ** 2
        s.cls = nn.Parameter(torch.zeros(1, 1, a.dim))
        s.pos = nn.Parameter(torch.randn(1, n + 1, a.dim) * 0.02)
        s.blocks = nn.ModuleList([Block(a.dim, a.heads, a.mlp) for _ in range(a.depth)])
        s.norm = nn.LayerNorm(a.dim, eps=1e-6)
        s.head = nn.Linear(a.dim, a.classes)

    def forward(s, x):
        x = s.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls.expand(x.shape[0], -1, -1), x], 1) + s.pos
        for b in s.blocks:
            x = b(x)
        return s.head(s.norm(x)[:, 0])


def main():
    p = argparse.ArgumentParser()
    for k, v in dict(dim=192, depth=6, heads=3, mlp=768, image=32, patch=4, classes=10, batch=64, steps=10, threads=2).items():
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--device", default="cpu")
    half_group = p.add_mutually_exclusive_group()
    half_group.add_argument("--bf16", action="store_true")
    half_group.add_argument("--f16", action="store_true")
    p.add_argument("--tf32", action="store_true")
    p.add_argument("--sdpa", action="store_true")
    p.add_argument("--micro-batch", type=int, default=0)
    a = p.parse_args()
    global SDPA
    SDPA = a.sdpa
    if a.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    m = ViT(a).to(dev)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.randn(a.batch, 3, a.image, a.image, device=dev)
    y = torch.arange(a.batch, device=dev) % a.classes

    half = torch.bfloat16 if a.bf16 else torch.float16 if a.f16 else None
    cast = (lambda: torch.autocast(a.device, dtype=half)) if half else contextlib.nullcontext
    scaler = torch.amp.GradScaler(a.device, enabled=a.f16)

    mb = a.micro_batch if 0 < a.micro_batch < a.batch else a.batch

    def step():
        opt.zero_grad()
        for s0 in range(0, a.batch, mb):
            with cast():
                loss = F.cross_entropy(m(x[s0:s0 + mb]), y[s0:s0 + mb]) * (min(mb, a.batch - s0) / a.batch)
            scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    sync = (lambda: torch.cuda.synchronize()) if a.device == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    train = a.steps * a.batch / (time.perf_counter() - t)
    mem = {}
    if a.device == "cuda":
        mem = {"peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20, "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
    m.eval()
    with torch.no_grad(), cast():
        for _ in range(3):
            m(x)
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            m(x).cpu()
        sync()
        infer = a.steps * a.batch / (time.perf_counter() - t)
    print(json.dumps({"backend": f"pytorch-{a.device}", "torch": torch.__version__, "dim": a.dim, "depth": a.depth, "image": a.image,
                      "patch": a.patch, "batch": a.batch, "train_img_s": train, "infer_img_s": infer,
                      "precision": ("bf16-autocast" if a.bf16 else "f16-autocast+gradscaler" if a.f16 else "tf32" if a.tf32 else "f32"), "sdpa": a.sdpa,
                      "micro_batch": a.micro_batch, **mem, "cpu_capability": torch.backends.cpu.get_cpu_capability()}))


if __name__ == "__main__":
    main()
