#!/usr/bin/env bash
# Each guest flavour side by side: the initrd; the minimal rootfs image on
# pmem with dm-verity, on pmem with DAX (unchecked) and on blk with
# dm-verity; the distro image (systemd) on pmem with dm-verity. For each: `ctr run --rm true` (median of RUNS, VMs booted, not
# from hull-cache), then PODS idle `sleep` containers held IDLE_SECONDS, and
# the host PSS per pod of QEMU, the two helpers and the shim, with the
# guest's own view of its used memory (MemTotal - MemAvailable).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
runs=${RUNS:-3}
pods=${PODS:-5}
idle=${IDLE_SECONDS:-20}
sock=/run/hull-containerd/containerd.sock
ns=bench-guest
image=docker.io/hull/busybox:latest
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/containerd.sh start >/dev/null
ctr --address "$sock" -n "$ns" image import build/busybox.tar >/dev/null 2>&1 ||
  { bash scripts/busybox-image.sh build/busybox.tar >/dev/null &&
    ctr --address "$sock" -n "$ns" image import build/busybox.tar >/dev/null; }

# flavour name, then sed expressions over the installed configuration; the
# cache socket is pointed nowhere so every sandbox boots its VM.
flavours=(
  "initrd|s/^root = .*/root = \"initrd\"/"
  "image, pmem, verity|s/^root = .*/root = \"image\"/;s/^device = .*/device = \"pmem\"/;s/^verity = .*/verity = true/"
  "image, pmem, DAX|s/^root = .*/root = \"image\"/;s/^device = .*/device = \"pmem\"/;s/^verity = .*/verity = false/"
  "image, blk, verity|s/^root = .*/root = \"image\"/;s/^device = .*/device = \"blk\"/;s/^verity = .*/verity = true/"
  "distro, pmem, verity|s/^root = .*/root = \"image\"/;s/^device = .*/device = \"pmem\"/;s/^verity = .*/verity = true/;s#^image = .*#image = \"/usr/local/share/hull/rootfs-distro.img\"#"
)

pss_kb() { # pid... -> summed PSS
  local t=0
  for p in "$@"; do t=$((t + $(awk '$1 == "Pss:" {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done
  echo "$t"
}
pids_of() { pgrep -f -- "$1" || true; }
# QEMU's PSS split by mapping, kB: "guest-RAM TCG-code rest". Guest RAM is
# the memfd backend; TCG's translated code is its one writable and
# executable anonymous mapping; the rest is QEMU's heap, its threads, its
# binaries and the kernel and initrd files it keeps mapped.
qemu_split_kb() { # pid
  awk '/^[0-9a-f]+-[0-9a-f]+ / {k = ($6 ~ /memfd:memory-backend/) ? "g" : ($2 ~ /^rwx/ && $6 == "") ? "t" : "o"}
       $1 == "Pss:" {s[k] += $2}
       END {printf "%d %d %d\n", s["g"], s["t"], s["o"]}' "/proc/$1/smaps" 2>/dev/null || echo "0 0 0"
}

measure() { # name sed-expr
  local name=$1 cfg="$work/guest-$RANDOM.toml"
  sed -e "$2" -e 's#^socket = .*#socket = "/nonexistent/hull-cache.sock"#' /etc/hull/configuration.toml > "$cfg"
  local opts=(--runtime io.containerd.hull.v2 --runtime-config-path "$cfg")
  local i t0 times=()
  for i in $(seq 1 "$runs"); do
    t0=$(date +%s%N)
    ctr --address "$sock" -n "$ns" run --rm "${opts[@]}" "$image" "gb-true-$$-$i" true >/dev/null
    times+=($(( ($(date +%s%N) - t0) / 1000000 )))
  done
  local ids=()
  for i in $(seq 1 "$pods"); do
    ids+=("gb-idle-$$-$i")
    ctr --address "$sock" -n "$ns" run -d "${opts[@]}" "$image" "gb-idle-$$-$i" sleep 100000 >/dev/null
  done
  sleep "$idle"
  local qemu=0 helpers=0 shim=0 guest=0 ram=0 tcg=0 other=0 id q g t o
  for id in "${ids[@]}"; do
    q=$(pids_of "qemu-system.*hull-$id ")
    qemu=$((qemu + $(pss_kb $q)))
    read -r g t o < <(qemu_split_kb $q)
    ram=$((ram + g)) tcg=$((tcg + t)) other=$((other + o))
    helpers=$((helpers + $(pss_kb $(pids_of "vhost-device-vsock.*/$id/") $(pids_of "virtiofsd.*/$id/"))))
    shim=$((shim + $(pss_kb $(pids_of "containerd-shim-hull-v2 .*-id $id"))))
    guest=$((guest + $(ctr --address "$sock" -n "$ns" task exec --exec-id m "$id" \
      awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t - a}' /proc/meminfo)))
  done
  for id in "${ids[@]}"; do stop_task "$id"; done
  local n=${#ids[@]}
  printf '%-22s %9s %9s %9s %9s %9s %11s %10s %9s %9s\n' "$name" "$(printf '%s\n' "${times[@]}" | median)" \
    $((qemu / n / 1024)) $((helpers / n / 1024)) $((shim / n / 1024)) \
    $(((qemu + helpers + shim) / n / 1024)) $((guest / n / 1024)) \
    $((ram / n / 1024)) $((tcg / n / 1024)) $((other / n / 1024))
}

printf '\nguest flavours: boot (ctr run --rm true, median of %s, VM booted) and host PSS per idle pod (%s pods, %s s idle), MiB\n' "$runs" "$pods" "$idle"
printf '%-22s %9s %9s %9s %9s %9s %11s %10s %9s %9s\n' "guest" "boot ms" "QEMU" "helpers" "shim" "total" "guest used" \
  "QEMU: RAM" "TCG code" "rest"
for f in "${flavours[@]}"; do
  measure "${f%%|*}" "${f#*|}"
done
