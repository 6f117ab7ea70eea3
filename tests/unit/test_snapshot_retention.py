"""Snapshot retention: the documented rule, its worked example, properties, and 40 simulated days.

`expected_keep` below is the rule of docs/snapshots.md written a second, naive way (group by
period with strftime/isocalendar, then take the most recent N); the tests compare the code to it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.snapshots import GuestSnapshots, Snapshot, plan_pass, plan_retention, snapshot_name
from controller.spec.models import SnapshotPolicy, SnapshotPolicySpec

pytestmark = pytest.mark.timeout(120)

DOC = Path(__file__).resolve().parents[2] / "docs" / "snapshots.md"
T0 = datetime(2024, 3, 18, 10, 0, tzinfo=UTC)
BUCKET_NAMES = ("frequent", "hourly", "daily", "weekly", "monthly", "yearly")
PROPERTY = settings(max_examples=200, deadline=None)


def spec(timezone: str = "UTC", frequent_period: str = "15m", every: str = "1h", **retain: int) -> SnapshotPolicySpec:
    return SnapshotPolicySpec.model_validate({
        "selector": {"matchLabels": {}}, "schedule": {"every": every, "timezone": timezone},
        "retain": retain, "frequentPeriod": frequent_period,
    })


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def made(policy: str, when: datetime) -> Snapshot:
    return Snapshot(snapshot_name(policy, when), when, policy)


CALENDAR_FORMATS = {"hourly": "%Y-%m-%d %H", "daily": "%Y-%m-%d", "monthly": "%Y-%m", "yearly": "%Y"}


def expected_keep(snapshots: Iterable[Snapshot], policy: str, rule: SnapshotPolicySpec) -> dict[str, set[str]]:
    """The documented rule, naively: kept name -> buckets (and "latest")."""
    own = sorted((s for s in snapshots if s.policy == policy), key=lambda s: (s.created, s.name), reverse=True)
    tz = ZoneInfo(rule.schedule.timezone)
    fp = rule.frequent_period

    def period(bucket: str, s: Snapshot) -> object:
        if bucket == "frequent":
            return int((s.created + timedelta(seconds=min(10, fp / 4))).timestamp() // fp)
        local = (s.created + timedelta(seconds=10)).astimezone(tz)
        if bucket == "weekly":
            return local.isocalendar()[:2]
        return local.strftime(CALENDAR_FORMATS[bucket])

    keep: dict[str, set[str]] = {own[0].name: {"latest"}} if own else {}
    for bucket in BUCKET_NAMES:
        newest_of: dict[object, Snapshot] = {}
        for s in own:
            newest_of.setdefault(period(bucket, s), s)
        chosen = sorted(newest_of.values(), key=lambda s: (s.created, s.name), reverse=True)
        for s in chosen[:getattr(rule.retain, bucket)]:
            keep.setdefault(s.name, set()).add(bucket)
    return keep


# ----------------------------------------------------------------- the worked example of the doc

EXAMPLE_RULE = spec(hourly=3, daily=3, weekly=3, monthly=2)
EXAMPLE_EXPECTED = {  # created (UTC) -> buckets it is kept for; None = deleted
    "2024-03-18 10:00": ("latest", "hourly", "daily", "weekly", "monthly"),
    "2024-03-18 09:00": ("hourly",),
    "2024-03-18 08:00": ("hourly",),
    "2024-03-17 23:00": ("daily", "weekly"),
    "2024-03-17 22:00": None,
    "2024-03-15 03:00": ("daily",),
    "2024-03-14 03:00": None,
    "2024-03-10 03:00": ("weekly",),
    "2024-03-08 03:00": None,
    "2024-02-29 03:00": ("monthly",),
    "2024-02-27 03:00": None,
}
MANUAL = Snapshot("before-upgrade", at("2024-03-12T12:00:00"))
NIGHTLY = made("nightly", at("2024-03-18T03:00:00"))


def example_snapshots() -> list[Snapshot]:
    return [made("web", at(t)) for t in EXAMPLE_EXPECTED] + [MANUAL, NIGHTLY]


def doc_example_rows() -> dict[str, tuple[str, ...] | None]:
    text = DOC.read_text()
    table = text.split("<!-- worked-example: begin")[1].split("<!-- worked-example: end -->")[0]
    rows: dict[str, tuple[str, ...] | None] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", cells[0]):
            when = at(cells[0])
            assert cells[1] == f"{when:%a}, week {when.isocalendar().week}"
            rows[cells[0]] = tuple(cells[2].split(", ")) if cells[3] == "keep" else None
    return rows


def test_worked_example_of_the_doc_is_what_the_code_does() -> None:
    plan = plan_retention("web", EXAMPLE_RULE, example_snapshots())
    got: dict[str, tuple[str, ...] | None] = {s.created.strftime("%Y-%m-%d %H:%M"): plan.reasons[s.name]
                                              for s in plan.keep}
    got.update({s.created.strftime("%Y-%m-%d %H:%M"): None for s in plan.delete})
    assert got == EXAMPLE_EXPECTED
    assert doc_example_rows() == EXAMPLE_EXPECTED  # the table in docs/snapshots.md says the same
    assert [s.name for s in plan.delete] == ["vs-web-20240227T030000Z", "vs-web-20240308T030000Z",
                                             "vs-web-20240314T030000Z", "vs-web-20240317T220000Z"]
    assert plan_retention("web", EXAMPLE_RULE, (*plan.keep, MANUAL, NIGHTLY)).delete == ()


def test_worked_example_matches_the_naive_rule() -> None:
    plan = plan_retention("web", EXAMPLE_RULE, example_snapshots())
    assert {n: set(b) for n, b in plan.reasons.items()} == expected_keep(example_snapshots(), "web", EXAMPLE_RULE)


# ----------------------------------------------------------------- the rule, case by case


def test_newest_snapshot_of_a_day_represents_the_day() -> None:
    snaps = [made("p", at(t)) for t in ("2024-03-17T00:00", "2024-03-17T12:00", "2024-03-17T23:00")]
    plan = plan_retention("p", spec(daily=1), [*snaps, made("p", at("2024-03-18T00:00"))])
    assert [s.created for s in plan.keep] == [at("2024-03-18T00:00")]
    plan = plan_retention("p", spec(daily=2), [*snaps, made("p", at("2024-03-18T00:00"))])
    assert [s.created for s in plan.keep] == [at("2024-03-18T00:00"), at("2024-03-17T23:00")]


def test_days_without_snapshots_do_not_count_against_the_daily_count() -> None:
    snaps = [made("p", at(t)) for t in ("2024-03-01T03:00", "2024-03-02T03:00", "2024-03-10T03:00")]
    plan = plan_retention("p", spec(daily=3), snaps)
    assert plan.delete == ()  # a week of downtime does not age anything out


def test_weeks_are_iso_weeks_from_monday() -> None:
    sunday, monday = made("p", at("2024-03-17T23:00")), made("p", at("2024-03-18T01:00"))
    saturday = made("p", at("2024-03-16T12:00"))
    plan = plan_retention("p", spec(weekly=2), [saturday, sunday, monday])
    assert plan.keep == (monday, sunday)


def test_one_snapshot_serves_several_buckets() -> None:
    only = made("p", at("2024-03-18T10:00"))
    plan = plan_retention("p", spec(frequent=1, hourly=1, daily=1, weekly=1, monthly=1, yearly=1), [only])
    assert plan.reasons == {only.name: ("latest", *BUCKET_NAMES)}


def test_with_every_count_zero_only_the_newest_is_kept() -> None:
    snaps = [made("p", T0 - timedelta(hours=h)) for h in range(5)]
    plan = plan_retention("p", spec(), snaps)
    assert plan.keep == (snaps[0],) and plan.reasons == {snaps[0].name: ("latest",)}
    assert plan.delete == tuple(reversed(snaps[1:]))


def test_snapshot_seconds_before_a_period_boundary_counts_for_the_next_period() -> None:
    early = made("p", at("2024-03-18T09:59:55"))  # the 10:00 snapshot, by a clock 5 s fast
    snaps = [made("p", at("2024-03-18T09:00:01")), early, made("p", at("2024-03-18T11:00:02"))]
    plan = plan_retention("p", spec(hourly=3), snaps)
    assert plan.delete == ()
    plan = plan_retention("p", spec(hourly=3), [*snaps[:1], made("p", at("2024-03-18T09:59:45")), snaps[2]])
    assert len(plan.delete) == 1  # 15 s early is no longer skew: two snapshots in the 09:00 hour


def test_calendar_periods_follow_the_policy_timezone() -> None:
    late = made("p", at("2024-03-17T23:30"))  # Monday 00:30 in Berlin
    sunday = made("p", at("2024-03-17T20:00"))
    assert plan_retention("p", spec(daily=2), [sunday, late]).delete == (sunday,)  # one day in UTC
    assert plan_retention("p", spec(daily=2, timezone="Europe/Berlin"), [sunday, late]).delete == ()
    assert plan_retention("p", spec(weekly=2), [sunday, late]).delete == (sunday,)  # one ISO week in UTC
    assert plan_retention("p", spec(weekly=2, timezone="Europe/Berlin"), [sunday, late]).delete == ()


def test_frequent_keeps_the_newest_of_each_frequent_period() -> None:
    snaps = [made("p", T0 + timedelta(minutes=m)) for m in range(0, 60, 5)]  # every 5 min, 10:00 … 10:55
    plan = plan_retention("p", spec(frequent=3), snaps)
    assert [s.created.strftime("%H:%M") for s in plan.keep] == ["10:55", "10:40", "10:25"]
    plan = plan_retention("p", spec(frequent=3, frequent_period="30m"), snaps)
    assert [s.created.strftime("%H:%M") for s in plan.keep] == ["10:55", "10:25"]


def test_manual_and_other_policies_snapshots_are_never_touched() -> None:
    snaps = [MANUAL, NIGHTLY, made("web", T0)]
    plan = plan_retention("web", spec(), snaps)
    assert plan.keep == (snaps[2],) and plan.delete == ()
    assert plan_retention("nobody", spec(), snaps) == plan_retention("nobody", spec(), [])


def test_input_order_does_not_matter() -> None:
    snaps = example_snapshots()
    assert plan_retention("web", EXAMPLE_RULE, snaps) == plan_retention("web", EXAMPLE_RULE, snaps[::-1])


# ----------------------------------------------------------------- properties

rules = st.builds(
    lambda counts, tz, fp: spec(tz, fp, **dict(zip(BUCKET_NAMES, counts, strict=True))),
    st.lists(st.integers(0, 6), min_size=6, max_size=6),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    st.sampled_from(["1m", "5m", "15m", "1h", "20s"]),
)
offsets = st.one_of(st.integers(0, 3 * 86400), st.integers(0, 800 * 86400))  # dense and sparse histories


def history(entries: list[tuple[int, str | None]]) -> list[Snapshot]:
    return [Snapshot(f"s{i}", T0 - timedelta(seconds=back), owner) for i, (back, owner) in enumerate(entries)]


histories = st.lists(st.tuples(offsets, st.sampled_from(["p", "p", "p", "other", None])), max_size=60).map(history)


def periods(snaps: Iterable[Snapshot], bucket: str, rule: SnapshotPolicySpec) -> set[object]:
    """The `bucket` periods holding snapshots, by the naive rule's own period function."""
    every = spec(rule.schedule.timezone, f"{rule.frequent_period}s", **{bucket: 10**6})  # type: ignore[arg-type]
    reps = expected_keep(snaps, "p", every)
    return {name for name, why in reps.items() if bucket in why}


@PROPERTY
@given(rules, histories)
def test_never_deletes_a_snapshot_of_someone_else(rule: SnapshotPolicySpec, snaps: list[Snapshot]) -> None:
    plan = plan_retention("p", rule, snaps)
    own = {s.name for s in snaps if s.policy == "p"}
    kept, deleted = {s.name for s in plan.keep}, {s.name for s in plan.delete}
    assert kept | deleted == own and not kept & deleted
    assert all(s.policy == "p" for s in plan.delete)


@PROPERTY
@given(rules, histories)
def test_keeps_what_the_documented_rule_says(rule: SnapshotPolicySpec, snaps: list[Snapshot]) -> None:
    plan = plan_retention("p", rule, snaps)
    assert {n: set(b) for n, b in plan.reasons.items()} == expected_keep(snaps, "p", rule)


@PROPERTY
@given(rules, histories)
def test_never_keeps_fewer_than_asked_while_enough_exist(rule: SnapshotPolicySpec, snaps: list[Snapshot]) -> None:
    plan = plan_retention("p", rule, snaps)
    own = [s for s in snaps if s.policy == "p"]
    for bucket in BUCKET_NAMES:
        wanted = getattr(rule.retain, bucket)
        # each bucket's survivors stand for distinct periods: as many as asked, or all there are
        assert len(periods(plan.keep, bucket, rule)) >= min(wanted, len(periods(own, bucket, rule)))
    assert len(plan.keep) <= 1 + sum(getattr(rule.retain, b) for b in BUCKET_NAMES)
    assert bool(plan.keep) == bool(own)


@PROPERTY
@given(rules, histories, st.randoms(use_true_random=False))
def test_retention_is_idempotent_and_order_free(rule: SnapshotPolicySpec, snaps: list[Snapshot],
                                                rnd: random.Random) -> None:
    plan = plan_retention("p", rule, snaps)
    others = [s for s in snaps if s.policy != "p"]
    again = plan_retention("p", rule, [*plan.keep, *others])
    assert again.delete == () and again.keep == plan.keep and again.reasons == plan.reasons
    rnd.shuffle(snaps)
    assert plan_retention("p", rule, snaps) == plan


quarter_hours = st.integers(0, 2 * 24 * 4) | st.integers(0, 400 * 24 * 4)  # dense and sparse


@PROPERTY
@given(rules, st.lists(st.tuples(quarter_hours, st.floats(-5, 5)), max_size=80, unique_by=lambda p: p[0]))
def test_clock_skew_of_a_few_seconds_keeps_the_same_snapshots(rule: SnapshotPolicySpec,
                                                              slots: list[tuple[int, float]]) -> None:
    # Snapshots meant for quarter-hour fire times, each taken up to 5 s early or late: the same
    # fire times survive as when every clock is exact.
    on_time = [made("p", T0 - timedelta(minutes=15 * q)) for q, _ in slots]
    skewed = [Snapshot(s.name, s.created + timedelta(seconds=skew), "p")
              for s, (_, skew) in zip(on_time, slots, strict=True)]
    exact, jittered = plan_retention("p", rule, on_time), plan_retention("p", rule, skewed)
    assert [s.name for s in jittered.keep] == [s.name for s in exact.keep]
    assert jittered.reasons == exact.reasons


# ----------------------------------------------------------------- 40 simulated days


def web_policy(timezone: str) -> SnapshotPolicy:
    return SnapshotPolicy.model_validate({
        "apiVersion": "virtsync/v1", "kind": "SnapshotPolicy", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"tier": "web"}}, "schedule": {"every": "1h", "timezone": timezone},
                 "retain": {"hourly": 24, "daily": 7, "weekly": 4}},
    })


def simulate(policy: SnapshotPolicy, start: datetime, days: int, down: tuple[datetime, datetime],
             extra: Sequence[tuple[datetime, Snapshot]]) -> tuple[list[Snapshot], list[Snapshot]]:
    """Passes every 10 minutes (±4 s), taking what is due and deleting what retention says.
    Returns the guest's snapshots at the end and every snapshot virtsync ever took."""
    rnd = random.Random(7)
    snapshots: list[Snapshot] = []
    taken: list[Snapshot] = []
    pending = sorted(extra, key=lambda e: e[0])
    tick = start
    while tick < start + timedelta(days=days):
        while pending and pending[0][0] <= tick:
            snapshots.append(pending.pop(0)[1])  # made by someone else, meanwhile
        if not down[0] <= tick < down[1]:
            now = tick + timedelta(seconds=rnd.uniform(-4, 4))
            for d in plan_pass({"web1": GuestSnapshots({"tier": "web"}, tuple(snapshots))}, [policy], now):
                assert set(d.delete) <= {s.name for s in snapshots if s.policy == "web"} | {
                    d.take.name if d.take else ""}
                if d.take is not None:
                    snapshots.append(d.take)
                    taken.append(d.take)
                snapshots = [s for s in snapshots if s.name not in d.delete]
        tick += timedelta(minutes=10)
    return snapshots, taken


@pytest.mark.parametrize(("timezone", "start"), [
    ("UTC", at("2024-03-01T00:00:00")),
    ("Europe/Berlin", at("2024-10-10T00:00:00")),  # through the end of daylight saving time
])
def test_forty_days_of_hourly_snapshots_end_with_exactly_the_documented_set(timezone: str, start: datetime) -> None:
    policy = web_policy(timezone)
    manual = Snapshot("before-upgrade", start + timedelta(days=3, hours=5))
    foreign = Snapshot("vs-other-20240101T000000Z", start + timedelta(days=5), "other")
    down = (start + timedelta(days=20, hours=13), start + timedelta(days=23, hours=4))
    final, taken = simulate(policy, start, 40, down, [(manual.created, manual), (foreign.created, foreign)])

    # One snapshot per hour while up, one catch-up after the 3-day outage, none while down.
    up_hours = 40 * 24 - (down[1] - down[0]) // timedelta(hours=1)
    assert up_hours <= len(taken) <= up_hours + 2
    skew = timedelta(seconds=10)  # passes run up to 4 s early or late
    assert not [s for s in taken if down[0] + skew <= s.created < down[1] - skew]
    assert len([s for s in taken if down[1] - skew <= s.created < down[1] + timedelta(minutes=50)]) == 1

    # What is left is exactly what the documented rule picks from everything ever taken.
    expected = expected_keep(taken, "web", policy.spec)
    assert {s.name for s in final if s.policy == "web"} == set(expected)
    assert manual in final and foreign in final
    buckets = [b for why in expected.values() for b in why]
    assert (buckets.count("hourly"), buckets.count("daily"), buckets.count("weekly")) == (24, 7, 4)
    assert len(final) == len(expected) + 2
