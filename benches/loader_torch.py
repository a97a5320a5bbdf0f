"""The PyTorch anchor of `polyflow bench-loader`: the same images per second measurement with
torchvision's ImageFolder + RandomResizedCrop + RandomHorizontalFlip + ToTensor in a DataLoader with
`workers` worker processes (what a PyTorch user runs), one warm-up batch, then `batches` timed batches.

    python3 benches/loader_torch.py DIR --workers 2 --batch 256 --batches 30 --size 224
"""
import argparse
import json
import time

import torch
import torchvision
from torchvision import datasets, transforms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    torch.set_num_threads(1)
    tf = transforms.Compose([transforms.RandomResizedCrop(a.size), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = datasets.ImageFolder(a.dir + "/train", tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers, drop_last=True, prefetch_factor=2)
    it = iter(dl)
    next(it)  # warm-up: workers started, first batch
    t0 = time.perf_counter()
    n = 0
    for i, (x, _) in enumerate(it):
        n += x.shape[0]
        if i + 1 >= a.batches:
            break
    secs = time.perf_counter() - t0
    print(json.dumps({"pipeline": "pytorch", "images": n, "seconds": secs, "images_per_s": n / secs, "workers": a.workers,
                      "batch": a.batch, "size": a.size, "files": len(ds), "torch": torch.__version__,
                      "torchvision": torchvision.__version__}))


if __name__ == "__main__":
    main()
