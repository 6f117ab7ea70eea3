"""virtsync: converge KVM and Xen hosts to YAML specs kept in git."""

__version__ = "0.1.0"
