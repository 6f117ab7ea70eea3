"""Which of a policy's snapshots to keep: Sanoid-style buckets, one rule for all of them.

For each bucket with a count N > 0, keep the NEWEST snapshot of each of the N most recent
periods that have a snapshot; a snapshot counts for every bucket it represents. Also keep the
newest snapshot of the policy. Delete the policy's other snapshots; never look at anyone else's.
docs/snapshots.md states the rule with a worked example (tested in test_snapshot_retention.py).

Periods: ``frequent`` = spans of ``frequentPeriod`` aligned to the Unix epoch; ``hourly``,
``daily``, ``weekly`` (ISO, Monday first), ``monthly``, ``yearly`` = calendar periods on the
wall clock of the policy's timezone. A snapshot belongs to the period holding its creation time
plus the clock-skew allowance, so one taken at 09:59:55 by a fast clock counts for 10:00, as
the schedule meant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal, get_args

from controller.model.records import record
from controller.snapshots.model import Snapshot
from controller.snapshots.schedule import CLOCK_SKEW_ALLOWANCE, EPOCH, zone
from controller.spec.models import SnapshotPolicySpec

Bucket = Literal["frequent", "hourly", "daily", "weekly", "monthly", "yearly"]
BUCKETS: tuple[Bucket, ...] = get_args(Bucket)
LATEST = "latest"  # the reason the newest snapshot is kept even when every count is 0


@record
class RetentionPlan:
    """``keep`` newest first, ``delete`` oldest first (the order to delete in); both only ever hold
    the policy's own snapshots. ``reasons`` names, per kept snapshot, the buckets it stands for."""

    keep: tuple[Snapshot, ...]
    delete: tuple[Snapshot, ...]
    reasons: Mapping[str, tuple[str, ...]]


def plan_retention(policy: str, spec: SnapshotPolicySpec, snapshots: Iterable[Snapshot]) -> RetentionPlan:
    """Split policy ``policy``'s snapshots among ``snapshots`` into keep and delete.

    Counts, not ages: no clock is read, so a service down for a month keeps what it had.
    """
    own = sorted((s for s in snapshots if s.policy == policy), key=_age, reverse=True)
    reasons: dict[str, list[str]] = {own[0].name: [LATEST]} if own else {}
    counts = [(bucket, n) for bucket in BUCKETS if (n := getattr(spec.retain, bucket)) > 0]
    if counts:
        keys = _period_keys(own, spec)
        for bucket, n in counts:
            _mark(own, keys(bucket), n, bucket, reasons)
    keep = tuple(s for s in own if s.name in reasons)
    delete = tuple(s for s in reversed(own) if s.name not in reasons)
    return RetentionPlan(keep, delete, {name: tuple(why) for name, why in reasons.items()})


def _age(s: Snapshot) -> tuple[datetime, str]:
    return s.created, s.name  # the name breaks ties so equal times still give one order


def _mark(newest_first: Sequence[Snapshot], keys: Sequence[int], n: int, bucket: str,
          reasons: dict[str, list[str]]) -> None:
    seen: set[int] = set()
    for snap, key in zip(newest_first, keys, strict=True):
        if key in seen:
            continue  # an older snapshot of a period already represented
        seen.add(key)
        reasons.setdefault(snap.name, []).append(bucket)
        if len(seen) == n:
            return


def _period_keys(newest_first: Sequence[Snapshot], spec: SnapshotPolicySpec) -> Callable[[Bucket], Sequence[int]]:
    """Per bucket, the period number of each snapshot, computed lazily (most passes use 2–3 buckets)."""
    tz = zone(spec.schedule)
    frequent = timedelta(seconds=spec.frequent_period)
    # Shrunk for a very short frequentPeriod, so that the shift never spans a whole period.
    frequent_shift = min(CLOCK_SKEW_ALLOWANCE, frequent / 4)
    shifted = [s.created + CLOCK_SKEW_ALLOWANCE for s in newest_first]  # created is UTC
    local = shifted if tz.key == "UTC" else [t.astimezone(tz) for t in shifted]

    def keys(bucket: Bucket) -> Sequence[int]:
        if bucket == "frequent":
            return [(s.created + frequent_shift - EPOCH) // frequent for s in newest_first]
        return [_CALENDAR[bucket](t) for t in local]

    return keys


def _hour(t: datetime) -> int:
    return t.toordinal() * 24 + t.hour


def _day(t: datetime) -> int:
    return t.toordinal()


def _iso_week(t: datetime) -> int:
    return t.toordinal() - t.weekday()  # the week's Monday identifies it


def _month(t: datetime) -> int:
    return t.year * 12 + t.month


def _year(t: datetime) -> int:
    return t.year


_CALENDAR: dict[Bucket, Callable[[datetime], int]] = {
    "hourly": _hour, "daily": _day, "weekly": _iso_week, "monthly": _month, "yearly": _year,
}
