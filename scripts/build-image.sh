#!/usr/bin/env bash
# Builds the virtsync container image (virtsync:dev) from the Dockerfile without a
# Docker engine: Debian's buildah, chroot isolation, vfs storage (root only).
#
# The Dockerfile starts FROM debian:bookworm-slim. Where that image is not in the
# local store (no registry but Debian's mirror can be reached here), this script
# makes a stand-in once: debootstrap --variant=minbase bookworm, trimmed like the
# official slim image, imported with podman as docker.io/library/debian:bookworm-slim.
# The debootstrapped root file system is kept as a tarball under .cache/image/.
#
# The image is built without intermediate layers (--layers=false): with vfs storage every
# cached step costs a full copy of the file system, so a build from the layer cache took
# longer (60-120 s) than a build from scratch (25 s). Instead, the image is not rebuilt at
# all while its inputs (the build context as .dockerignore admits it, and the base image)
# are those it was built from: a second run takes seconds.
#
# Usage: scripts/build-image.sh [TAG]          (TAG defaults to virtsync:dev)
#        scripts/build-image.sh --print-build-args   the image labels' build arguments, one a line
# Environment: VIRTSYNC_IMAGE_CACHE (default: <repo>/.cache/image),
#              DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR (default: the archives this machine's apt
#              uses, read by scripts/apt-source.sh),
#              VIRTSYNC_IMAGE_REBUILD=1 to build even if the inputs did not change
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

# The OCI labels' values: the version from its one place (controller/__init__.py), the commit,
# the build time.
label_args() {
  local version revision
  version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/controller/__init__.py")
  revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  echo "VERSION=${version:-unknown}"
  echo "REVISION=$revision"
  echo "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
if [ "${1:-}" = --print-build-args ]; then
  label_args
  exit 0
fi

TAG=${1:-virtsync:dev}
BASE=docker.io/library/debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-$("$ROOT/scripts/apt-source.sh" main)}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$("$ROOT/scripts/apt-source.sh" security 2>/dev/null || true)}
CACHE=${VIRTSYNC_IMAGE_CACHE:-$ROOT/.cache/image}
ROOTFS_TAR=$CACHE/debian-bookworm-minbase.tar
STORE=(--storage-driver vfs)
STAMP=$CACHE/${TAG//[^A-Za-z0-9._-]/_}.inputs

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

[ "$(id -u)" -eq 0 ] || die "needs root (buildah with vfs storage, chroot isolation; debootstrap)"
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
  # apt-get update exits 0 even when it could fetch nothing: judge by the install.
  apt-get update -qq || true
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; then
    need_mirror "apt-get install ${missing[*]}"
    die "apt-get install ${missing[*]} failed"
  fi
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
EOF
  if [ -n "$SECURITY_MIRROR" ]; then
    cat >>"$dir/etc/apt/sources.list.d/debian.sources" <<EOF

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
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
  local args=(--isolation chroot "${STORE[@]}" --layers=false --pull=never -t "$TAG"
              -f Dockerfile) arg
  while read -r arg; do args+=(--build-arg "$arg"); done < <(label_args)
  # A machine whose HTTPS traffic goes through an intercepting proxy trusts that proxy's CA
  # in its own bundle only (/usr/local/share/ca-certificates): lend the machine's bundle to
  # the build's pip (read-only, only while building; nothing of it stays in the image).
  local bundle=/etc/ssl/certs/ca-certificates.crt
  if [ -s "$bundle" ]; then
    args+=(--volume "$bundle:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
  fi
  local log=$CACHE/buildah-bud.log try
  for try in 1 2; do
    if (cd "$ROOT" && buildah bud "${args[@]}" .) 2>&1 | tee "$log"; then
      return 0
    fi
    # Something outside the build SIGKILLed one of buildah's helpers (seen here: a test
    # harness killing by namespace inode while another run of the suite stopped its hosts).
    # The layers built so far are cached: one more try resumes after them.
    if [ "$try" = 1 ] && grep -q 'signal: killed' "$log"; then
      say "a buildah helper was killed from outside the build ('signal: killed'): trying again"
      continue
    fi
    break
  done
  mirror_reachable || die "buildah bud failed, and the Debian package mirror $MIRROR cannot \
be reached: the image's apt-get install needs it"
  die "buildah bud failed (see its output above; log: $log)"
}

image_id() { podman "${STORE[@]}" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# A digest of the build's inputs: the base image, Dockerfile, .dockerignore and the files of
# the build context. .dockerignore is written as an allow-list ('*', then '!PATH' lines):
# the context is those paths; were it not, every file of the tree would count.
inputs_digest() {
  local roots=() line
  if [ "$(grep -Ev '^[[:space:]]*(#|$)' .dockerignore 2>/dev/null | head -n1)" = '*' ]; then
    while read -r line; do roots+=("${line#!}"); done < <(grep '^!' .dockerignore)
  else
    roots=(.)
  fi
  {
    image_id "$BASE"
    label_args | grep -v '^CREATED='  # a new version or commit is a new image (its labels say so)
    find Dockerfile .dockerignore "${roots[@]%/}" \( -name .git -o -name .venv -o -name .cache \
        -o -name artifacts -o -name __pycache__ -o -name '*.pyc' -o -name '*.egg-info' \
        -o -name .mypy_cache -o -name .ruff_cache -o -name .pytest_cache -o -name .hypothesis \
        \) -prune -o -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum
  } | sha256sum | cut -d' ' -f1
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

cd "$ROOT"
[ -f Dockerfile ] && [ -f .dockerignore ] || die "no Dockerfile or .dockerignore in $ROOT"
digest=$(inputs_digest) || die "cannot compute the digest of the image's inputs"
old_id=$(image_id "$TAG")
if [ -z "${VIRTSYNC_IMAGE_REBUILD:-}" ] && [ -n "$old_id" ] && [ -s "$STAMP" ] &&
   [ "$(cat "$STAMP")" = "$digest $old_id" ]; then
  say "$TAG: up to date (built from these inputs; VIRTSYNC_IMAGE_REBUILD=1 builds anyway)"
else
  rm -f "$STAMP"
  step "buildah bud -t $TAG" build
  new_id=$(image_id "$TAG")
  echo "$digest $new_id" >"$STAMP"
  # The image it replaces (now untagged): with vfs storage, a full copy of the file system.
  # It stays if a container still uses it.
  if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    buildah rmi "${STORE[@]}" "$old_id" >/dev/null 2>&1 || true
  fi
fi
say "$TAG ready in $((SECONDS - t_start)) s in all"
