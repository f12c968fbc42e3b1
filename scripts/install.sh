#!/usr/bin/env bash
# Installs the built shim, guest image, helpers and a default configuration.
# Idempotent: an existing /etc/hull/configuration.toml is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
install -D -m 755 target/release/containerd-shim-hull-v2 /usr/local/bin/containerd-shim-hull-v2
install -D -m 755 target/release/hull-cache /usr/local/bin/hull-cache
install -D -m 755 target/release/hull-check /usr/local/bin/hull-check
install -D -m 755 target/release/hull-agentctl /usr/local/bin/hull-agentctl
install -D -m 755 target/release/hull-jail /usr/local/bin/hull-jail
install -D -m 644 build/guest/vmlinux /usr/local/share/hull/vmlinux
install -D -m 644 build/guest/initrd.img /usr/local/share/hull/initrd.img
install -D -m 644 build/guest-debug/initrd.img /usr/local/share/hull/initrd-debug.img
install -D -m 644 build/guest/boot-initrd.img /usr/local/share/hull/boot-initrd.img
# Running VMs map the rootfs image: it is replaced by a rename, never
# rewritten in place (a VM would see its pages change under it).
for f in rootfs.img rootfs.img.verity rootfs-distro.img rootfs-distro.img.verity rootfs-distro.manifest; do
  [ -f "build/guest/$f" ] || continue
  install -m 644 "build/guest/$f" "/usr/local/share/hull/.$f.new"
  mv -f "/usr/local/share/hull/.$f.new" "/usr/local/share/hull/$f"
done
for helper in vhost-device-vsock virtiofsd; do
  src=$(command -v "$helper" || echo "$HOME/.cargo/bin/$helper")
  [ "$src" = "/usr/local/bin/$helper" ] || install -m 755 "$src" "/usr/local/bin/$helper"
done
if [ ! -f /etc/hull/configuration.toml ]; then
  install -D -m 644 config/configuration.toml /etc/hull/configuration.toml
  echo "install: wrote /etc/hull/configuration.toml"
fi
# A running hull-cache is restarted: its waiting VMs were booted from the
# guest image and binaries just replaced.
if /usr/local/bin/hull-cache status >/dev/null 2>&1; then
  bash scripts/cache.sh restart
fi
echo "install: containerd-shim-hull-v2, hull-cache, hull-check, hull-agentctl, hull-jail, guest image and helpers installed"
