#!/usr/bin/env bash
# What a VM waiting in hull-cache's pool costs the host while idle: the CPU
# of its processes (QEMU, vhost-device-vsock, virtiofsd, its keeper) over
# IDLE_SECONDS, and their memory (PSS: shared pages split among sharers;
# RSS for reference). Needs hull-cache running; waits for a full pool.
# The figures are docs/cache.md's reason for the default pool size.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${IDLE_SECONDS:-10}
pool=$(sed -n 's/^pool_dir = "\(.*\)"/\1/p' "${HULL_CONFIG:-/etc/hull/configuration.toml}")
pool=${pool:-/run/hull-cache/pool}
bash scripts/cache.sh wait-full 120 >/dev/null
sleep 2  # the last boot's tail (agent start-up, module loading)
pids() {
  for d in /proc/[0-9]*; do
    grep -qa -- "$pool/" "$d/cmdline" 2>/dev/null && echo "${d#/proc/}"
  done
}
ticks() { # pid...
  local t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
kb() { # field pid...
  local field=$1 t=0; shift
  for p in "$@"; do t=$((t + $(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done
  echo "$t"
}
mapfile -t procs < <(pids)
vms=$(ls "$pool" | wc -l)
[ "$vms" -gt 0 ] || { echo "pool-idle-cost: no waiting VM in $pool" >&2; exit 1; }
t0=$(ticks "${procs[@]}")
sleep "$secs"
t1=$(ticks "${procs[@]}")
hz=$(getconf CLK_TCK)
cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$secs" -v n="$vms" 'BEGIN{printf "%.2f", 100 * d / hz / s / n}')
pss=$(( $(kb Pss "${procs[@]}") / vms / 1024 ))
rss=$(( $(kb Rss "${procs[@]}") / vms / 1024 ))
mem=$(sed -n 's/^memory_mib = \([0-9]*\)/\1/p' "${HULL_CONFIG:-/etc/hull/configuration.toml}")
printf '\nidle cost of one VM waiting in hull-cache (%s waiting, %s processes, %s s)\n' "$vms" "${#procs[@]}" "$secs"
printf '%-44s %8s %%\n' "CPU (of one core)" "$cpu"
printf '%-44s %8s MiB\n' "memory, PSS (guest of ${mem:-?} MiB, as touched)" "$pss"
printf '%-44s %8s MiB\n' "memory, RSS" "$rss"
