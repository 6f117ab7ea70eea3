"""Names virtsync gives to what it makes, shared by planner and hypervisor layer."""

from __future__ import annotations

_VOLUME_EXT = {"qcow2": "qcow2", "raw": "img"}


def volume_name(guest: str, disk_name: str, fmt: str) -> str:
    """The pool volume holding a guest's disk: ``web1-root.qcow2``."""
    return f"{guest}-{disk_name}.{_VOLUME_EXT.get(fmt, fmt)}"
