#!/usr/bin/env bash
# Hull on this host by hand, as the Kubernetes installer does it on a node:
# builds the payload, then installs (or upgrades to) it under /opt/hull and
# registers the runtime `hull` with containerd through a drop-in; or
# removes it. Running Hull pods are never disturbed: each keeps the version
# it started with until it ends.
# usage: node.sh install|remove|status [hull-node options...]
#   e.g. node.sh install --containerd-config /etc/containerd/config.toml
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?usage: node.sh install|remove|status [options]}
shift
case "$cmd" in
install)
  make -s image
  bash scripts/payload.sh build/payload
  exec target/release/hull-node install --payload build/payload "$@"
  ;;
remove | status) exec target/release/hull-node "$cmd" "$@" ;;
*) echo "usage: node.sh install|remove|status [options]" >&2; exit 2 ;;
esac
