#!/usr/bin/env bash
# One command: install every dependency, build Hull and its guest image,
# install the shim where containerd finds it, and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make install
# Says which accelerator Hull will use and why, and fails naming anything missing.
/usr/local/bin/hull-check
bash scripts/demo.sh
