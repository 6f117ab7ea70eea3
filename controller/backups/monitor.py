"""Backup freshness, like snapshot freshness (snapshots/monitor.py, the same thresholds): the age
of a policy's newest backup of a guest against its schedule's period. Pure: time is an argument."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from controller.backups.model import Backup
from controller.snapshots.model import Snapshot
from controller.snapshots.monitor import Freshness
from controller.snapshots.monitor import freshness as snapshot_freshness
from controller.spec.models import BackupPolicy


def freshness(policy: BackupPolicy, backups: Iterable[Backup], now: datetime) -> Freshness:
    """ok below 1.5 periods, warning from 1.5, critical from 3 or with no backup at all."""
    name = policy.metadata.name
    points = (Snapshot(b.id, b.created, name) for b in backups if b.policy == name)
    return snapshot_freshness(name, policy.spec.schedule, points, now)
