# virtsync as a service: `virtsync serve` converges the libvirt host(s) to the specs in /specs.
#
#   scripts/build-image.sh              # builds virtsync:dev with buildah (no Docker engine needed)
#   docker build -t virtsync:dev .      # or with Docker / podman where they run
#
# Run it with the libvirt socket and the spec repository mounted (see the README):
#   podman run -d -p 127.0.0.1:8080:8080 \
#     -v /var/run/libvirt/libvirt-sock:/var/run/libvirt/libvirt-sock \
#     --group-add "$(getent group libvirt | cut -d: -f3)" \
#     -v /srv/virtsync-specs:/specs:ro virtsync:dev
#
# Python and the libvirt client library (python3-libvirt) come from Debian; virtsync and
# its other dependencies are installed from this source tree and PyPI (wheels only) into
# /opt/virtsync, a venv that sees Debian's packages (--system-site-packages), so Debian's
# python3-libvirt (registered as libvirt-python 9.0.0) satisfies the libvirt-python
# requirement and nothing is compiled.
FROM debian:bookworm-slim

# OCI image annotations (github.com/opencontainers/image-spec, annotations.md). VERSION is
# controller/__init__.py's __version__, REVISION the commit and CREATED the build time (RFC 3339):
# scripts/build-image.sh passes them (--print-build-args shows them); a plain build says "unknown".
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="virtsync" \
      org.opencontainers.image.description="GitOps controller for libvirt (virtsync serve)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

# One apt layer: no recommends, no package lists left behind. git and ssh serve
# `virtsync serve --git URL` (and libvirt's qemu+ssh:// URIs). The service's user
# (virtsync, uid and gid 10001) owns only its home (HOME: git snapshots in ~/.cache,
# ~/.ssh/known_hosts); the venv stays root's.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git openssh-client python3 python3-libvirt python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log \
 && groupadd --gid 10001 virtsync \
 && useradd --uid 10001 --gid virtsync --no-log-init --home-dir /var/lib/virtsync --create-home \
      --shell /usr/sbin/nologin virtsync \
 && python3 -m venv --system-site-packages /opt/virtsync \
 && mkdir -p /specs

ENV PATH=/opt/virtsync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The dependencies first (with a layer cache, their layer is reused until pyproject.toml
# changes): the project's and the build system's requirements, read from pyproject.toml.
# Wheels only: a requirement that Debian's packages do not satisfy and that has no wheel
# (such as libvirt-python, which PyPI has as source only) fails here instead of being
# compiled. PIP_CERT: a CA bundle for pip, mounted into the build by whoever passes it, for
# builds behind an intercepting HTTPS proxy (scripts/build-image.sh does); unset, pip uses
# the image's CA certificates.
ARG PIP_CERT
COPY pyproject.toml /tmp/virtsync-src/pyproject.toml
RUN [ -n "${PIP_CERT:-}" ] || unset PIP_CERT; \
    set -e; \
    python3 -c 'import tomllib; \
      p = tomllib.load(open("/tmp/virtsync-src/pyproject.toml", "rb")); \
      print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' \
      > /tmp/requirements.txt; \
    pip install -q --only-binary :all: -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

# Then virtsync itself, from this source tree (.dockerignore lets in only what it needs).
COPY . /tmp/virtsync-src
RUN set -e; \
    pip install -q --no-deps --no-build-isolation /tmp/virtsync-src; \
    pip check; \
    python3 -c 'import libvirt; \
      assert libvirt.__file__.startswith("/usr/lib/python3/dist-packages/"), libvirt.__file__'; \
    mkdir -p /usr/share/virtsync; \
    mv /tmp/virtsync-src/examples /usr/share/virtsync/examples; \
    rm -rf /tmp/virtsync-src; \
    virtsync --version

USER virtsync
WORKDIR /var/lib/virtsync
EXPOSE 8080
# The spec repository is expected at /specs (mount it read-only).
# Reachable beyond the container only with TLS and a token: mount them at /run/virtsync.
CMD ["virtsync", "serve", "/specs", "--listen", "0.0.0.0:8080", "--tls-cert", "/run/virtsync/tls.crt", "--tls-key", "/run/virtsync/tls.key", "--token-file", "/run/virtsync/token"]
