"""Where a GPU training step's time goes, from CubeCL's kernel profiling log (issue 14).

CubeCL (burn's GPU runtime) can time every kernel it launches: with profiling at level `basic` it waits for each
kernel and logs one line `| <duration> | <kernel>` per launch, plus a summary table at each synchronisation.
The waits make the run slower than a real one, so use the log for shares, not for throughput. This script sums
the per-launch lines (not the summaries) by kernel and prints a table: launches, total, mean per launch, share.

Turn the profiling on with a `cubecl.toml` in the working directory of the run (polyflow reads it, then sets
its own cache folders):

  mkdir -p /tmp/prof && cd /tmp/prof && printf '[profiling.logger]\\nlevel = "basic"\\nfile = "/tmp/prof/kernels.log"\\nappend = false\\n' > cubecl.toml
  polyflow bench-model --backend cuda --steps 5 ...
  python3 benches/cubecl_profile.py /tmp/prof/kernels.log [--skip N] [--top 30] [--json out.json]

`--skip N` drops the first N launches (warm-up; autotune's candidate runs when the tuning cache was cold).
The kernel names are CubeCL's (fused element-wise and reduction kernels from burn's fusion, cubek's matrix
products by their tile families), shortened to their type path without generic arguments when `--short`.
"""
import argparse
import collections
import json
import re
import sys

# Rust's `Debug` of a `Duration`: 850ns, 12.345µs, 1.234567ms, 1.5s (µ may also be written `us`).
LINE = re.compile(r"^\|\s*([\d.]+)(ns|µs|us|ms|s)\s*\|\s*(.+?)\s*$")
SCALE = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def launches(lines):
    """(seconds, kernel name) for each per-launch line. The name is CubeCL's, its parts joined by ` | ` (kernel,
    then its family or operation; the runtime's name last, dropped here). Summary tables start with a name
    column, not a duration, so they do not match."""
    for line in lines:
        m = LINE.match(line.rstrip("\n"))
        if m:
            parts = [p.strip() for p in m.group(3).split("|") if p.strip()]
            if len(parts) > 1 and parts[-1].endswith("Runtime"):
                parts.pop()
            yield float(m.group(1)) * SCALE[m.group(2)], " | ".join(parts)


def shorten(name):
    """`a::b::Kernel<F, G>` → its last two path segments without generics: `b::Kernel` (each ` | ` part alike)."""
    if " | " in name:
        # CubeCL names a matrix product by every type of its blueprint: keep the kernel, its argument kind and
        # its families (tile, stage, writer), the parts that tell one product kernel from another.
        parts = [shorten(p) for p in name.split(" | ")]
        keep = [parts[0]] + [p for p in parts[1:] if p.endswith(("Args", "Family", "Op", "Matmul"))]
        return " | ".join(dict.fromkeys(keep))
    depth = 0
    out = []
    for c in name:
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif depth == 0:
            out.append(c)
    parts = "".join(out).split("::")
    return "::".join(parts[-2:])


def table(items, top):
    """Rows (name, launches, total s, mean s, share) sorted by total, the rest summed into one row."""
    by = collections.defaultdict(lambda: [0, 0.0])
    for secs, name in items:
        by[name][0] += 1
        by[name][1] += secs
    total = sum(v[1] for v in by.values()) or 1.0
    rows = sorted(((n, c, t, t / c, t / total) for n, (c, t) in by.items()), key=lambda r: -r[2])
    if len(rows) > top:
        rest = rows[top:]
        c = sum(r[1] for r in rest)
        t = sum(r[2] for r in rest)
        rows = rows[:top] + [(f"({len(rest)} other kernels)", c, t, t / c, t / total)]
    return rows, total, sum(v[0] for v in by.values())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log", nargs="?", help="CubeCL profiling log (default: stdin)")
    p.add_argument("--skip", type=int, default=0, help="drop the first N launches (warm-up)")
    p.add_argument("--top", type=int, default=30, help="kernels listed one by one")
    p.add_argument("--short", action="store_true", help="kernel names without module paths and generics")
    p.add_argument("--json", help="also write the rows as JSON here")
    a = p.parse_args()
    src = open(a.log, encoding="utf-8", errors="replace") if a.log else sys.stdin
    items = list(launches(src))[a.skip:]
    if not items:
        sys.exit("no per-launch lines found: was profiling at level basic (cubecl.toml [profiling.logger])?")
    if a.short:
        items = [(s, shorten(n)) for s, n in items]
    rows, total, count = table(items, a.top)
    print(f"{count} launches, {total * 1e3:.3f} ms of kernel time")
    print(f"{'share':>6} {'total ms':>10} {'launches':>8} {'mean µs':>9}  kernel")
    for name, c, t, mean, share in rows:
        print(f"{share * 100:5.1f}% {t * 1e3:10.3f} {c:8d} {mean * 1e6:9.1f}  {name}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"launches": count, "kernel_s": total, "rows": [
                {"kernel": n, "launches": c, "total_s": t, "mean_s": m, "share": s} for n, c, t, m, s in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
