#!/usr/bin/env bash
# Host work per training update on burn's GPU path (issue 14): how much CPU time each host thread spends per
# update doing work, as opposed to spinning while it waits for another thread. burn's GPU path has three host
# threads: the caller's (`polyflow`: autodiff, registering operations with burn-fusion), burn-fusion's server
# (`DSU-…`: planning and fusing operations, preparing each launch) and CubeCL's device server (`DSD-…`: the
# runtime's launches; on wgpu/lavapipe also the Vulkan driver and the kernels themselves, JIT-compiled code).
# They hand work to each other through bounded queues and spin while a queue is full or empty, so CPU time
# alone says nothing; the samples inside CubeCL's and burn-fusion's spin loops are counted apart.
#
# Method: `perf record` of two `bench-model --only train` runs that differ only in their number of timed
# updates (S1 and S2), after an untimed run that fills the kernel caches; every count is the difference of the
# two runs divided by S2 − S1, so start-up, warm-up and exit cancel out.
#
# Usage: benches/host_work.sh [path/to/polyflow] [bench-model args...]
#   default: target/release/polyflow, `--backend wgpu` and a tiny ViT with ViT-Ti's structure (depth 6) whose
#   kernels are cheap, so that the run is not dominated by the kernels. Needs `perf`; on lavapipe set
#   XDG_RUNTIME_DIR. Env: S1 (default 40), S2 (240), FREQ (sampling Hz, 4000).
# With OPS=1 (root, tracefs) it also counts the operations registered with burn-fusion per update (an uprobe on
# `MultiStream::register`, the same difference of two runs): launched or not, each costs the host time.
set -euo pipefail
BIN=$(realpath "${1:-target/release/polyflow}")
shift || true
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--backend wgpu --dim 16 --depth 6 --heads 2 --mlp 32 --image 8 --patch 4 --batch 4)
S1=${S1:-40}
S2=${S2:-240}
FREQ=${FREQ:-4000}
command -v perf > /dev/null || { echo "host_work.sh: needs perf (Debian: linux-perf)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One untimed run first: kernel compilation and autotune of new shapes would otherwise fall into the first
# measured run only and not cancel out.
"$BIN" bench-model --only train "${ARGS[@]}" --steps 1 > /dev/null 2>&1 || true
for s in "$S1" "$S2"; do
  perf record -q -F "$FREQ" -o "$work/perf.$s" -- "$BIN" bench-model --only train "${ARGS[@]}" --steps "$s" > "$work/out.$s" 2> "$work/err.$s" \
    || { cat "$work/err.$s" >&2; exit 1; }
  # Every sample as thread / class: `spin` (inside a spin loop of CubeCL's channel or client), `driver` (JIT
  # code and the Vulkan/CUDA driver's libraries), `kernel` (the OS kernel), else `work`.
  perf script -i "$work/perf.$s" -F comm,ip,sym,dso 2> /dev/null | awk '
    { c = $1; sub(/-[0-9]+-[0-9]+$/, "", c)
      if ($0 ~ /submit_inner|do_empty|launch_inner|custom_channel::Server::start/) t = "spin"
      else if ($0 ~ /JIT|libvulkan|libcuda|libnvrtc|unknown/) t = "driver"
      else if ($0 ~ /kernel\.kallsyms/) t = "kernel"
      else t = "work"
      n[c "/" t]++ }
    END { for (k in n) print k, n[k] }' | sort > "$work/cls.$s"
done

echo "# bench-model --only train ${ARGS[*]}; ${S1} vs ${S2} timed updates; perf at ${FREQ} Hz"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs"
for s in "$S1" "$S2"; do echo "# $s updates: $(tail -1 "$work/out.$s")"; done
printf '%-20s %12s\n' "thread/class" "ms per update"
join "$work/cls.$S1" "$work/cls.$S2" | awk -v d=$((S2 - S1)) -v f="$FREQ" '{ printf "%-20s %12.2f\n", $1, ($3 - $2) * 1000 / f / d }'

if [ "${OPS:-0}" = 1 ]; then
  # perf probe takes an address in the file: the symbol's address less the text segment's address-offset gap.
  addr=$(nm "$BIN" | awk '/MultiStream.*8register/ && !n++ {print $1}')
  gap=$(readelf -lW "$BIN" | awk '$1 == "LOAD" && / R E / && !n++ {print $3, $2}' | { read -r va off; echo $((va - off)); })
  if [ -n "$addr" ] && perf probe -q -x "$BIN" -a "pf_ops=0x$(printf %x $((0x$addr - gap)))" 2> /dev/null; then
    ev=$(perf probe -l 2> /dev/null | awk '/pf_ops/ && !n++ {print $1}')
    for s in "$S1" "$S2"; do
      perf stat -x, -e "$ev" -o "$work/ops.$s" -- "$BIN" bench-model --only train "${ARGS[@]}" --steps "$s" > /dev/null 2>&1
    done
    perf probe -q -d "$ev" 2> /dev/null || true
    a=$(grep pf_ops "$work/ops.$S1" | cut -d, -f1); b=$(grep pf_ops "$work/ops.$S2" | cut -d, -f1)
    printf '%-20s %12d\n' "fusion ops/update" $(( (b - a) / (S2 - S1) ))
  else
    echo "# OPS=1: no uprobe on $BIN (needs root and tracefs)"
  fi
fi
