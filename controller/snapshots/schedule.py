"""When a policy's next snapshot is due. Pure: the time is always an argument, never read.

A schedule is a set of *fire times*: those of its cron expression on the wall clock of its
timezone, or, for ``every: N``, the multiples of N since the Unix epoch (``every: 4h`` fires at
00:00, 04:00, 08:00 … UTC), so that passes running late or early do not drift the series.
A snapshot is due when a fire time has passed since the last one was taken: whatever the number
of fire times missed (service down for days), that is ONE snapshot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from controller.snapshots.model import require_aware
from controller.spec.models import Schedule

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A snapshot taken up to this much before a fire time (a clock a few seconds fast, a host clock
# differing from the controller's) counts as taken at it, so skew never doubles a snapshot.
CLOCK_SKEW_ALLOWANCE = timedelta(seconds=10)
_TICK = timedelta(microseconds=1)


def zone(schedule: Schedule) -> ZoneInfo:
    return ZoneInfo(schedule.timezone)


def skew_allowance(schedule: Schedule) -> timedelta:
    """``CLOCK_SKEW_ALLOWANCE``, shrunk for very short intervals so it never spans a whole one."""
    if schedule.every is not None:
        return min(CLOCK_SKEW_ALLOWANCE, timedelta(seconds=schedule.every) / 4)
    return CLOCK_SKEW_ALLOWANCE  # cron fires at most once a minute


def last_fire(schedule: Schedule, at: datetime) -> datetime:
    """The latest fire time at or before ``at`` (UTC)."""
    at = require_aware(at, "time")
    if schedule.every is not None:
        step = timedelta(seconds=schedule.every)
        return EPOCH + (at - EPOCH) // step * step
    assert schedule.cron is not None  # the model guarantees exactly one of cron / every
    tz = zone(schedule)
    fires = croniter(schedule.cron, (at + _TICK).astimezone(tz))  # get_prev is strict: +1 µs makes it ≤
    return _first_real(fires, tz, forward=False)


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The earliest fire time strictly after ``after`` (UTC): when a service should look again."""
    after = require_aware(after, "time")
    if schedule.every is not None:
        step = timedelta(seconds=schedule.every)
        return EPOCH + ((after - EPOCH) // step + 1) * step
    assert schedule.cron is not None
    tz = zone(schedule)
    return _first_real(croniter(schedule.cron, after.astimezone(tz)), tz, forward=True)


def due(schedule: Schedule, last_taken: datetime | None, now: datetime) -> bool:
    """Whether a snapshot is due at ``now``, the last one of this policy having been taken at
    ``last_taken`` (``None``: there is none, so the first is due at once)."""
    return due_after_fire(last_fire(schedule, now), last_taken, skew_allowance(schedule))


def due_after_fire(fire: datetime, last_taken: datetime | None, allowance: timedelta) -> bool:
    """``due`` with the schedule already evaluated: a pass computes ``last_fire`` once per policy."""
    return last_taken is None or fire > require_aware(last_taken, "last_taken") + allowance


def _first_real(fires: croniter, tz: ZoneInfo, *, forward: bool) -> datetime:
    # When clocks go back, a wall-clock time happens twice and croniter fires at both; like cron,
    # fire at the first only (the repeated hour is one hour of the local calendar, see retention).
    while True:
        fire: datetime = fires.get_next(datetime) if forward else fires.get_prev(datetime)
        first = fire.replace(tzinfo=None).replace(tzinfo=tz, fold=0)
        if first.utcoffset() == fire.utcoffset():
            return fire.astimezone(UTC)
