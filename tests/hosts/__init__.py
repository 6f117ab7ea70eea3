"""Test hosts for the end-to-end suite."""

from .hermetic import (
    HermeticHost,
    HermeticHostError,
    HostFactory,
    live_hosts,
    missing_prerequisites,
    stray_processes,
    virt_type,
)

__all__ = [
    "HermeticHost",
    "HermeticHostError",
    "HostFactory",
    "live_hosts",
    "missing_prerequisites",
    "stray_processes",
    "virt_type",
]
