"""One scheduling pass over 1,000 guests with 100 snapshots each: retention alone under 1 s.

Also printed, not asserted: the whole pure pass (selection, schedule, retention) over the same
guests, and the same retention in UTC, where no timezone conversion is needed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from controller.snapshots import GuestSnapshots, RetentionPlan, Snapshot, plan_pass, plan_retention, snapshot_name
from controller.spec.models import SnapshotPolicy

pytestmark = pytest.mark.bench

GUESTS, PER_GUEST, TARGET = 1_000, 100, 1.0
NOW = datetime(2024, 3, 18, 10, 0, 30, tzinfo=UTC)


def policy(timezone: str) -> SnapshotPolicy:
    return SnapshotPolicy.model_validate({
        "apiVersion": "virtsync/v1", "kind": "SnapshotPolicy", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"tier": "web"}},
                 "schedule": {"cron": "0 * * * *", "timezone": timezone},
                 "retain": {"frequent": 4, "hourly": 24, "daily": 7, "weekly": 4, "monthly": 12, "yearly": 3}},
    })


def fleet(rnd: random.Random) -> dict[str, GuestSnapshots]:
    """Per guest: 90 of the policy's snapshots spread over two years (dense lately), 5 manual,
    5 of another policy; order shuffled as a host would list them."""
    guests = {}
    for g in range(GUESTS):
        snaps = []
        for i in range(PER_GUEST - 10):
            back = timedelta(hours=i) if i < 40 else timedelta(hours=rnd.randint(40, 2 * 365 * 24))
            when = NOW - back - timedelta(seconds=rnd.randint(0, 59))
            snaps.append(Snapshot(f"{snapshot_name('web', when)}-{i}", when, "web", quiesced=True))
        snaps += [Snapshot(f"manual-{i}", NOW - timedelta(days=rnd.randint(1, 700))) for i in range(5)]
        snaps += [Snapshot(f"vs-other-{i}", NOW - timedelta(days=rnd.randint(1, 700)), "other") for i in range(5)]
        rnd.shuffle(snaps)
        guests[f"guest{g:04}"] = GuestSnapshots({"tier": "web"}, tuple(snaps))
    return guests


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def test_retention_over_a_thousand_guests_with_a_hundred_snapshots_each_is_under_a_second() -> None:
    guests = fleet(random.Random(1))
    berlin, utc = policy("Europe/Berlin"), policy("UTC")

    def retention(p: SnapshotPolicy) -> Callable[[], list[RetentionPlan]]:
        return lambda: [plan_retention("web", p.spec, g.snapshots) for g in guests.values()]

    kept = sum(len(plan.keep) for plan in retention(berlin)())
    tz_time, utc_time = best_of(3, retention(berlin)), best_of(3, retention(utc))
    pass_time = best_of(3, lambda: plan_pass(guests, [berlin], NOW))
    print(f"\nsnapshot retention: {GUESTS:,} guests x {PER_GUEST} snapshots, {kept:,} kept")
    print(f"  retention (Europe/Berlin): {tz_time:.3f} s (target < {TARGET:.0f} s; ratio {tz_time / TARGET:.2f})")
    print(f"  retention (UTC):           {utc_time:.3f} s (ratio {utc_time / TARGET:.2f})")
    print(f"  whole pure pass (select, schedule, retention): {pass_time:.3f} s")
    assert tz_time < TARGET
