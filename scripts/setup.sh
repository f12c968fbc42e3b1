#!/usr/bin/env bash
# One command: install every dependency, build Hull and its guest image,
# install the shim where containerd finds it, start hull-cache, and run
# the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make install
# Says which accelerator Hull will use and why, and fails naming anything missing.
/usr/local/bin/hull-check
# hull-cache keeps booted VMs for the sandboxes to come (docs/cache.md).
bash scripts/cache.sh start
bash scripts/cache.sh wait-full 120
bash scripts/demo.sh
