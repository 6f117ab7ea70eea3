"""virtsync: converge KVM and Xen hosts to YAML specs kept in git."""

# The version: pyproject.toml reads it from here (dynamic), the wheel's metadata and the
# image's org.opencontainers.image.version label (scripts/build-image.sh) come from it.
__version__ = "0.1.0"
