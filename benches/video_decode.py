"""The PyAV anchor of `polyflow bench-video`: decode every clip under DIR as polyflow's ingestion does (every
frame decoded; the centre window's `frames` frames at `stride` converted to RGB with the short side resized to
`size`, then centre-cropped), clips spread over `workers` processes.

    python3 benches/video_decode.py DIR --workers 2 --frames 32 --stride 2 --size 256
"""
import argparse
import json
import multiprocessing as mp
import os
import time

import av
import numpy as np


def clip(args):
    path, frames, stride, size = args
    with av.open(path) as c:
        decoded = list(c.decode(video=0))
    n = len(decoded)
    need = (frames - 1) * stride + 1
    start = max(n - need, 0) // 2
    out = []
    for k in range(frames):
        f = decoded[(start + k * stride) % n]
        w, h = f.width, f.height
        dw, dh = (round(w * size / h), size) if w >= h else (size, round(h * size / w))
        rgb = f.reformat(width=dw, height=dh, format="rgb24", interpolation="BILINEAR").to_ndarray()
        y0, x0 = (dh - size) // 2, (dw - size) // 2
        out.append(rgb[y0:y0 + size, x0:x0 + size])
    return np.stack(out).nbytes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    a = p.parse_args()
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(a.dir) for f in fs if f.endswith(".mp4"))
    jobs = [(f, a.frames, a.stride, a.size) for f in files]
    clip(jobs[0])  # warm-up
    with mp.Pool(a.workers) as pool:
        t0 = time.perf_counter()
        total = sum(pool.map(clip, jobs, chunksize=1))
        secs = time.perf_counter() - t0
    print(json.dumps({"pipeline": "pyav", "clips": len(files), "seconds": secs, "clips_per_s": len(files) / secs,
                      "workers": a.workers, "frames": a.frames, "stride": a.stride, "size": a.size, "bytes_out": total,
                      "av": av.__version__}))


if __name__ == "__main__":
    main()
