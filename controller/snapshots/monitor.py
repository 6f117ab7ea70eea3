"""Snapshot freshness, monitored like Sanoid's --monitor-snapshots: pure, time is an argument.

A policy's newest snapshot of a guest is
- ``ok``        while it is younger than 1.5 × the schedule's period,
- ``warning``   from 1.5 × the period,
- ``critical``  from 3 × the period, or when there is none at all.
The period is ``every``, or for cron the gap between the last fire time and the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from controller.model.records import record
from controller.snapshots.model import Snapshot, require_aware
from controller.snapshots.schedule import last_fire, next_run
from controller.spec.models import Schedule

WARN_FACTOR = 1.5
CRIT_FACTOR = 3.0


@record
class Freshness:
    policy: str
    status: str  # ok | warning | critical
    newest: datetime | None
    age_seconds: float | None

    def as_json(self) -> dict[str, object]:
        return {"policy": self.policy, "status": self.status,
                "newest": self.newest.isoformat() if self.newest else None,
                "ageSeconds": round(self.age_seconds) if self.age_seconds is not None else None}


def period_seconds(schedule: Schedule, now: datetime) -> float:
    if schedule.every is not None:
        return float(schedule.every)
    last = last_fire(schedule, now)
    return (next_run(schedule, last) - last).total_seconds()


def freshness(policy: str, schedule: Schedule, snapshots: Iterable[Snapshot], now: datetime) -> Freshness:
    now = require_aware(now, "now")
    own = [s.created for s in snapshots if s.policy == policy]
    if not own:
        return Freshness(policy, "critical", None, None)
    newest = max(own)
    age = (now - newest).total_seconds()
    period = period_seconds(schedule, now)
    status = "critical" if age >= CRIT_FACTOR * period else "warning" if age >= WARN_FACTOR * period else "ok"
    return Freshness(policy, status, newest, age)
