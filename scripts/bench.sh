#!/usr/bin/env bash
# Benchmarks, printed as tables with ratios, all measured in this run on this
# machine: `ctr run --rm IMAGE ID true` with Hull and with runc, and the
# guest boot time (kernel start to agent ready) from the shim's log.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-10}
export HULL_CTRD_DIR=${HULL_CTRD_DIR:-/run/hull-bench}
sock=$(scripts/containerd.sh address)
scripts/containerd.sh start >/dev/null
bash scripts/busybox-image.sh build/busybox.tar >/dev/null
ctr --address "$sock" -n bench image import build/busybox.tar >/dev/null
image=docker.io/hull/busybox:latest

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

time_runs() { # runtime
  for i in $(seq 1 "$runs"); do
    local t0 t1
    t0=$(date +%s%N)
    ctr --address "$sock" -n bench run --rm --runtime "$1" "$image" "bench-$i-$$" true >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
  done
}

hull=$(time_runs io.containerd.hull.v2 | median)
runc=$(time_runs io.containerd.runc.v2 | median)
boot=$(grep -a "vm ready" "$HULL_CTRD_DIR/containerd.log" | tail -n "$runs" | sed -n 's/.*guest_uptime_ms: \([0-9]*\).*/\1/p' | median)
vmready=$(grep -a "vm ready" "$HULL_CTRD_DIR/containerd.log" | tail -n "$runs" | sed -n 's/.*boot_ms: \([0-9]*\).*/\1/p' | median)
accel=$(grep -a "accelerator chosen" "$HULL_CTRD_DIR/containerd.log" | tail -1 | sed -n 's/.*accel: \([a-z]*\).*/\1/p')

printf '\nctr run --rm %s true  (median of %s runs, accelerator: %s)\n' "$image" "$runs" "$accel"
printf '%-28s %10s %8s\n' "runtime" "median ms" "ratio"
printf '%-28s %10s %8s\n' "runc (io.containerd.runc.v2)" "$runc" "1.00"
printf '%-28s %10s %8s\n' "hull (io.containerd.hull.v2)" "$hull" "$(awk -v a="$hull" -v b="$runc" 'BEGIN{printf "%.2f", a/b}')"
printf '\nhull VM start (median)\n'
printf '%-40s %8s ms\n' "guest kernel start -> agent ready" "$boot"
printf '%-40s %8s ms\n' "shim: QEMU spawn -> agent answering" "$vmready"
scripts/containerd.sh stop
