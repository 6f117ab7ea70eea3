#!/usr/bin/env bash
# Builds the Xen test host the Xen end-to-end tests boot under QEMU (TCG): Xen 4.17, a Debian
# dom0 kernel and a whole dom0 root (xen-utils, libvirtd with its libxl driver) packed as an
# initramfs, from Debian packages only. See DESIGN.md, "A real Xen host, checked here end to end".
#
#   scripts/build-xen-host.sh [--force]
#
# Output, in $VIRTSYNC_XEN_HOST_DIR (default ~/.cache/virtsync-tests/xen-host/):
#   xen          the hypervisor (xen-hypervisor-4.17-amd64's xen-4.17-amd64.gz, gunzipped:
#                a 32-bit multiboot ELF that QEMU's -kernel boots)
#   vmlinuz      dom0 kernel (linux-image-amd64's current ABI package)
#   dom0.cpio.gz the dom0 root as an initramfs; its /init (written below) starts xenstored,
#                xen-init-dom0, xenconsoled (logging every domU console to
#                /var/log/xen/console/guest-NAME.log, each line also copied to dom0's console,
#                i.e. QEMU's serial port, prefixed "[domU NAME] "), sets eth0 to 10.0.2.15/24 and
#                runs libvirtd listening on TCP 16509 without authentication (test VM only)
#   VERSION      package versions + this script's hash + the test guest's VERSION hash
# The test guest of scripts/build-test-guest.sh sits inside dom0 at
# /var/lib/libvirt/boot/vmlinuz and /var/lib/libvirt/boot/initrd.img, so a PV domU can name them.
# Intermediate state lives in $out/work: the two .debs and the debootstrap root (about 540 MB),
# kept and reused while the package versions it was made from stay the same. The root comes
# from the suite's main archive only (debootstrap takes one suite), not from bookworm-security.
# This machine only downloads packages (apt-get download, dpkg -x); it installs debootstrap and
# cpio if missing, nothing else. Each step's duration goes to stderr; the output dir to stdout.
set -euo pipefail

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(dirname "$(dirname "$script")")
# Outside the checkout: a clean clone on the same machine reuses the image (it is rebuilt
# when its inputs change: see VERSION below).
out=${VIRTSYNC_XEN_HOST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/virtsync-tests/xen-host}
mirror=${VIRTSYNC_DEBIAN_MIRROR:-$("$repo/scripts/apt-source.sh" main)}
suite=bookworm
force=0
case ${1:-} in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

XEN_PKG=xen-hypervisor-4.17-amd64
INCLUDE=(xen-utils-4.17 xenstore-utils libvirt-daemon libvirt-daemon-driver-xen libvirt-clients
         iproute2 busybox kmod udev dnsmasq-base iptables passwd)
# Kernel module directories copied into dom0 (depmod runs in the chroot afterwards).
MODULE_DIRS=(kernel/drivers/xen kernel/drivers/net kernel/drivers/block kernel/net kernel/lib
             kernel/crypto kernel/arch)
LOAD_MODULES=(xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback bridge tun e1000)

die() { echo "build-xen-host: error: $*" >&2; exit 1; }
say() { echo "build-xen-host: $*" >&2; }

t_step=$EPOCHREALTIME
t_start=$t_step
step_done() {
  local now=$EPOCHREALTIME
  awk -v what="$1" -v a="$t_step" -v b="$now" \
    'BEGIN {printf "build-xen-host: %-44s %7.2f s\n", what, b - a}' >&2
  t_step=$now
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
for tool in apt-get apt-cache dpkg-deb flock sha256sum gzip; do
  command -v "$tool" >/dev/null || die "needs $tool (a Debian system with apt)"
done

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

# ---- the test guest (kernel + initrd put inside dom0) -------------------------------------
guest_dir=$(bash "$repo/scripts/build-test-guest.sh" | tail -1) \
  || die "scripts/build-test-guest.sh failed"
if [ ! -s "$guest_dir/vmlinuz" ] || [ ! -s "$guest_dir/initrd.img" ]; then die "test guest missing in $guest_dir"; fi
guest_hash=$(cat "$guest_dir/VERSION" "$guest_dir/vmlinuz" "$guest_dir/initrd.img" | sha256sum | cut -c1-16)
step_done "test guest ($guest_dir)"

# ---- versions ------------------------------------------------------------------------------
mirror_ok() {
  /usr/lib/apt/apt-helper download-file "$mirror/dists/$suite/Release" "$1/Release.probe" \
    >/dev/null 2>&1
}
resolve() {  # sets kernel_pkg, root_pkgs (name=version...), pkgs (name=version...)
  kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  [ -n "$kernel_pkg" ] || return 1
  local policy name version
  policy=$(apt-cache policy "$XEN_PKG" "$kernel_pkg" "${INCLUDE[@]}" 2>/dev/null) || return 1
  pkgs=(); root_pkgs=()
  for name in "$XEN_PKG" "$kernel_pkg" "${INCLUDE[@]}"; do
    version=$(awk -v p="$name:" '$1 == p {f=1; next} f && $1 == "Candidate:" {print $2; exit}' \
              <<<"$policy")
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then return 1; fi
    pkgs+=("$name=$version")
    case $name in "$XEN_PKG"|"$kernel_pkg") ;; *) root_pkgs+=("$name=$version") ;; esac
  done
}
if ! resolve; then
  say "apt's package lists lack $XEN_PKG or the kernel; running apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed: cannot reach the Debian package mirror"
  step_done "apt-get update"
  resolve || die "cannot resolve $XEN_PKG / linux-image-amd64 / ${INCLUDE[*]} with apt-cache \
(is $mirror reachable and bookworm main in /etc/apt/sources.list*?)"
fi
builder="builder $(sha256sum "$script" | cut -d' ' -f1)"
stamp=$(printf '%s\n' "$builder" "guest $guest_hash" "${pkgs[@]}")
step_done "resolve package versions"

if [ "$force" = 0 ] && [ -s "$out/xen" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/dom0.cpio.gz" ] \
   && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$stamp" ]; then
  say "up to date ($XEN_PKG, $kernel_pkg) in $out"
  echo "$out"
  exit 0
fi

# ---- tools -------------------------------------------------------------------------------
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v cpio >/dev/null || missing+=(cpio)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || die "cannot install ${missing[*]} (Debian package mirror unreachable?)"
  step_done "install ${missing[*]}"
fi

work=$out/work
mkdir -p "$work/debs"
mirror_ok "$work" || die "cannot reach the Debian package mirror $mirror (fetching dists/$suite/Release failed)"
rm -f "$work/Release.probe"

# ---- hypervisor and kernel: downloaded and unpacked, never installed ---------------------
download() {  # download NAME=VERSION...
  (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "$@") >"$work/apt.log" 2>&1 \
    || die "apt-get download $* failed (Debian package mirror unreachable?):
$(tail -5 "$work/apt.log")"
}
deb_of() { compgen -G "$work/debs/${1%%=*}_*.deb" | head -1; }
want=()
for p in "$XEN_PKG=${pkgs[0]#*=}" "${pkgs[1]}"; do
  f="$work/debs/${p%%=*}_${p#*=}_amd64.deb"
  f=${f//:/%3a}
  [ -s "$f" ] || want+=("$p")
done
if [ ${#want[@]} -gt 0 ]; then
  rm -f "$work/debs/$XEN_PKG"_*.deb "$work/debs/$kernel_pkg"_*.deb
  download "${want[@]}"
fi
step_done "download ${XEN_PKG} + $kernel_pkg"

rm -rf "$work/xenpkg" "$work/kernel"
dpkg -x "$(deb_of "$XEN_PKG")" "$work/xenpkg"
xengz=$(compgen -G "$work/xenpkg/boot/xen-4.17-amd64.gz" || compgen -G "$work/xenpkg/boot/xen-*.gz" | head -1) \
  || die "no xen-*.gz in $XEN_PKG"
gzip -dc "$xengz" >"$out/xen.new"
dpkg -x "$(deb_of "$kernel_pkg")" "$work/kernel"
kver=$(basename "$(compgen -G "$work/kernel/lib/modules/*" | head -1)")
if [ -z "$kver" ] || [ ! -s "$work/kernel/boot/vmlinuz-$kver" ]; then die "no kernel in $kernel_pkg"; fi
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.new"
step_done "unpack hypervisor + kernel $kver"

# ---- dom0 root (debootstrap, reused while its package versions stay the same) ------------
root=$work/root
root_stamp=$(printf '%s\n' "suite $suite" "${root_pkgs[@]}")
if [ "$force" = 1 ] || [ ! -x "$root/usr/sbin/libvirtd" ] || [ "$(cat "$work/root.stamp" 2>/dev/null)" != "$root_stamp" ]; then
  rm -rf "$root" "$work/root.stamp"
  include=$(IFS=,; echo "${INCLUDE[*]}")
  say "debootstrap $suite into $root (1-2 min)"
  debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 \
    || die "debootstrap failed (Debian package mirror unreachable?):
$(tail -8 "$work/debootstrap.log")"
  echo "$root_stamp" >"$work/root.stamp"
  step_done "debootstrap dom0 root"
else
  say "reusing the dom0 root in $root"
fi

# ---- dom0 customisation (idempotent) ------------------------------------------------------
rm -rf "$root/lib/modules"
mkdir -p "$root/lib/modules/$kver"
for d in "${MODULE_DIRS[@]}"; do
  [ -d "$work/kernel/lib/modules/$kver/$d" ] || continue
  mkdir -p "$root/lib/modules/$kver/$(dirname "$d")"
  cp -a "$work/kernel/lib/modules/$kver/$d" "$root/lib/modules/$kver/$d"
done
cp -a "$work/kernel/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
chroot "$root" depmod "$kver"
for m in "${LOAD_MODULES[@]}"; do
  chroot "$root" modprobe -S "$kver" --show-depends "$m" >/dev/null 2>&1 || die "module $m not in dom0"
done
step_done "copy kernel modules + depmod"

for u in libvirt-qemu libvirt-dnsmasq; do
  chroot "$root" getent passwd "$u" >/dev/null || chroot "$root" useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$u"
done
for g in kvm libvirt; do
  chroot "$root" getent group "$g" >/dev/null || chroot "$root" groupadd -r "$g"
done
mkdir -p "$root/var/lib/libvirt/boot" "$root/var/log/xen/console" "$root/var/lib/xen" "$root/proc/xen"
cp "$guest_dir/vmlinuz" "$root/var/lib/libvirt/boot/vmlinuz"
cp "$guest_dir/initrd.img" "$root/var/lib/libvirt/boot/initrd.img"
echo xen-test-host >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 xen-test-host\n' >"$root/etc/hosts"
cat >"$root/etc/libvirt/libvirtd.conf" <<'EOF'
# virtsync Xen test host (a throwaway VM reachable only through QEMU's user network).
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
auth_unix_rw = "none"
EOF
cat >"$root/init" <<'EOF'
#!/bin/sh
# dom0 init of the virtsync Xen test host (scripts/build-xen-host.sh).
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/xen /run/xenstored /run/libvirt /run/lock /var/lib/xenstored /var/log/xen/console /var/log/libvirt /tmp
exec </dev/console >/dev/console 2>&1
echo "xen-test-host: init"
mount -t xenfs xenfs /proc/xen
for m in @MODULES@; do modprobe "$m" || echo "xen-test-host: modprobe $m failed"; done
xenstored --pid-file=/run/xen/xenstored.pid
xen-init-dom0 || echo "xen-test-host: xen-init-dom0 failed"
xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
hostname xen-test-host
libvirtd --listen --daemon || echo "xen-test-host: libvirtd failed to start"
echo "xen-test-host: libvirtd started"
# Copy every domU console log to dom0's console (QEMU's serial port), prefixed by its name.
while :; do
  for f in /var/log/xen/console/guest-*.log; do
    [ -f "$f" ] || continue
    n=${f##*/guest-}; n=${n%.log}
    [ -e "/run/relay-$n" ] && continue
    : >"/run/relay-$n"
    (tail -n +1 -F "$f" 2>/dev/null | sed -u "s/^/[domU $n] /"; rm -f "/run/relay-$n") &
  done
  sleep 1
done
EOF
sed -i "s/@MODULES@/${LOAD_MODULES[*]}/" "$root/init"
chmod 755 "$root/init"
step_done "configure dom0"

# ---- pack ------------------------------------------------------------------------------------
(cd "$root" && find . -xdev \
   \( -path ./var/cache/apt/archives -o -path ./usr/share/doc -o -path ./usr/share/man \
      -o -path ./usr/share/locale -o -path ./usr/share/info -o -path ./var/lib/apt/lists \) -prune -o -print \
   | cpio -o -H newc --quiet | gzip -1) >"$out/dom0.cpio.gz.new"
step_done "pack dom0 initramfs ($(du -m "$out/dom0.cpio.gz.new" | cut -f1) MB)"

mv -f "$out/xen.new" "$out/xen"
mv -f "$out/vmlinuz.new" "$out/vmlinuz"
mv -f "$out/dom0.cpio.gz.new" "$out/dom0.cpio.gz"
rm -rf "$work/xenpkg" "$work/kernel"  # re-extracted (3-11 s) on a rebuild; the root is kept
echo "$stamp" >"$out/VERSION"
awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN {printf "build-xen-host: built in %.1f s\n", b - a}' >&2
echo "$out"
