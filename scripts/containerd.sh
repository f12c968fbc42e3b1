#!/usr/bin/env bash
# A private containerd for Hull's demo and tests: its own config, root,
# state and socket under $HULL_CTRD_DIR (default /run/hull-containerd).
# It never touches a system containerd's state.
# HULL_CONTAINERD_BIN names a directory with another containerd and ctr
# (the suite's containerd 2.3.4); by default those on PATH.
# usage: containerd.sh start|stop|address
set -euo pipefail
dir=${HULL_CTRD_DIR:-/run/hull-containerd}
bin=${HULL_CONTAINERD_BIN:+$HULL_CONTAINERD_BIN/}
containerd=${bin}containerd
ctr=${bin}ctr
# Its own containerd-shim-runc-v2 first: an older one cannot start under a
# newer containerd's bootstrap protocol.
[ -z "$bin" ] || export PATH="$HULL_CONTAINERD_BIN:$PATH"
sock=$dir/containerd.sock
cmd=${1:-start}

case "$cmd" in
address) echo "$sock" ;;
start)
  if [ -S "$sock" ] && $ctr --address "$sock" version >/dev/null 2>&1; then
    echo "containerd: already running at $sock"; exit 0
  fi
  mkdir -p "$dir"
  mkdir -p "$dir/conf.d"
  cat > "$dir/config.toml" <<TOML
version = 2
# Drop-ins (hull-node's registration, in the e2e suite's deploy case).
imports = ["$dir/conf.d/*.toml"]
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "docker.io/hull/pause:latest"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$dir/cni"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]
  runtime_type = "io.containerd.hull.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
TOML
  # containerd 2.x: handler hull-sandbox makes the pod's VM through the
  # shim's sandbox API (no pause container).
  if $containerd --version | grep -q ' v2\.'; then
    cat >> "$dir/config.toml" <<TOML
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull-sandbox]
  runtime_type = "io.containerd.hull.v2"
  sandboxer = "shim"
TOML
  fi
  # Pods get a bridge on a private subnet that routes nowhere beyond this
  # machine (no masquerading). Address allocations are kept across runs, so
  # an address a crashed run never released is not handed out twice.
  mkdir -p "$dir/cni"
  cat > "$dir/cni/10-hull.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "hull-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "hull-cni0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.240.77.0/24"}]],
        "dataDir": "/var/lib/hull/cni-ipam"
      }
    }
  ]
}
JSON
  nohup $containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
  echo $! > "$dir/containerd.pid"
  for _ in $(seq 1 100); do
    if $ctr --address "$sock" version >/dev/null 2>&1; then echo "containerd: started at $sock"; exit 0; fi
    sleep 0.1
  done
  echo "containerd: did not start; see $dir/containerd.log" >&2; tail -20 "$dir/containerd.log" >&2; exit 1
  ;;
stop)
  if [ -f "$dir/containerd.pid" ]; then
    pid=$(cat "$dir/containerd.pid")
    kill "$pid" 2>/dev/null || true
    # A containerd with CRI pods can take seconds to shut down; a new one
    # started while it still holds its database would wait for it.
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "containerd: $pid ignored SIGTERM for 30 s; killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$dir/containerd.pid"
  fi
  ;;
*) echo "usage: $0 start|stop|address" >&2; exit 2 ;;
esac
