#!/usr/bin/env bash
# hull-cache, the service that keeps booted VMs for Hull's sandboxes.
# With systemd: the hull-cache unit (installed, enabled, started). Without
# (containers, CI machines): a background process with a pid file.
# HULL_CONFIG names the configuration (default /etc/hull/configuration.toml);
# HULL_CACHE_RUN a directory for its pid file and log (default /run/hull-cache).
# usage: cache.sh start|stop|restart|status|wait-full [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
run=${HULL_CACHE_RUN:-/run/hull-cache}
bin=${HULL_CACHE_BIN:-/usr/local/bin/hull-cache}
systemd=0
if [ -z "${HULL_CONFIG:-}" ] && [ -d /run/systemd/system ] && [ "$(ps -p 1 -o comm=)" = systemd ]; then
  systemd=1
fi
cmd=${1:-start}

running_pid() {
  local pid
  pid=$(cat "$run/hull-cache.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null && grep -q hull-cache "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

case "$cmd" in
start)
  if [ $systemd = 1 ]; then
    install -D -m 644 deploy/systemd/hull-cache.service /etc/systemd/system/hull-cache.service
    systemctl daemon-reload
    systemctl enable --now hull-cache.service
    echo "hull-cache: started (systemd unit hull-cache)"
    exit 0
  fi
  if pid=$(running_pid); then echo "hull-cache: already running (pid $pid)"; exit 0; fi
  mkdir -p "$run"
  nohup "$bin" > "$run/hull-cache.log" 2>&1 &
  echo $! > "$run/hull-cache.pid"
  for _ in $(seq 1 50); do
    if "$bin" status >/dev/null 2>&1; then echo "hull-cache: started (pid $(cat "$run/hull-cache.pid"), log $run/hull-cache.log)"; exit 0; fi
    kill -0 "$(cat "$run/hull-cache.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "hull-cache: did not start; see $run/hull-cache.log" >&2; tail -20 "$run/hull-cache.log" >&2; exit 1
  ;;
stop)
  if [ $systemd = 1 ]; then systemctl stop hull-cache.service; exit 0; fi
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "hull-cache: $pid ignored SIGTERM for 30 s; killing it" >&2; kill -9 "$pid"; fi
  fi
  rm -f "$run/hull-cache.pid"
  ;;
restart) bash "$0" stop; bash "$0" start ;;
status) "$bin" status ;;
wait-full)
  # Until the pool is full (the demo and benchmarks start with it full).
  limit=${2:-120}
  for _ in $(seq 1 $((limit * 10))); do
    if "$bin" status 2>/dev/null | grep -Eq ' ([0-9]+)/\1 VMs waiting'; then "$bin" status; exit 0; fi
    sleep 0.1
  done
  echo "hull-cache: pool not full within ${limit}s" >&2; "$bin" status >&2 || true; exit 1
  ;;
*) echo "usage: $0 start|stop|restart|status|wait-full [SECONDS]" >&2; exit 2 ;;
esac
