#!/usr/bin/env bash
# Density: idle `sleep` pods (one VM each) started one after another until
# PODS (100) run or the host's available memory falls under RESERVE_MIB;
# then, after SETTLE_SECONDS, the host memory they take, their PSS per pod
# (QEMU, helpers, shims) and the CPU all of them use while idle over
# IDLE_SECONDS. GUEST_CONFIG: the configuration (default: the installed
# one; scripts/guest-root-bench.sh shows how to make an image variant).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
max=${PODS:-100}
reserve=${RESERVE_MIB:-2048}
settle=${SETTLE_SECONDS:-30}
idle=${IDLE_SECONDS:-10}
config=${GUEST_CONFIG:-/etc/hull/configuration.toml}
sock=/run/hull-containerd/containerd.sock
ns=density
image=docker.io/hull/busybox:latest
scripts/containerd.sh start >/dev/null
[ -f build/busybox.tar ] || bash scripts/busybox-image.sh build/busybox.tar >/dev/null
ctr --address "$sock" -n "$ns" image import build/busybox.tar >/dev/null

avail_mib() { awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo; }
ids=()
cleanup() {
  for id in "${ids[@]}"; do stop_task "$id" & done
  wait
}
trap cleanup EXIT

before=$(avail_mib)
limit="reached $max pods"
t0=$(date +%s)
for i in $(seq 1 "$max"); do
  if [ "$(avail_mib)" -lt "$reserve" ]; then
    limit="stopped: host memory available under $reserve MiB"
    break
  fi
  id="density-$$-$i"
  if ! ctr --address "$sock" -n "$ns" run -d --runtime io.containerd.hull.v2 \
      --runtime-config-path "$config" "$image" "$id" sleep 1000000 >/dev/null 2>"/tmp/density-$$.err"; then
    limit="stopped: pod $i failed: $(head -c 300 "/tmp/density-$$.err")"
    break
  fi
  ids+=("$id")
done
start_secs=$(( $(date +%s) - t0 ))
n=${#ids[@]}
sleep "$settle"
pids=()
state_dir=$(sed -n 's/^state_dir = "\(.*\)"/\1/p' "$config")
for id in "${ids[@]}"; do
  pids+=($(pod_pids "$id" "$state_dir"))
done
ticks() { local t=0 p; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
pss=0
for p in "${pids[@]}"; do pss=$((pss + $(awk '$1 == "Pss:" {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done
c0=$(ticks); sleep "$idle"; c1=$(ticks)
hz=$(getconf CLK_TCK)
used=$((before - $(avail_mib)))
printf '\ndensity: idle pods, one VM each (%s)\n' "$config"
printf '%-44s %10s\n' "pods running" "$n ($limit)"
printf '%-44s %10s\n' "time to start them, s" "$start_secs"
printf '%-44s %10s\n' "host memory taken (MemAvailable drop), MiB" "$used"
printf '%-44s %10s\n' "per pod, MiB" "$((n > 0 ? used / n : 0))"
printf '%-44s %10s\n' "PSS per pod (QEMU, helpers, shim), MiB" "$((n > 0 ? pss / n / 1024 : 0))"
printf '%-44s %10s\n' "idle CPU of all pods, % of one core" \
  "$(awk -v d=$((c1 - c0)) -v hz="$hz" -v s="$idle" 'BEGIN{printf "%.1f", 100 * d / hz / s}')"
