"""Plain data the backup core speaks: a guest's backups and checkpoints as observed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import datetime
from typing import Literal

from controller.model.records import record
from controller.snapshots.model import require_aware

Kind = Literal["full", "incremental"]


@record
class Backup:
    """One backup of one guest, as its manifest records it.

    ``id`` names the backup among the guest's (``vs-<policy>-<stamp>``, also the name of the
    checkpoint taken with it); ``parent`` is the backup an incremental is built on (``None`` for
    a full one); ``checkpoint`` the guest's checkpoint that marks its point in time (``None``
    when there is none: a stopped guest's copy).
    """

    id: str
    created: datetime
    policy: str
    kind: Kind
    parent: str | None = None
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "created", require_aware(self.created, f"backup {self.id!r} created"))
        if (self.kind == "full") != (self.parent is None):
            raise ValueError(f"backup {self.id!r}: a full backup has no parent, an incremental one has one")


@record
class GuestBackups:
    """What a pass needs to know of one guest: labels, whether it runs, its backups (every
    policy's) and the checkpoints virtsync made on it (name → policy, from virtsync's record in
    each checkpoint; others are not listed)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    running: bool = True
    backups: tuple[Backup, ...] = ()
    checkpoints: Mapping[str, str] = field(default_factory=dict)
