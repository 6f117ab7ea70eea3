#!/usr/bin/env bash
# Builds the virtsync container image (virtsync:dev) from the Dockerfile without a
# Docker engine: Debian's buildah, chroot isolation, vfs storage (root only).
#
# The Dockerfile starts FROM debian:bookworm-slim. Where that image is not in the
# local store (no registry but Debian's mirror can be reached here), this script
# makes a stand-in once: debootstrap --variant=minbase bookworm, trimmed like the
# official slim image, imported with podman as docker.io/library/debian:bookworm-slim.
# The debootstrapped root file system is kept as a tarball under .cache/image/, and
# buildah keeps its layer cache, so a second run takes seconds.
#
# Usage: scripts/build-image.sh [TAG]          (TAG defaults to virtsync:dev)
# Environment: VIRTSYNC_IMAGE_CACHE (default: <repo>/.cache/image),
#              DEBIAN_MIRROR (default: http://deb.debian.org/debian)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${1:-virtsync:dev}
BASE=docker.io/library/debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${VIRTSYNC_IMAGE_CACHE:-$ROOT/.cache/image}
ROOTFS_TAR=$CACHE/debian-bookworm-minbase.tar
STORE=(--storage-driver vfs)
# Every image built from the Dockerfile carries this label (set right after FROM).
LABEL_FILTER=label=org.opencontainers.image.title=virtsync

die() { echo "build-image: error: $*" >&2; exit 1; }
say() { echo "build-image: $*"; }

# step NAME CMD...: runs CMD and prints how long it took.
step() {
  local name=$1; shift
  local t0=$SECONDS
  say "$name ..."
  "$@"
  say "$name: done in $((SECONDS - t0)) s"
}

[ "$(id -u)" -eq 0 ] || die "needs root (buildah with vfs storage and chroot isolation; debootstrap)"
command -v apt-get >/dev/null || die "needs a Debian or Ubuntu machine (apt-get)"

mirror_reachable() {
  python3 - "$MIRROR" <<'EOF'
import sys, urllib.request
url = sys.argv[1].rstrip("/") + "/dists/bookworm/Release"
try:
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read(64)
except Exception as e:  # noqa: BLE001
    print(f"{url}: {e}", file=sys.stderr)
    sys.exit(1)
EOF
}

need_mirror() {
  mirror_reachable || die "the Debian package mirror $MIRROR cannot be reached; $1 needs it \
(set DEBIAN_MIRROR to another mirror)"
}

install_tools() {
  local missing=() p
  for p in debootstrap buildah podman; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed: the Debian package mirror cannot be reached"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || die "apt-get install ${missing[*]} failed"
}

# Unmounts whatever debootstrap may have left mounted below $1 (deepest first).
umount_below() {
  local dir mnt
  dir=$(realpath -m "$1")
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}

remove_tree() {
  [ -e "$1" ] || return 0
  umount_below "$1"
  rm -rf --one-file-system "$1"
}

make_rootfs_tar() {
  need_mirror "debootstrap"
  local dir=$CACHE/rootfs.tmp log=$CACHE/debootstrap.log
  remove_tree "$dir"
  mkdir -p "$dir"
  if ! debootstrap --variant=minbase bookworm "$dir" "$MIRROR" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    remove_tree "$dir"
    die "debootstrap failed (log: $log)"
  fi
  umount_below "$dir"
  # Trim and configure it like the official debian:bookworm-slim image.
  rm -f "$dir/etc/apt/sources.list" "$dir/etc/resolv.conf" "$dir/etc/hostname"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$dir/etc/hosts"
  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# as in the official slim images: no documentation, manual pages or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
    "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
  tar -C "$dir" --numeric-owner --xattrs \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
    -cf "$ROOTFS_TAR.tmp" .
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  remove_tree "$dir"
  say "base root file system: $ROOTFS_TAR ($(du -m "$ROOTFS_TAR" | cut -f1) MiB)"
}

import_base() {
  podman "${STORE[@]}" import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap --variant=minbase bookworm (stand-in for $BASE)" \
    "$ROOTFS_TAR" "$BASE" >/dev/null
}

build() {
  local args=(--isolation chroot "${STORE[@]}" --layers --pull=never -t "$TAG" -f Dockerfile)
  # A machine whose HTTPS traffic goes through an intercepting proxy trusts that proxy's CA
  # in its own bundle only (/usr/local/share/ca-certificates): lend the machine's bundle to
  # the build's pip (read-only, only while building; nothing of it stays in the image).
  local bundle=/etc/ssl/certs/ca-certificates.crt
  if [ -s "$bundle" ]; then
    args+=(--volume "$bundle:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
  fi
  if ! (cd "$ROOT" && buildah bud "${args[@]}" .); then
    mirror_reachable || die "buildah bud failed, and the Debian package mirror $MIRROR cannot \
be reached: the image's apt-get install needs it"
    die "buildah bud failed (see its output above)"
  fi
}

# Removes the superseded images (untagged, no child) that earlier builds of the Dockerfile
# left behind: with vfs storage each is a full copy of the file system.
prune_stale() {
  local ids n=0
  while ids=$(buildah images "${STORE[@]}" -q --filter dangling=true --filter "$LABEL_FILTER" \
      2>/dev/null) && [ -n "$ids" ] && [ $n -lt 10 ]; do
    # shellcheck disable=SC2086
    buildah rmi "${STORE[@]}" $ids >/dev/null 2>&1 || break
    n=$((n + 1))
  done
}

t_start=$SECONDS
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

step "install debootstrap, buildah, podman (if missing)" install_tools

if podman "${STORE[@]}" image exists "$BASE"; then
  say "base image $BASE: present"
else
  if [ -s "$ROOTFS_TAR" ]; then
    say "base root file system: cached ($ROOTFS_TAR)"
  else
    step "debootstrap --variant=minbase bookworm" make_rootfs_tar
  fi
  step "podman import as $BASE" import_base
fi

step "buildah bud -t $TAG" build
step "prune superseded images" prune_stale
say "$TAG built in $((SECONDS - t_start)) s in all"
