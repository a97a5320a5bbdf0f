"""Idle CPU time of a multi-threaded run, and what the busy CPU ran meanwhile (BENCHMARKS.md, "a fifth session").

Reads `perf script -F comm,tid,time,event,ip,sym` of a system-wide `cpu-clock` recording (`perf record -a -e
cpu-clock`, with or without `--call-graph dwarf`): with `-a` every CPU is sampled at every tick, an idle one as
`swapper` (pid 0). The two busiest threads of COMM are taken as the pool; the span is from their first to their
last sample (or to --end). Prints the share of ticks spent idle, and, for ticks where one CPU was idle, the busy
pool thread's leaf function and first frames of COMM's own crates (with call graphs).

Usage:
  RAYON_NUM_THREADS=2 perf record -a -e cpu-clock -F 499 [--call-graph dwarf,16384] -o perf.data \\
      target/debug/polyflow bench-model --steps 8 --only train
  perf script -i perf.data -F comm,tid,time,event,ip,sym | python3 benches/idle_cpu.py [--freq 499] [--end T] [--depth N]
"""
import argparse
import collections
import re
import sys


def samples(lines):
    """(comm, tid, time, frames) per cpu-clock sample (frames innermost first; one frame without call graphs)."""
    head = re.compile(r"\s*(.+?)\s+(\d+)\s+([\d.]+):\s+(?:\d+\s+)?cpu-clock:\s*(.*)")
    cur = None
    for line in lines:
        m = head.match(line)
        if m:
            if cur:
                yield cur
            inline = m.group(4).split(None, 1)
            cur = (m.group(1), int(m.group(2)), float(m.group(3)), [inline[1]] if len(inline) > 1 else [])
        elif line.strip() and cur is not None:
            parts = line.strip().split(None, 1)
            if len(parts) > 1:
                cur[3].append(parts[1])
    if cur:
        yield cur


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--comm", default="polyflow")
    p.add_argument("--end", type=float, help="last timestamp of the span (default: the pool's last sample)")
    p.add_argument("--depth", type=int, default=3, help="frames of the process's own crates to show")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--freq", type=float, default=499, help="the recording's sampling frequency (perf record -F)")
    a = p.parse_args()
    rows = list(samples(sys.stdin))
    per = collections.Counter(r[1] for r in rows if r[0] == a.comm)
    pool = [t for t, _ in per.most_common(2)]
    times = [r[2] for r in rows if r[1] in pool]
    t0, t1 = min(times), a.end or max(times)
    tick = collections.Counter()
    span_rows = [r for r in rows if t0 <= r[2] <= t1]
    kind = lambda r: "pool" if r[1] in pool else "idle" if r[1] == 0 else "other"
    share = collections.Counter(kind(r) for r in span_rows)
    total = sum(share.values())
    print(f"span {t1 - t0:.2f} s, {total} samples: " + ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in share.most_common()))
    # Ticks: the samples of all CPUs in one sampling period (perf's -F).
    period = 1.0 / a.freq
    by_tick = collections.defaultdict(list)
    for r in span_rows:
        by_tick[round((r[2] - t0) / period)].append(r)
    own = re.compile(r"(polyflow(?:_kernels)?::[A-Za-z0-9_:]+|burn_[a-z_]+::[A-Za-z0-9_:]+)")
    what = collections.Counter()
    for rs in by_tick.values():
        if any(r[1] == 0 for r in rs):
            for r in rs:
                if r[1] in pool:
                    names = []
                    for f in r[3]:
                        m = own.search(f)
                        if m:
                            n = re.sub(r"(::\{?closure.*|::\{impl.*|_avx_avx2.*)$", "", m.group(1))
                            if not names or names[-1] != n:
                                names.append(n)
                        if len(names) >= a.depth:
                            break
                    leaf = re.sub(r"_avx_avx2.*", "", r[3][0])[:50] if r[3] else "?"
                    what[leaf + (" @ " + " < ".join(names) if names else "")] += 1
    n = sum(what.values())
    if n:
        print(f"while one CPU was idle, the busy pool thread ran ({n} samples):")
        for k, v in what.most_common(a.top):
            print(f"  {100 * v / n:5.1f} %  {k[:220]}")


if __name__ == "__main__":
    main()
