#!/usr/bin/env bash
# The guest's boot, step by step, on this machine: `ctr run -d` of a busybox
# task with Hull, BOOT_RUNS quiet boots (the configuration as installed) for
# the agent's own steps and the shim's view, then one verbose boot
# (initcall_debug, every kernel message on the console) for where the
# kernel's time goes. The verbose boot is slower than a quiet one: each
# console byte costs an exit to QEMU, so its figures say where, not how long.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BOOT_RUNS:-5}
export HULL_CTRD_DIR=${HULL_CTRD_DIR:-/run/hull-bench}
config=${HULL_CONFIG:-/etc/hull/configuration.toml}
sock=$(scripts/containerd.sh address)
scripts/containerd.sh start >/dev/null
bash scripts/busybox-image.sh build/busybox.tar >/dev/null
ctr --address "$sock" -n boot image import build/busybox.tar >/dev/null
image=docker.io/hull/busybox:latest
state_dir=$(sed -n 's/^state_dir = "\(.*\)"/\1/p' "$config")
out=$HULL_CTRD_DIR/boot-timeline
mkdir -p "$out"

ns=boot
. scripts/bench-lib.sh

# boot ID CONFIG: runs a task, keeps its console as $out/ID.console.
boot() {
  ctr --address "$sock" -n boot run -d --runtime io.containerd.hull.v2 \
    --runtime-config-path "$2" "$image" "$1" sleep 1000 >/dev/null
  cp "$state_dir/$1/console.log" "$out/$1.console"
  stop_task "$1"
}

# The agent's "agent ready" line of a console: its boot_steps words.
steps_of() { grep -a '"agent ready"' "$1" | tail -1 | sed -n 's/.*"boot_steps":"\([^"]*\)".*/\1/p'; }
step() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

# Every VM boots for its task: none is taken from hull-cache, whose VMs
# booted earlier (the shim would see them answer at once).
quiet=$HULL_CTRD_DIR/boot-quiet.toml
sed 's#^socket = .*#socket = "/nonexistent/hull-cache.sock"#' "$config" > "$quiet"
for i in $(seq 1 "$runs"); do boot "quiet-$i-$$" "$quiet"; done
verbose=$HULL_CTRD_DIR/boot-verbose.toml
sed 's/^kernel_params = "\(.*\)"/kernel_params = "\1 initcall_debug ignore_loglevel"/' "$quiet" > "$verbose"
boot "verbose-$$" "$verbose"

printf '\nGuest boot timeline (median of %s quiet boots; ms since the guest kernel started)\n' "$runs"
printf '%-44s %8s %8s\n' "step" "at ms" "+ms"
prev=0
for s in init initramfs_left mounts modules listening; do
  at=$(for i in $(seq 1 "$runs"); do steps_of "$out/quiet-$i-$$.console" | step "$s"; done | median)
  label=$s
  case $s in
    init) label="kernel: start -> agent runs as /init" ;;
    initramfs_left) label="agent: initramfs bound as its root" ;;
    mounts) label="agent: base mounts, cgroup controllers" ;;
    modules) label="agent: kernel modules the devices need" ;;
    listening) label="agent: serving (agent ready)" ;;
  esac
  printf '%-44s %8s %8s\n' "$label" "$at" "$(awk -v a="$at" -v b="$prev" 'BEGIN{print a-b}')"
  prev=$at
done
vmready=$(grep -a "vm ready" "$HULL_CTRD_DIR/containerd.log" | tail -n "$((runs + 1))" | head -n "$runs" \
  | sed -n 's/.*boot_ms: \([0-9]*\).*/\1/p' | median)
printf '%-44s %8s\n' "shim: QEMU spawn -> agent answering" "$vmready"

v=$out/verbose-$$.console
printf '\nKernel, one verbose boot (initcall_debug; console output slows it)\n'
awk -F'[][]' '
  /calling / && !first {printf "%-44s %8.0f\n", "first initcall", $2*1000; first=1}
  /Trying to unpack rootfs/ {printf "%-44s %8.0f\n", "initramfs unpack starts", $2*1000}
  /Freeing initrd memory/ {printf "%-44s %8.0f\n", "initramfs unpacked", $2*1000}
  /Run \/init as init process/ {printf "%-44s %8.0f\n", "kernel runs /init", $2*1000}
' "$v"
printf '\nSlowest initcalls (ms)\n'
grep -ao 'initcall [^ ]* returned [-0-9]* after [0-9]* usecs' "$v" \
  | awk '{printf "%8.1f  %s\n", $6/1000, $2}' | sort -rn | head -n 10
grep -ao 'initcall [^ ]* returned [-0-9]* after [0-9]* usecs' "$v" \
  | awk '{s+=$6; n++} END {printf "%8.1f  all %d initcalls\n", s/1000, n}'
echo "consoles kept in $out"
