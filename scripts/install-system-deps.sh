#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages virtsync needs. Idempotent and quiet when
# everything is present already.  Usage: install-system-deps.sh [demo|test]
#   demo: what building libvirt-python and the test driver need (no daemon)
#   test: also libvirtd, QEMU and the tools the end-to-end test hosts use
set -euo pipefail
what=${1:-test}
pkgs=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev git libvirt-clients libxml2-utils)  # virt-xml-validate + its xmllint: xmlPatches
if [ "$what" = test ]; then
  pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
         qemu-utils dnsmasq-base iptables iproute2 util-linux ovmf chromium git e2fsprogs
         genisoimage libarchive-tools p7zip-full iputils-ping curl age openssl
         # backups' copyTo with compress: zstd
         zstd
         # vTPM: swtpm is the emulator libvirt runs; swtpm-tools has swtpm_setup, which
         # libvirt calls to manufacture a new TPM's state.
         swtpm swtpm-tools
         # the monitoring kit's tests: a real Prometheus server and promtool (deploy/prometheus)
         prometheus
         # serve replicas coordinated through a real etcd (tooz's etcd3+http driver)
         etcd-server
         # Open vSwitch networks: the tests run ovsdb-server + ovs-vswitchd in userspace
         # (datapath_type=netdev) inside a test host's namespaces (tests/hosts/ovs.py)
         openvswitch-switch
         # `virtsync completion zsh|fish`: the scripts are checked and run by the shells themselves
         zsh fish
         # storage pools by type: a userspace iSCSI target (tgtd) and libvirt's libiscsi backend
         tgt libvirt-daemon-driver-storage-iscsi-direct)
  # virtiofs: Debian 12 has no virtiofsd package (bookworm-backports and trixie do); QEMU 7.2's
  # own C virtiofsd is in qemu-system-common, at /usr/lib/qemu/virtiofsd, and libvirt finds it
  # through /usr/share/qemu/vhost-user/50-qemu-virtiofsd.json. Take the package where it exists.
  if apt-cache show virtiofsd >/dev/null 2>&1; then pkgs+=(virtiofsd); fi
  # Secure boot: ovmf (above) ships OVMF_CODE_4M.secboot.fd / .ms.fd with OVMF_VARS_4M(.ms).fd
  # and the firmware descriptors /usr/share/qemu/firmware/{40,50,60}-edk2-x86_64*.json that
  # libvirt's <os firmware='efi'> auto-selection reads; nothing more is needed.
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
