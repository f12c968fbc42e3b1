#!/usr/bin/env bash
# Installs every system package and helper binary Hull needs. Idempotent:
# packages already present and helpers already built are skipped.
set -euo pipefail

APT_PACKAGES=(
  qemu-system-x86 linux-image-amd64 containerd runc crun busybox-static
  cpio kmod iproute2 libseccomp-dev libcap-ng-dev pkg-config
  containernetworking-plugins protobuf-compiler python3 e2fsprogs util-linux
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: apt packages present"
fi

cargo_helper() {
  local crate=$1 bin=$2
  if command -v "$bin" >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/$bin" ]; then
    echo "install-deps: $bin present"
  else
    echo "install-deps: cargo install $crate"
    cargo install --locked "$crate"
  fi
}
cargo_helper vhost-device-vsock vhost-device-vsock
cargo_helper virtiofsd virtiofsd

echo "install-deps: done"
