#!/usr/bin/env bash
# Benchmarks, printed as tables with ratios, all measured in this run on this
# machine: `ctr run --rm IMAGE ID true` and a CRI pod with runc, with Hull
# booting its VM and with Hull taking one from hull-cache; the guest boot
# time (kernel start to agent ready) from the shim's log; what a waiting
# pool VM costs; exec, stdio and network against runc and raw vsock.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-10}
export HULL_CTRD_DIR=${HULL_CTRD_DIR:-/run/hull-bench}
sock=$(scripts/containerd.sh address)
scripts/containerd.sh start >/dev/null
bash scripts/busybox-image.sh build/busybox.tar >/dev/null
bash scripts/busybox-image.sh build/pause.tar docker.io/hull/pause:latest '["sleep","2147483647"]' >/dev/null
ctr --address "$sock" -n bench image import build/busybox.tar >/dev/null
for tar in build/busybox.tar build/pause.tar; do ctr --address "$sock" -n k8s.io image import "$tar" >/dev/null; done
image=docker.io/hull/busybox:latest

ns=bench
. scripts/bench-lib.sh

# The rows without the cache run with it stopped; it is started for the
# rows with it, and left as it was found.
cache_was_running=0
bash scripts/cache.sh status >/dev/null 2>&1 && cache_was_running=1
bash scripts/cache.sh stop >/dev/null
restore_cache() { if ((cache_was_running)); then bash scripts/cache.sh start >/dev/null; else bash scripts/cache.sh stop >/dev/null; fi; }
trap restore_cache EXIT
wait_full="bash $PWD/scripts/cache.sh wait-full 120 >/dev/null"

time_runs() { # runtime [command run untimed before each]
  for i in $(seq 1 "$runs"); do
    local t0 t1
    [ -z "${2:-}" ] || eval "$2"
    t0=$(date +%s%N)
    ctr --address "$sock" -n bench run --rm --runtime "$1" "$image" "bench-$i-$$" true >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
  done
}
cri_runs() { # handler [command run untimed before each]
  cargo test -q -p hull-tests --test cri_bench -- "$sock" "$1" "$runs" ${2:+"$2"} 2>/dev/null | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

hull=$(time_runs io.containerd.hull.v2 | median)
boot=$(grep -a "vm ready" "$HULL_CTRD_DIR/containerd.log" | tail -n "$runs" | sed -n 's/.*guest_uptime_ms: \([0-9]*\).*/\1/p' | median)
vmready=$(grep -a "vm ready" "$HULL_CTRD_DIR/containerd.log" | tail -n "$runs" | sed -n 's/.*boot_ms: \([0-9]*\).*/\1/p' | median)
runc=$(time_runs io.containerd.runc.v2 | median)
cri_runc=$(cri_runs runc)
cri_hull=$(cri_runs hull)
bash scripts/cache.sh start >/dev/null
hull_cached=$(time_runs io.containerd.hull.v2 "$wait_full" | median)
cri_cached=$(cri_runs hull "$wait_full")
from_cache=$(grep -a "vm ready" "$HULL_CTRD_DIR/containerd.log" | tail -n "$((2 * runs))" | grep -c "from_cache: true" || true)
accel=$(grep -a "accelerator chosen" "$HULL_CTRD_DIR/containerd.log" | tail -1 | sed -n 's/.*accel: \([a-z]*\).*/\1/p')

printf '\nctr run --rm %s true  (median of %s runs, accelerator: %s)\n' "$image" "$runs" "$accel"
printf '%-36s %10s %8s\n' "runtime" "median ms" "ratio"
printf '%-36s %10s %8s\n' "runc (io.containerd.runc.v2)" "$runc" "1.00"
printf '%-36s %10s %8s\n' "hull, booting its VM" "$hull" "$(ratio "$hull" "$runc")"
printf '%-36s %10s %8s\n' "hull, VM from hull-cache" "$hull_cached" "$(ratio "$hull_cached" "$runc")"
printf '\nCRI pod: RunPodSandbox + CreateContainer + StartContainer  (median of %s)\n' "$runs"
printf '%-36s %10s %8s\n' "runtime handler" "median ms" "ratio"
printf '%-36s %10s %8s\n' "runc" "$cri_runc" "1.00"
printf '%-36s %10s %8s\n' "hull, booting its VM" "$cri_hull" "$(ratio "$cri_hull" "$cri_runc")"
printf '%-36s %10s %8s\n' "hull, VM from hull-cache" "$cri_cached" "$(ratio "$cri_cached" "$cri_runc")"
printf '(hull-cache rows: the pool full before each run; %s of their %s sandboxes took a VM from it)\n' "$from_cache" "$((2 * runs))"
bash scripts/pool-idle-cost.sh
bash scripts/cache.sh stop >/dev/null
printf '\nhull VM start (median)\n'
printf '%-40s %8s ms\n' "guest kernel start -> agent ready" "$boot"
printf '%-40s %8s ms\n' "shim: QEMU spawn -> agent answering" "$vmready"

# Exec into a running task (ctr task exec ... true), and what one sandbox
# costs on the host: the shim's RSS, and QEMU's (the VM's memory as touched).
# The agent benchmark's raw vsock baseline runs in a container, which needs
# vsock allowed (containers have none by default).
vsock_config=$HULL_CTRD_DIR/hull-vsock-allowed.toml
sed 's/^kernel_params = "\(.*\)"/kernel_params = "\1 hull.container_vsock=allow"/' \
  "${HULL_CONFIG:-/etc/hull/configuration.toml}" > "$vsock_config"
exec_runs() { # runtime [ctr run options...]
  local id="bench-exec-$1-$$"
  ctr --address "$sock" -n bench run -d --runtime "$1" "${@:2}" "$image" "$id" sleep 1000 >/dev/null
  for i in $(seq 1 "$runs"); do
    local t0 t1
    t0=$(date +%s%N)
    ctr --address "$sock" -n bench task exec --exec-id "e$i" "$id" true
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
  done
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# The agent in the running sandbox, through hull-agentctl on the VM's vsock
# socket: RPC round trips, stdout throughput by path next to raw vsock in
# the same VM, and the agent's memory with 10 more containers.
# The same agent binary as an ordinary process on this host (no VM, no
# TCG): RPC round trips and its memory with 10 containers.
host_agent_bench() {
  local dir pid rootfs
  dir=$(mktemp -d /tmp/hull-agent-bench.XXXXXX)
  rootfs="$dir/rootfs"
  mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp,etc}
  cp /bin/busybox "$rootfs/bin/busybox"
  for a in $("$rootfs/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"; done
  unshare --net --uts --mount --propagation private -- \
    target/x86_64-unknown-linux-gnu/release/hull-agent --unix-dir "$dir" >"$dir/agent.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do [ -S "$dir/agent.sock" ] && break; sleep 0.05; done
  local ctl="target/release/hull-agentctl --unix-dir $dir" rpc rss ok=0
  rpc=$($ctl bench-rpc --count 1000) && rss=$($ctl bench-containers --rootfs "$rootfs" --count 10) || ok=1
  # The agent goes whether or not the measurements worked.
  kill "$pid"; wait "$pid" 2>/dev/null || true
  ((ok)) && cat "$dir/agent.log" >&2
  rm -rf "$dir"
  rmdir /sys/fs/cgroup/*/hull-bench /sys/fs/cgroup/hull-bench 2>/dev/null || true
  if ((ok)); then echo "bench: the host agent benchmark failed; the agent's log is above" >&2; return 1; fi
  printf '\nagent as a process on this host (Unix socket, no VM)\n'
  printf '%-44s %8s us (p99 %s us)\n' "RPC round trip, Health.Check, median of 1000" \
    "$(field median <<<"$rpc")" "$(field p99 <<<"$rpc")"
  printf '%-44s %8s kB\n' "agent RSS, idle" "$(sed -n 1p <<<"$rss" | field rss_kb)"
  printf '%-44s %8s kB\n' "agent RSS, 10 containers" "$(sed -n 2p <<<"$rss" | field rss_kb)"
}

agent_bench() { # sandbox id
  local ctl="target/release/hull-agentctl --vm-socket /run/hull/$1/vsock.sock"
  local rpc stdio rss
  rpc=$($ctl bench-rpc --count 200)
  stdio=$($ctl bench-stdio --container "$1" --mib 64 --source-binary target/x86_64-unknown-linux-gnu/release/hull-agent)
  rss=$($ctl bench-containers --container "$1" --count 10)
  local vs dd raw rpcs
  vs=$(grep 'path=raw-vsock ' <<<"$stdio" | field mb_per_s)
  dd=$(grep 'path=dd-raw-stream ' <<<"$stdio" | field mb_per_s)
  raw=$(grep 'path=raw-stream ' <<<"$stdio" | field mb_per_s)
  copied=$(grep 'path=copied-raw-stream ' <<<"$stdio" | field mb_per_s)
  rpcs=$(grep 'path=read-stdout-rpc ' <<<"$stdio" | field mb_per_s)
  printf '\nagent in the VM (hull-agentctl over the VM vsock socket)\n'
  printf '%-44s %8s us (p99 %s us)\n' "RPC round trip, Health.Check, median of 200" \
    "$(field median <<<"$rpc")" "$(field p99 <<<"$rpc")"
  printf '%-44s %10s %8s\n' "64 MiB guest to host, 256 KiB writes, median of 3" "MB/s" "ratio"
  printf '%-44s %10s %8s\n' "raw vsock (helper writes to vsock)" "$vs" "1.00"
  printf '%-44s %10s %8s\n' "Hull raw stream (helper's stdout)" "$raw" "$(awk -v a="$raw" -v b="$vs" 'BEGIN{printf "%.2f", a/b}')"
  printf '%-44s %10s %8s\n' "  attached after start, copied by the agent" "$copied" "$(awk -v a="$copied" -v b="$vs" 'BEGIN{printf "%.2f", a/b}')"
  printf '%-44s %10s %8s\n' "Kata ReadStdout RPC (helper's stdout)" "$rpcs" "$(awk -v a="$rpcs" -v b="$vs" 'BEGIN{printf "%.2f", a/b}')"
  printf '%-44s %10s %8s\n' "Hull raw stream (dd if=/dev/zero's stdout)" "$dd" "$(awk -v a="$dd" -v b="$vs" 'BEGIN{printf "%.2f", a/b}')"
  printf '%-44s %8s kB\n' "agent RSS, $(sed -n 1p <<<"$rss" | field containers) container(s)" "$(sed -n 1p <<<"$rss" | field rss_kb)"
  printf '%-44s %8s kB\n' "agent RSS, $(sed -n 2p <<<"$rss" | field containers) containers" "$(sed -n 2p <<<"$rss" | field rss_kb)"
}

# The median of FIELD over the last $runs lines of the shim log that hold
# both WHAT and the task ID (shim lines say "field: N", the agent's JSON
# "field":N).
log_median() { # id what field
  grep -a -- "$2" "$HULL_CTRD_DIR/containerd.log" | grep -a -- "$1" | grep -a 'exec.\{1,3\}e[0-9]' \
    | tail -n "$runs" | sed -n "s/.*$3\"\\{0,1\\}: *\([0-9]*\).*/\1/p" | median
}
# Where an exec's time goes, from the shim's and the agent's log lines of
# the hull exec runs (microseconds, medians).
exec_timeline() { # id total_ms
  local rt setup start stdio wait
  rt=$(log_median "$1" "exec started" agent_exec_us)
  setup=$(log_median "$1" "process started" setup_us)
  start=$(log_median "$1" "process started" start_us)
  stdio=$(log_median "$1" "exec started" stdio_us)
  wait=$(log_median "$1" "process exited" output_wait_us)
  ms() { awk -v u="$1" 'BEGIN{printf "%.1f", u/1000}'; }
  printf '\nhull exec timeline (medians, ms)\n'
  printf '%-52s %8s\n' "shim -> agent ExecProcess, round trip" "$(ms "$rt")"
  printf '%-52s %8s\n' "  agent: rustjail set-up (fork, setns, cgroup)" "$(ms "$setup")"
  printf '%-52s %8s\n' "  agent: start (exec of the process)" "$(ms "$start")"
  printf '%-52s %8s\n' "  ttrpc, vsock, spec checks" "$(awk -v r="$rt" -v s="$setup" -v t="$start" 'BEGIN{printf "%.1f", (r - s - t)/1000}')"
  printf '%-52s %8s\n' "shim: stdio streams connected" "$(ms "$stdio")"
  printf '%-52s %8s\n' "shim: exit reported -> output drained" "$(ms "$wait")"
  printf '%-52s %8s\n' "ctr, containerd, Exec/Wait/Delete RPCs (the rest)" \
    "$(awk -v t="$2" -v a="$rt" -v b="$stdio" -v c="$wait" 'BEGIN{printf "%.1f", t - (a + b + c)/1000}')"
}

hull_exec=$(exec_runs io.containerd.hull.v2 --runtime-config-path "$vsock_config" | median)
hid="bench-exec-io.containerd.hull.v2-$$"
shim_pid=$(pgrep -f "containerd-shim-hull-v2 .*-id $hid" | head -1)
qemu_pid=$(pgrep -f "qemu-system.*hull-$hid" | head -1)
shim_rss=$(rss_kb "$shim_pid")
qemu_rss=$(rss_kb "$qemu_pid")
agent_bench "$hid"
stop_task "$hid"
host_agent_bench
runc_exec=$(exec_runs io.containerd.runc.v2 | median)
rid="bench-exec-io.containerd.runc.v2-$$"
runc_shim_rss=$(rss_kb "$(pgrep -f "containerd-shim-runc-v2 .*-id $rid" | head -1)")
stop_task "$rid"

printf '
ctr task exec ID true  (median of %s runs)
' "$runs"
printf '%-28s %10s %8s
' "runtime" "median ms" "ratio"
printf '%-28s %10s %8s
' "runc (io.containerd.runc.v2)" "$runc_exec" "1.00"
printf '%-28s %10s %8s
' "hull (io.containerd.hull.v2)" "$hull_exec" "$(awk -v a="$hull_exec" -v b="$runc_exec" 'BEGIN{printf "%.2f", a/b}')"
exec_timeline "$hid" "$hull_exec"
printf '
host memory of one running sandbox (RSS)
'
printf '%-40s %8s kB
' "containerd-shim-runc-v2" "$runc_shim_rss"
printf '%-40s %8s kB
' "containerd-shim-hull-v2" "$shim_rss"
printf '%-40s %8s kB
' "its QEMU (guest memory touched)" "$qemu_rss"
# Pod networking: a namespace with a veth pair (10.242.0.1 peer, 10.242.0.2
# pod), the container run in it; TCP throughput (64 MiB through nc) and
# request latency (connect, one line each way) from the peer namespace.
net_bench() { # runtime -> "MB/s ms"
  local pod="hullb-pod-$$" peer="hullb-peer-$$" id="bench-net-$1-$$"
  ip netns add "$pod"; ip netns add "$peer"
  ip -n "$pod" link add eth0 type veth peer name veth0 netns "$peer"
  ip -n "$pod" addr add 10.242.0.2/24 dev eth0; ip -n "$pod" link set eth0 up
  ip -n "$peer" addr add 10.242.0.1/24 dev veth0; ip -n "$peer" link set veth0 up
  ctr --address "$sock" -n bench run -d --runtime "$1" --with-ns "network:/var/run/netns/$pod" "$image" "$id" \
    sh -c 'while :; do nc -l -p 7100 > /dev/null; done & while :; do echo pong | nc -l -p 7200 > /dev/null; done' >/dev/null
  local probe="ip netns exec $peer python3 scripts/tcp-probe.py"
  $probe request 10.242.0.2 7200 1 >/dev/null
  local mbs lat
  mbs=$($probe throughput 10.242.0.2 7100 64)
  lat=$($probe request 10.242.0.2 7200 "$runs")
  stop_task "$id"
  ip netns del "$pod"; ip netns del "$peer"
  echo "$mbs $lat"
}
read -r runc_mbs runc_lat <<<"$(net_bench io.containerd.runc.v2)"
read -r hull_mbs hull_lat <<<"$(net_bench io.containerd.hull.v2)"
printf '\nTCP from a host namespace into the pod (64 MiB via nc; request = new connection to a fresh nc, a line each way, median of %s)\n' "$runs"
printf '%-28s %10s %8s %12s %8s\n' "runtime" "MB/s" "ratio" "request ms" "ratio"
printf '%-28s %10s %8s %12s %8s\n' "runc (io.containerd.runc.v2)" "$runc_mbs" "1.00" "$runc_lat" "1.00"
printf '%-28s %10s %8s %12s %8s\n' "hull (io.containerd.hull.v2)" "$hull_mbs" \
  "$(awk -v a="$hull_mbs" -v b="$runc_mbs" 'BEGIN{printf "%.2f", a/b}')" "$hull_lat" \
  "$(awk -v a="$hull_lat" -v b="$runc_lat" 'BEGIN{printf "%.2f", a/b}')"
scripts/containerd.sh stop
