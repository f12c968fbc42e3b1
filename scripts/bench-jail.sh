#!/usr/bin/env bash
# The lifecycle of a `true` container with hull-jail (rustjail), runc and
# crun, interleaved in one run: create + start + wait + delete as separate
# commands (as containerd's runc shim drives them), and `run` (the same in
# one command). Prints medians and ratios against crun.
#
# crun 1.8.1 refuses hybrid cgroup hosts whose cgroup2 mount has
# controllers, as this one has; so every runtime runs in one mount
# namespace without that mount (the same conditions for all three).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${HULL_BENCH_JAIL_NS:-}" ]; then
  exec env HULL_BENCH_JAIL_NS=1 unshare -m --propagation private -- \
    sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec bash "$0"' "$0"
fi
runs=${BENCH_JAIL_RUNS:-50}
hull=${HULL_JAIL:-target/release/hull-jail}
work=$(mktemp -d /tmp/hull-bench-jail.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/"
ln -s busybox "$work/bundle/rootfs/bin/true"
mkdir -p "$work/bundle/rootfs"/{proc,dev,sys,tmp,etc}
(cd "$work/bundle" && runc spec)
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"true"/' "$work/bundle/config.json"
grep -q '"true"' "$work/bundle/config.json" || { echo "bench-jail: could not set args to true" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
us() { # EPOCHREALTIME difference in microseconds
  awk -v a="$1" -v b="$2" 'BEGIN{printf "%d", (b - a) * 1000000}'
}

lifecycle() { # binary id -> microseconds
  local rt=$1 id=$2 t0 t1
  t0=$EPOCHREALTIME
  "$rt" --root "$work/root-$(basename "$rt")" create --bundle "$work/bundle" "$id" </dev/null >/dev/null
  "$rt" --root "$work/root-$(basename "$rt")" start "$id"
  # Wait: delete succeeds once the process has exited.
  until "$rt" --root "$work/root-$(basename "$rt")" delete "$id" 2>/dev/null; do :; done
  t1=$EPOCHREALTIME
  us "$t0" "$t1"
}

run_once() { # binary id -> microseconds
  local rt=$1 id=$2 t0 t1
  t0=$EPOCHREALTIME
  "$rt" --root "$work/root-$(basename "$rt")" run --bundle "$work/bundle" "$id" </dev/null >/dev/null
  t1=$EPOCHREALTIME
  us "$t0" "$t1"
}

declare -A life runone
for rt in "$hull" /usr/sbin/runc /usr/bin/crun; do life[$rt]=""; runone[$rt]=""; done
for i in $(seq 1 "$runs"); do
  for rt in "$hull" /usr/sbin/runc /usr/bin/crun; do
    life[$rt]+="$(lifecycle "$rt" "bench-$i-$$") "
    runone[$rt]+="$(run_once "$rt" "bench-run-$i-$$") "
  done
done
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
printf '\nOCI lifecycle of a `true` container, median of %s (interleaved, same bundle)\n' "$runs"
printf '%-22s %16s %8s %12s %8s\n' "runtime" "create+start+" "ratio" "run" "ratio"
printf '%-22s %16s %8s %12s %8s\n' "" "wait+delete us" "to crun" "us" "to crun"
crun_life=$(med "${life[/usr/bin/crun]}")
crun_run=$(med "${runone[/usr/bin/crun]}")
for rt in "$hull" /usr/sbin/runc /usr/bin/crun; do
  l=$(med "${life[$rt]}"); r=$(med "${runone[$rt]}")
  printf '%-22s %16s %8s %12s %8s\n' "$(basename "$rt") ($("$rt" --version | head -1 | awk '{print $NF}'))" \
    "$l" "$(awk -v a="$l" -v b="$crun_life" 'BEGIN{printf "%.2f", a/b}')" \
    "$r" "$(awk -v a="$r" -v b="$crun_run" 'BEGIN{printf "%.2f", a/b}')"
done
