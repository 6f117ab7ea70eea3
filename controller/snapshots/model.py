"""Plain data the snapshot core speaks: a guest's snapshots as observed, no libvirt types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import UTC, datetime

from controller.model.records import record


def require_aware(when: datetime, what: str) -> datetime:
    """``when`` in UTC; a naive datetime is refused, since guessing its zone would shift every bucket."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {when.isoformat()}")
    return when.astimezone(UTC)


@record
class Snapshot:
    """One snapshot of one guest.

    ``policy`` is the SnapshotPolicy that made it, read from the ownership record virtsync writes
    into the snapshot's metadata; ``None`` means virtsync did not make it (manual, or another
    tool's), and such a snapshot is never deleted. ``quiesced`` records whether the guest's file
    systems were frozen (``None``: unknown or not applicable).
    """

    name: str
    created: datetime
    policy: str | None = None
    quiesced: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "created", require_aware(self.created, f"snapshot {self.name!r} created"))


@record
class GuestSnapshots:
    """What a scheduling pass needs to know of one guest: its labels and all its snapshots."""

    labels: Mapping[str, str] = field(default_factory=dict)
    snapshots: tuple[Snapshot, ...] = ()
