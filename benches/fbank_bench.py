"""Log-mel throughput of torchaudio's compliance.kaldi.fbank and kaldi-native-fbank on the embedded clips
(decoding not timed), for side-by-side comparison with `polyflow bench-fbank`. Prints JSON lines.

Usage: python benches/fbank_bench.py datasets/audio [--bins 128] [--reps 3]
kaldi-native-fbank refuses 128 bins at 16 kHz / 25 ms (empty low filters), so it runs with 80 bins; run
`polyflow bench-fbank --bins 80` for the like-for-like number.
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from kaldi_loader import load_kaldi  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--bins", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    files = sorted(glob.glob(os.path.join(a.dir, "**", "*.flac"), recursive=True))
    clips = [sf.read(f, dtype="float32")[0] for f in files]
    kaldi = load_kaldi()
    t = time.perf_counter()
    for _ in range(a.reps):
        for c in clips:
            kaldi.fbank(torch.from_numpy(c).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
                        window_type="hanning", num_mel_bins=a.bins, dither=0.0, frame_shift=10)
    s = time.perf_counter() - t
    print(json.dumps({"impl": "torchaudio.compliance.kaldi", "clips": len(clips), "reps": a.reps, "bins": a.bins, "clips_per_s": len(clips) * a.reps / s}))
    import kaldi_native_fbank as knf
    o = knf.FbankOptions()
    o.frame_opts.dither = 0
    o.frame_opts.window_type = "hanning"
    o.mel_opts.num_bins = 80
    t = time.perf_counter()
    for _ in range(a.reps):
        for c in clips:
            f = knf.OnlineFbank(o)
            f.accept_waveform(16000, c.tolist())
            f.input_finished()
            np.array([f.get_frame(i) for i in range(f.num_frames_ready)])
    s = time.perf_counter() - t
    print(json.dumps({"impl": "kaldi-native-fbank", "clips": len(clips), "reps": a.reps, "bins": 80, "clips_per_s": len(clips) * a.reps / s}))


if __name__ == "__main__":
    main()
