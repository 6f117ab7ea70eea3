#!/usr/bin/env bash
# Builds the Linux test guest the boot tests run: a Debian kernel and a small initramfs
# (busybox, qemu-guest-agent, the virtio/Xen-front/ext4/TPM/virtiofs modules), from Debian
# packages only.
#
#   scripts/build-test-guest.sh [--force]
#
# Output, in $VIRTSYNC_TEST_GUEST_DIR (default ~/.cache/virtsync-tests/test-guest/):
#   vmlinuz      the kernel of linux-image-amd64's current ABI package (a bzImage)
#   vmlinux      the same kernel as an uncompressed ELF, booted through its PVH entry: no
#                decompressor, ~3 s less to a working agent under TCG (absent if the
#                kernel's payload cannot be unpacked: then use vmlinuz)
#   initrd.img   gzipped newc cpio; its /init is written below
#   VERSION      the package versions and this script's hash the files were built from
# A rebuild happens only when VERSION would change (new package versions, or a new
# version of this script); otherwise the script returns at once. Builds run in a temporary
# directory and their results are renamed into place; concurrent runs serialise on a lock.
#
# Guest behaviour (see the /init below): prints "virtsync-test-guest: booted" on its
# console (console=ttyS0 under KVM/QEMU, console=hvc0 as a Xen PV domU), mounts the first
# ext4 virtio/Xen disk at /data (others at /mnt/DEV), takes DHCP leases on every ethN,
# runs qemu-ga on /dev/virtio-ports/org.qemu.guest_agent.0, and powers off on the ACPI
# power button, on agent guest-shutdown and on a Xen shutdown request. A vTPM shows up as
# /dev/tpm0 (and /dev/tpmrm0); a virtiofs share is mounted on demand, e.g. through the agent:
# mkdir -p /mnt/share && mount -t virtiofs TAG /mnt/share.
# Kernel command line options: virtsync.hostname=NAME (default virtsync-test-guest).
set -euo pipefail

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(dirname "$(dirname "$script")")
out=${VIRTSYNC_TEST_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/virtsync-tests/test-guest}
force=0
case ${1:-} in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# Modules the guest loads (with their dependencies, found from the modules' own
# depends= fields). A missing required module fails the build; optional ones may be absent.
REQUIRED_MODULES=(virtio_pci virtio_console virtio_net virtio_blk ext4 crc32c_generic)
# Devices: tpm_crb/tpm_tis(_core) give /dev/tpm0 for a vTPM (<tpm model='tpm-crb'|'tpm-tis'>;
# built into Debian's kernel, then skipped), virtiofs (+ fuse) mounts <filesystem> shares.
OPTIONAL_MODULES=(crc32c_intel virtio_balloon virtio_rng xen_blkfront xen_netfront button evdev
                  tpm_crb tpm_tis tpm_tis_core virtiofs)
# Their usual dependencies, extracted in the same pass so a second pass is rarely needed.
LIKELY_DEPS=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev net_failover failover
             jbd2 mbcache crc16 libcrc32c tpm fuse)

die() { echo "build-test-guest: error: $*" >&2; exit 1; }
say() { echo "build-test-guest: $*" >&2; }

t_start=$EPOCHREALTIME
t_step=$t_start
step_done() {  # step_done WHAT: print how long the step since the last one took
  local now=$EPOCHREALTIME
  awk -v what="$1" -v a="$t_step" -v b="$now" \
    'BEGIN {printf "build-test-guest: %-44s %6.2f s\n", what, b - a}' >&2
  t_step=$now
}

for tool in apt-get apt-cache dpkg-deb tar flock sha256sum; do
  command -v "$tool" >/dev/null || die "needs $tool (a Debian system with apt)"
done

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

# ---- which packages, which versions -----------------------------------------------------

resolve() {  # sets kernel_pkg and pkgs (name=version ...); fails without package lists
  kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  [ -n "$kernel_pkg" ] || return 1
  local libs
  # qemu-ga's shared libraries come from its dependency packages, not from this machine.
  libs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
           --no-replaces --no-enhances --no-pre-depends qemu-guest-agent 2>/dev/null \
         | grep -v -e '^ ' -e '^<' | sort -u) || return 1
  [ -n "$libs" ] || return 1
  # linux-image-amd64 too: the fast path's check and the report name it.
  local names=(linux-image-amd64 "$kernel_pkg" busybox-static) policy name version
  mapfile -t -O 3 names <<<"$libs"
  policy=$(apt-cache policy "${names[@]}" 2>/dev/null) || return 1
  pkgs=()
  for name in "${names[@]}"; do
    version=$(awk -v p="$name:" '$1 == p {f=1; next} f && $1 == "Candidate:" {print $2; exit}' \
              <<<"$policy")
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then return 1; fi
    pkgs+=("$name=$version")
  done
}

lists_updated=0
update_lists() {
  [ "$lists_updated" = 0 ] || return 1
  lists_updated=1
  say "apt's package lists lack what is needed; running apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed: cannot reach a Debian mirror?"
  step_done "apt-get update"
}

builder="builder $(sha256sum "$script" | cut -d' ' -f1)"
have_build() {
  [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/VERSION" ]
}
# Fast path, no apt at all: candidate versions change only when apt's lists do (apt-cache
# takes 1-10 s a call here, as Docker-style apt configs disable its binary cache).
lists=/var/lib/apt/lists
if [ "$force" = 0 ] && have_build && [ "$(head -1 "$out/VERSION")" = "$builder" ] \
   && [ -z "$(find "$lists" -maxdepth 1 -name '*Packages*' -newer "$out/VERSION" 2>/dev/null | head -1)" ] \
   && [ -n "$(find "$lists" -maxdepth 1 -name '*Packages*' 2>/dev/null | head -1)" ]; then
  say "up to date ($(sed -n 's/^\(linux-image-[0-9][^=]*\)=.*/\1/p' "$out/VERSION")) in $out"
  echo "$out"
  exit 0
fi

if ! resolve; then
  if [ "$force" = 0 ] && have_build; then
    # Offline, or apt cannot tell: keep what was built rather than fail.
    say "warning: cannot resolve package versions with apt-cache; using the cached build"
    echo "$out"
    exit 0
  fi
  if [ "$(id -u)" = 0 ]; then update_lists || true; fi
  resolve || die "cannot resolve the packages (linux-image-amd64, busybox-static, qemu-guest-agent \
and its libraries) with apt-cache: no package lists? run apt-get update as root"
fi
stamp="$builder
$(printf '%s\n' "${pkgs[@]}")"
step_done "resolve package versions"

if [ "$force" = 0 ] && have_build && [ "$(cat "$out/VERSION")" = "$stamp" ]; then
  touch "$out/VERSION"  # newer than the lists again: the fast path above applies next time
  say "up to date ($kernel_pkg) in $out"
  echo "$out"
  exit 0
fi

# ---- build ---------------------------------------------------------------------------------

# In memory where possible: under I/O load, writing ~100 MB of packages to disk takes long.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then tmp_base=/dev/shm; else tmp_base=${TMPDIR:-/tmp}; fi
work=$(mktemp -d "$tmp_base/virtsync-test-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
debs=$work/debs pkgroot=$work/pkgroot kroot=$work/kernel stage=$work/stage
mkdir -p "$debs" "$pkgroot" "$kroot" "$stage"

# Downloaded packages are kept in $out/debs (the current set only), so a rebuild for a new
# version of this script downloads nothing.
mkdir -p "$out/debs"
downloaded=0
download() {
  local wanted=() p name version have
  for p in "${pkgs[@]}"; do
    case $p in linux-image-amd64=*) continue ;; esac  # in the stamp only
    name=${p%%=*} version=${p#*=}
    have=$(ls "$out/debs/${name}_${version//:/%3a}_"*.deb 2>/dev/null | head -1)
    if [ -n "$have" ]; then cp "$have" "$debs/"; else wanted+=("$p"); fi
  done
  downloaded=${#wanted[@]}
  [ ${#wanted[@]} -gt 0 ] || return 0
  # Root's apt would hand the download to user _apt, who cannot write into our 0700 dir.
  (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${wanted[@]}") >"$work/apt.log" 2>&1
}
if ! download; then
  # Stale lists name versions the mirror no longer has (404): update them and retry once.
  # Other failures (no network, no mirror) gain nothing from apt-get update.
  if [ "$(id -u)" = 0 ] && grep -qE '404|Unable to locate|Can.t select|no installation candidate' "$work/apt.log" \
     && update_lists; then
    resolve || die "packages vanished from apt's lists after apt-get update"
    download || die "apt-get download failed after apt-get update:
$(tail -5 "$work/apt.log")"
  else
    die "apt-get download failed (cannot reach a Debian mirror?):
$(tail -5 "$work/apt.log")"
  fi
fi
step_done "packages: $(ls "$debs" | wc -l), $(du -sm "$debs" | cut -f1) MB, $downloaded downloaded"

# Everything but the kernel in full (small); of the kernel only the image and the modules
# needed: all of its 390 MB of modules take 10-20 s to write out.
for deb in "$debs"/*.deb; do
  case $(basename "$deb") in linux-image-*) continue ;; esac
  dpkg-deb -x "$deb" "$pkgroot"
done
busybox=$pkgroot/bin/busybox
[ -x "$busybox" ] || die "busybox-static has no /bin/busybox"
step_done "unpack busybox, qemu-ga and libraries"

kdeb=$(ls "$debs"/"$kernel_pkg"_*.deb)
kextract() {  # kextract PATTERN...: extract kernel package members matching the patterns
  dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$kroot" --wildcards "$@" 2>/dev/null || true
}
patterns=('./boot/vmlinuz-*' './boot/config-*' './lib/modules/*/modules.order' './lib/modules/*/modules.builtin')
for m in "${REQUIRED_MODULES[@]}" "${OPTIONAL_MODULES[@]}" "${LIKELY_DEPS[@]}"; do
  patterns+=("./lib/modules/*/${m}.ko" "./lib/modules/*/${m//_/-}.ko")
done
kextract "${patterns[@]}"
vmlinuz=$(ls "$kroot"/boot/vmlinuz-* 2>/dev/null | head -1)
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $(basename "$kdeb")"
kver=${vmlinuz##*/vmlinuz-}
kmod=$kroot/lib/modules/$kver
[ -s "$kmod/modules.order" ] || die "no modules.order in $(basename "$kdeb")"

declare -A modpath=() builtin=()
while read -r p; do n=${p##*/}; n=${n%.ko*}; modpath[${n//-/_}]=$p; done <"$kmod/modules.order"
while read -r p; do n=${p##*/}; n=${n%.ko*}; builtin[${n//-/_}]=1; done <"$kmod/modules.builtin"

# The closure of the wanted modules over depends=, extracting what the first pass missed.
declare -A need=()
queue=("${REQUIRED_MODULES[@]}" "${OPTIONAL_MODULES[@]}")
declare -A required=()
for m in "${REQUIRED_MODULES[@]}"; do required[$m]=1; done
for _pass in 1 2 3 4 5 6; do
  missing=()
  next=()
  for m in "${queue[@]}"; do
    [ -z "${need[$m]:-}" ] || continue
    if [ -n "${builtin[$m]:-}" ]; then continue; fi
    p=${modpath[$m]:-}
    if [ -z "$p" ]; then
      [ -z "${required[$m]:-}" ] || die "kernel $kver has no module $m"
      continue
    fi
    if [ ! -f "$kmod/$p" ]; then missing+=("./lib/modules/$kver/$p"); next+=("$m"); continue; fi
    need[$m]=$p
    deps=$(tr '\0' '\n' <"$kmod/$p" | sed -n 's/^depends=//p' | head -1)
    for d in ${deps//,/ }; do next+=("${d//-/_}"); done
  done
  [ ${#next[@]} -gt 0 ] || break
  [ ${#missing[@]} -eq 0 ] || kextract "${missing[@]}"
  queue=("${next[@]}")
done
[ ${#next[@]} -eq 0 ] || die "could not resolve module dependencies: ${next[*]}"
step_done "unpack kernel $kver (${#need[@]} modules)"

# vmlinux: the kernel's uncompressed ELF, taken out of the bzImage. QEMU boots it through
# its PVH entry (CONFIG_PVH), skipping the decompressor, which under TCG takes about 3 s of
# the ~7 s to a working agent. Its payload's place is in the bzImage's setup header.
extract_vmlinux() {
  grep -qx 'CONFIG_PVH=y' "$kroot"/boot/config-* 2>/dev/null || { say "kernel lacks CONFIG_PVH"; return 1; }
  local setup_sects payload_offset payload_length start magic dec
  setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$vmlinuz" | tr -d ' ')
  [ "$setup_sects" != 0 ] || setup_sects=4
  payload_offset=$(od -An -tu4 -j $((0x248)) -N4 "$vmlinuz" | tr -d ' ')
  payload_length=$(od -An -tu4 -j $((0x24c)) -N4 "$vmlinuz" | tr -d ' ')
  start=$(( (setup_sects + 1) * 512 + payload_offset ))
  magic=$(od -An -tx1 -j "$start" -N6 "$vmlinuz" | tr -d ' \n')
  # xz and zstd payloads end with the uncompressed size (4 bytes), which is no part of the stream.
  case $magic in
    # busybox's unxz lacks the x86 BCJ filter kernels use ("corrupted data").
    fd377a585a00) command -v xz >/dev/null || { say "no xz to unpack the kernel"; return 1; }
                  dec=(xz -dcq); payload_length=$((payload_length - 4)) ;;
    28b52ffd*) command -v zstd >/dev/null || { say "no zstd to unpack the kernel"; return 1; }
               dec=(zstd -dcq); payload_length=$((payload_length - 4)) ;;
    1f8b*) dec=("$busybox" gunzip -c) ;;
    *) say "unknown kernel payload compression (magic $magic)"; return 1 ;;
  esac
  # head first: tail -c +N | head -c LEN would kill tail with SIGPIPE (fatal under pipefail).
  head -c $((start + payload_length)) "$vmlinuz" | tail -c "$payload_length" | "${dec[@]}" >"$work/vmlinux" \
    || { say "cannot unpack the kernel's payload"; return 1; }
  [ "$(od -An -tx1 -N4 "$work/vmlinux" | tr -d ' \n')" = 7f454c46 ] || { say "payload is no ELF"; return 1; }
}
if ! extract_vmlinux; then
  say "warning: no vmlinux for PVH boot; tests boot vmlinuz (slower under TCG)"
  rm -f "$work/vmlinux"
fi
[ -f "$work/vmlinux" ] && step_done "vmlinux for PVH boot ($(( $(stat -c %s "$work/vmlinux") >> 20 )) MB)"

# ---- the initramfs tree --------------------------------------------------------------------

cd "$stage"
mkdir -p bin sbin usr/bin usr/sbin etc/udhcpc etc/acpi/PWRF lib64 lib/x86_64-linux-gnu \
         dev proc sys run tmp data mnt var/log "lib/modules/$kver"
ln -s ../run var/run
chmod 1777 tmp
cp "$busybox" bin/busybox
"$busybox" --list-full | while read -r applet; do
  [ -e "$applet" ] || ln -s /bin/busybox "$applet"
done
mknod -m 600 dev/console c 5 1 2>/dev/null || true  # else the kernel has no console for /init

cp "$pkgroot/usr/sbin/qemu-ga" usr/sbin/qemu-ga
ldso=$pkgroot/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[ -e "$ldso" ] || die "libc6 has no ld-linux-x86-64.so.2"
libpath=$pkgroot/lib/x86_64-linux-gnu:$pkgroot/usr/lib/x86_64-linux-gnu
# The packages' own ld.so lists qemu-ga's libraries as found in the packages.
libs=$("$ldso" --library-path "$libpath" --list "$pkgroot/usr/sbin/qemu-ga") \
  || die "cannot list qemu-ga's libraries with the packaged ld.so"
if grep -q 'not found' <<<"$libs"; then
  die "qemu-ga needs libraries that its dependency packages lack:
$(grep 'not found' <<<"$libs")"
fi
while read -r soname arrow path _; do
  [ "$arrow" = "=>" ] && [ -n "$path" ] || continue
  case $path in
    "$pkgroot"/*) ;;
    *) die "qemu-ga's $soname resolves outside the unpacked packages ($path): a dependency \
package is missing from the download" ;;
  esac
  case $soname in */ld-linux-*) continue ;; esac  # the interpreter, copied below
  cp -L "$path" "lib/x86_64-linux-gnu/$soname"
done <<<"$libs"
cp -L "$ldso" lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 lib64/ld-linux-x86-64.so.2

for m in "${!need[@]}"; do
  p=${need[$m]}
  mkdir -p "lib/modules/$kver/$(dirname "$p")"
  cp "$kmod/$p" "lib/modules/$kver/$p"
done
cp "$kmod/modules.order" "$kmod/modules.builtin" "lib/modules/$kver/"
"$busybox" depmod -b "$stage" "$kver" || die "busybox depmod failed"
# Loaded in this order by /init; modprobe adds the dependencies.
printf '%s\n' crc32c_generic crc32c_intel virtio_pci virtio_console virtio_blk virtio_net \
  virtio_balloon virtio_rng ext4 xen_blkfront xen_netfront button evdev \
  tpm_crb tpm_tis virtiofs >etc/modules

bb_version=$("$busybox" 2>&1 | awk 'NR == 1 {print $2}' || true)
cat >etc/os-release <<EOF
NAME="virtsync test guest"
ID=virtsync-test-guest
VERSION_ID="$kver"
PRETTY_NAME="virtsync test guest (Debian kernel $kver, busybox $bb_version)"
EOF
echo virtsync-test-guest >etc/hostname
printf 'root:x:0:0:root:/:/bin/sh\n' >etc/passwd
printf 'root:x:0:\n' >etc/group
printf '%s\n' "$stamp" >etc/virtsync-test-guest.version

cat >init <<'EOF'
#!/bin/sh
# /init of the virtsync test guest: PID 1 of an initramfs. Built by scripts/build-test-guest.sh.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/virtio-ports
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run

say() { echo "virtsync-test-guest: $*"; }
cmdline_arg() {  # cmdline_arg KEY: value of KEY=value on the kernel command line
  for arg in $(cat /proc/cmdline); do
    case $arg in "$1"=*) echo "${arg#*=}"; return 0 ;; esac
  done
  return 1
}
say "starting (kernel $(uname -r))"
hostname "$(cmdline_arg virtsync.hostname || cat /etc/hostname)"

# Absent modules (Xen fronts on KVM, virtio on Xen) fail to load: that is expected.
while read -r m; do modprobe -q "$m" 2>/dev/null; done </etc/modules

# Xen front devices connect asynchronously over xenbus: give them a few seconds.
if [ -d /sys/bus/xen/devices ]; then
  i=0
  while [ $i -lt 50 ]; do
    pending=0
    for d in /sys/bus/xen/devices/vbd-* /sys/bus/xen/devices/vif-*; do
      [ -e "$d" ] || continue
      case $d in *vbd-*) sub=block ;; *) sub=net ;; esac
      ls "$d/$sub" >/dev/null 2>&1 || pending=1
    done
    [ $pending = 0 ] && break
    sleep 0.1; i=$((i + 1))
  done
fi

# Data disks: the first ext4 file system on a virtio or Xen disk at /data, others at /mnt/DEV.
is_ext() {  # the ext2/3/4 superblock magic 0xEF53 at byte 1080
  [ "$(dd if="$1" bs=8 skip=135 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n' | cut -c1-4)" = 53ef ]
}
data=
for blk in /sys/block/vd* /sys/block/xvd*; do
  [ -e "$blk" ] || continue
  disk=${blk##*/}
  for dev in $disk $(cd "$blk" && ls -d "$disk"* 2>/dev/null); do
    is_ext "/dev/$dev" || continue
    if [ -n "$data" ]; then target=/mnt/$dev; else target=/data; fi
    mkdir -p "$target"
    if mount -t ext4 "/dev/$dev" "$target"; then
      say "mounted /dev/$dev at $target"
      data=${data:-/dev/$dev}
    else
      say "cannot mount /dev/$dev (ext4) at $target"
    fi
  done
done

ip link set lo up
for nic in /sys/class/net/eth*; do
  [ -e "$nic" ] || continue
  nic=${nic##*/}
  ip link set "$nic" up
  udhcpc -f -i "$nic" -s /etc/udhcpc/default.script -t 10 -T 1 -A 2 \
    -x "hostname:$(hostname)" -p "/run/udhcpc.$nic.pid" >/dev/null 2>&1 &
done

[ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /dev/null

say "booted (hostname $(hostname))"
exec /bin/busybox init
EOF

cat >etc/inittab <<'EOF'
::respawn:/sbin/guest-agent
::ctrlaltdel:/sbin/poweroff
::shutdown:/etc/rc.shutdown
EOF

cat >sbin/guest-agent <<'EOF'
#!/bin/sh
# Links /dev/virtio-ports/NAME (no udev here) and runs qemu-ga on the agent's port. The
# ports appear asynchronously after virtio_console loads; init respawns this script.
port=/dev/virtio-ports/org.qemu.guest_agent.0
i=0
while :; do
  for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] || continue
    name=$(cat "$p/name")
    [ -n "$name" ] && ln -sf "../${p##*/}" "/dev/virtio-ports/$name"
  done
  [ -e "$port" ] && break
  # No channel (a Xen domU, or a guest defined without one): look again now and then.
  if [ $i -lt 100 ]; then sleep 0.05; else sleep 5; fi
  i=$((i + 1))
done
mkdir -p /run/qemu-ga
echo "virtsync-test-guest: starting qemu-ga on $port"
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run/qemu-ga
echo "virtsync-test-guest: qemu-ga exited ($?)"
sleep 1  # init respawns this script at once
EOF

cat >etc/udhcpc/default.script <<'EOF'
#!/bin/sh
# udhcpc's hook (busybox looks here by default on Debian; /init also passes -s).
case $1 in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" ${broadcast:+broadcast $broadcast}
    if [ -n "$router" ]; then
      while ip route del default dev "$interface" 2>/dev/null; do :; done
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    [ "$1" = bound ] && echo "virtsync-test-guest: lease $ip on $interface" >/dev/console
    ;;
esac
exit 0
EOF

cat >sbin/shutdown <<'EOF'
#!/bin/sh
# What qemu-ga's guest-shutdown runs: shutdown -h -P|-H|-r +0 MESSAGE.
action=poweroff
for a in "$@"; do
  case $a in -r) action=reboot ;; -H) action=halt ;; esac
done
exec /sbin/$action
EOF

cat >etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
# busybox acpid runs this on the ACPI power button (virsh shutdown --mode acpi).
exec /sbin/poweroff
EOF

cat >etc/rc.shutdown <<'EOF'
#!/bin/sh
echo "virtsync-test-guest: shutting down"
sync
for m in $(awk '$2 ~ "^/(data|mnt/)" {print $2}' /proc/mounts); do umount "$m" || mount -o remount,ro "$m"; done
sync
EOF
chmod 755 init sbin/guest-agent sbin/shutdown etc/udhcpc/default.script etc/acpi/PWRF/00000080 \
  etc/rc.shutdown
step_done "initramfs tree"

# busybox's cpio: the host may have no cpio. Sorted for stable archives.
if command -v gzip >/dev/null; then gz=(gzip -6n); else gz=("$busybox" gzip -6); fi
find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null | "${gz[@]}" >"$work/initrd.img"
cd "$out"
step_done "pack initrd ($(du -k "$work/initrd.img" | cut -f1) KiB)"

# Copied next to the results, then each renamed into place (atomic: a reader holding the
# old file keeps it whole). VERSION goes first and comes back last, so an interrupted
# update never looks complete.
cp "$vmlinuz" "$out/.vmlinuz.new"
cp "$work/initrd.img" "$out/.initrd.img.new"
printf '%s\n' "$stamp" >"$out/.VERSION.new"
rm -f "$out/VERSION"
if [ -f "$work/vmlinux" ]; then
  cp "$work/vmlinux" "$out/.vmlinux.new"
  mv -f "$out/.vmlinux.new" "$out/vmlinux"
else
  rm -f "$out/vmlinux"
fi
mv -f "$out/.vmlinuz.new" "$out/vmlinuz"
mv -f "$out/.initrd.img.new" "$out/initrd.img"
mv -f "$out/.VERSION.new" "$out/VERSION"
# Keep this build's packages for the next rebuild, and only those.
for deb in "$debs"/*.deb; do
  [ -e "$out/debs/${deb##*/}" ] && continue
  cp "$deb" "$out/debs/.${deb##*/}.new" && mv -f "$out/debs/.${deb##*/}.new" "$out/debs/${deb##*/}"
done
for deb in "$out"/debs/*.deb; do
  [ -e "$debs/${deb##*/}" ] || rm -f "$deb"
done
t_step=$t_start
step_done "built $kernel_pkg, total"
echo "$out"
