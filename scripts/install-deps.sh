#!/usr/bin/env bash
# Installs every system package and helper binary Hull needs. Idempotent:
# packages already present and helpers already built are skipped.
set -euo pipefail

APT_PACKAGES=(
  qemu-system-x86 linux-image-amd64 containerd runc crun busybox-static
  cpio kmod iproute2 libseccomp-dev libcap-ng-dev pkg-config
  containernetworking-plugins protobuf-compiler python3 e2fsprogs util-linux
  erofs-utils cryptsetup-bin nftables mmdebstrap
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

# Pinned: Hull passes these helpers flags (virtiofsd's --modcaps,
# --announce-submounts) whose meaning is checked against these versions.
cargo_helper() {
  local crate=$1 version=$2 bin=$1 have
  have=$({ command -v "$bin" || echo "$HOME/.cargo/bin/$bin"; } | head -1)
  if [ -x "$have" ] && "$have" --version 2>/dev/null | grep -qw "$version"; then
    echo "install-deps: $bin $version present"
  else
    echo "install-deps: cargo install $crate@$version"
    cargo install --locked --force "$crate@$version"
  fi
}
cargo_helper vhost-device-vsock 0.3.0
cargo_helper virtiofsd 1.14.0
cargo_helper cargo-fuzz 0.13.2

echo "install-deps: done"
