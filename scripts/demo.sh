#!/usr/bin/env bash
# The main job: a container in its own VM through a private containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
sock=$(scripts/containerd.sh address)
scripts/containerd.sh start
bash scripts/busybox-image.sh build/busybox.tar >/dev/null
ctr --address "$sock" -n hull image import build/busybox.tar >/dev/null
echo "demo: host kernel:  $(uname -r)"
echo -n "demo: guest kernel: "
ctr --address "$sock" -n hull run --rm --runtime io.containerd.hull.v2 docker.io/hull/busybox:latest "hull-demo-$$" uname -r
