#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages virtsync needs. Idempotent and quiet when
# everything is present already.  Usage: install-system-deps.sh [demo|test]
#   demo: what building libvirt-python and the test driver need (no daemon)
#   test: also libvirtd, QEMU and the tools the end-to-end test hosts use
set -euo pipefail
what=${1:-test}
pkgs=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev git)
if [ "$what" = test ]; then
  pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
         qemu-utils dnsmasq-base iptables iproute2 util-linux ovmf chromium git e2fsprogs
         genisoimage libarchive-tools p7zip-full iputils-ping)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$what" = test ]; then
  # libvirtd's QEMU driver refuses to start without this user (DESIGN.md).
  if ! id libvirt-qemu >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
  fi
fi
