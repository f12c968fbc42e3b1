#!/usr/bin/env bash
# Gathers what a node needs into one directory (the payload hull-node
# installs, and the installer image's content): the shim, hull-check and
# hull-node, the helpers, the guest kernel and initrd, and a configuration.
# usage: payload.sh [DIR]   (default build/payload; after `make image`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/payload}
rm -rf "$out"
mkdir -p "$out/bin" "$out/share"
for b in containerd-shim-hull-v2 hull-check hull-node; do
  install -m 755 "target/release/$b" "$out/bin/$b"
done
for helper in vhost-device-vsock virtiofsd; do
  src=$(command -v "$helper" || echo "$HOME/.cargo/bin/$helper")
  install -m 755 "$src" "$out/bin/$helper"
done
install -m 644 build/guest/vmlinux "$out/share/vmlinux"
install -m 644 build/guest/initrd.img "$out/share/initrd.img"
install -m 644 config/configuration.toml "$out/configuration.toml"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
echo "$version" > "$out/VERSION"
echo "payload: $out (version $version)"
