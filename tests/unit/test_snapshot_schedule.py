"""Snapshot scheduling: fire times, due, catch-up after downtime, clock skew, DST, names, selection."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.snapshots import (
    GuestSnapshots,
    Snapshot,
    due,
    last_fire,
    next_run,
    parse_name,
    plan_pass,
    policies_for,
    snapshot_name,
)
from controller.spec.models import Schedule, SnapshotPolicy
from controller.spec.types import NAME_PATTERN

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2024, 3, 18, 10, 0, tzinfo=UTC)
SCHEDULES = ["0 * * * *", "*/15 * * * *", "0 3 * * *", "30 2 * * 1", "5m", "1h", "4h", "1d"]
PROPERTY = settings(max_examples=200, deadline=None)


def sched(text: str, timezone: str = "UTC") -> Schedule:
    kind = "cron" if " " in text else "every"
    return Schedule.model_validate({kind: text, "timezone": timezone})


def policy(name: str, schedule: str, labels: dict[str, str] | None = None, **retain: int) -> SnapshotPolicy:
    spec: dict[str, Any] = {"selector": {"matchLabels": labels or {}}, "retain": retain}
    spec["schedule"] = {"cron": schedule} if " " in schedule else {"every": schedule}
    return SnapshotPolicy.model_validate(
        {"apiVersion": "virtsync/v1", "kind": "SnapshotPolicy", "metadata": {"name": name}, "spec": spec})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Fleet:
    """Guests' snapshots as a host would hold them, advanced by plan_pass decisions."""

    def __init__(self, guests: dict[str, dict[str, str]], policies: list[SnapshotPolicy]):
        self.labels = guests
        self.policies = policies
        self.snapshots: dict[str, list[Snapshot]] = {g: [] for g in guests}
        self.taken: list[tuple[str, Snapshot]] = []

    def run(self, now: datetime, created_offset: timedelta = timedelta()) -> None:
        state = {g: GuestSnapshots(self.labels[g], tuple(self.snapshots[g])) for g in self.labels}
        for d in plan_pass(state, self.policies, now):
            if d.take is not None:
                # the host's clock may differ from the controller's: it records its own time
                made = Snapshot(d.take.name, d.take.created + created_offset, d.take.policy, quiesced=False)
                self.snapshots[d.guest].append(made)
                self.taken.append((d.guest, made))
            self.snapshots[d.guest] = [s for s in self.snapshots[d.guest] if s.name not in d.delete]


# ----------------------------------------------------------------- fire times and due


def test_every_fires_on_multiples_of_the_interval_since_the_epoch() -> None:
    assert last_fire(sched("4h"), at("2024-03-18T10:30:00")) == at("2024-03-18T08:00:00")
    assert next_run(sched("4h"), at("2024-03-18T10:30:00")) == at("2024-03-18T12:00:00")
    assert next_run(sched("1d"), at("2024-03-18T00:00:00")) == at("2024-03-19T00:00:00")
    assert last_fire(sched("1d", "Europe/Berlin"), at("2024-03-18T10:30:00")) == at("2024-03-18T00:00:00")


def test_cron_fire_time_is_its_own_last_fire_and_next_run_is_strictly_later() -> None:
    assert last_fire(sched("0 3 * * *"), at("2024-03-18T03:00:00")) == at("2024-03-18T03:00:00")
    assert last_fire(sched("0 3 * * *"), at("2024-03-18T02:59:59")) == at("2024-03-17T03:00:00")
    assert next_run(sched("0 3 * * *"), at("2024-03-18T03:00:00")) == at("2024-03-19T03:00:00")


def test_first_snapshot_of_a_policy_is_due_at_once() -> None:
    assert due(sched("0 3 * * *"), None, at("2024-03-18T14:00:00"))


def test_cron_snapshot_is_due_after_its_fire_time_and_not_again_until_the_next() -> None:
    s = sched("0 3 * * *")
    last = at("2024-03-17T03:00:20")
    assert not due(s, last, at("2024-03-18T02:59:00"))
    assert due(s, last, at("2024-03-18T03:00:00"))
    assert due(s, last, at("2024-03-18T03:01:00"))
    assert not due(s, at("2024-03-18T03:01:00"), at("2024-03-18T23:59:59"))


def test_snapshot_a_few_seconds_before_the_fire_time_counts_for_it() -> None:
    # A host clock 5 s behind recorded 09:59:55 for the snapshot of the 10:00 fire time.
    assert not due(sched("1h"), at("2024-03-18T09:59:55"), at("2024-03-18T10:00:30"))
    assert due(sched("1h"), at("2024-03-18T09:59:45"), at("2024-03-18T10:00:30"))


def test_pass_a_few_seconds_early_takes_nothing_and_the_next_pass_takes_it() -> None:
    last = at("2024-03-18T09:00:00")
    assert not due(sched("1h"), last, at("2024-03-18T09:59:57"))
    assert due(sched("1h"), last, at("2024-03-18T10:00:57"))


def test_skew_allowance_shrinks_for_very_short_intervals() -> None:
    assert due(sched("20s"), at("2024-03-18T10:00:00"), at("2024-03-18T10:00:20"))


def test_cron_runs_on_the_wall_clock_of_its_timezone() -> None:
    berlin = sched("0 3 * * *", "Europe/Berlin")
    assert last_fire(berlin, at("2024-03-18T10:00:00")) == at("2024-03-18T02:00:00")  # CET, UTC+1
    assert last_fire(berlin, at("2024-07-18T10:00:00")) == at("2024-07-18T01:00:00")  # CEST, UTC+2


def test_wall_clock_time_repeated_when_clocks_go_back_fires_once() -> None:
    # Europe/Berlin, 2024-10-27: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice.
    s = sched("30 2 * * *", "Europe/Berlin")
    assert next_run(s, at("2024-10-26T23:00:00")) == at("2024-10-27T00:30:00")
    assert next_run(s, at("2024-10-27T00:30:00")) == at("2024-10-28T01:30:00")
    assert last_fire(s, at("2024-10-27T05:00:00")) == at("2024-10-27T00:30:00")


def test_hourly_cron_keeps_firing_every_real_hour_except_the_repeated_wall_clock_hour() -> None:
    s = sched("0 * * * *", "Europe/Berlin")
    fires, t = [], at("2024-10-26T23:30:00")
    while t < at("2024-10-27T04:00:00"):
        t = next_run(s, t)
        fires.append(t.strftime("%H:%M"))
    assert fires == ["00:00", "02:00", "03:00", "04:00"]  # UTC; 01:00 UTC is 02:00 CET, the repeat


def test_wall_clock_time_skipped_when_clocks_go_forward_fires_after_the_gap() -> None:
    # Europe/Berlin, 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    s = sched("30 2 * * *", "Europe/Berlin")
    assert next_run(s, at("2024-03-30T12:00:00")) == at("2024-03-31T01:00:00")  # 03:00 CEST
    assert next_run(s, at("2024-03-31T01:00:00")) == at("2024-04-01T00:30:00")


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due(sched("1h"), None, datetime(2024, 3, 18, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        Snapshot("s", datetime(2024, 3, 18, 10, 0))


schedules = st.sampled_from(SCHEDULES)
timezones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
moments = st.integers(0, 3 * 365 * 86400).map(lambda s: T0 + timedelta(seconds=s))


@PROPERTY
@given(schedules, timezones, st.none() | moments, moments)
def test_due_is_idempotent_once_the_snapshot_is_taken(text: str, tz: str, last: datetime | None,
                                                     now: datetime) -> None:
    s = sched(text, tz)
    due(s, last, now)  # whatever it says, after taking at `now` nothing is due until the next fire time
    nxt = next_run(s, now)
    assert not due(s, now, now)
    assert not due(s, now, nxt - timedelta(seconds=1))
    assert due(s, now, nxt + timedelta(minutes=1)) or nxt - now <= timedelta(seconds=10)


@PROPERTY
@given(schedules, timezones, moments)
def test_next_run_is_the_first_fire_time_after(text: str, tz: str, after: datetime) -> None:
    s = sched(text, tz)
    nxt = next_run(s, after)
    assert nxt > after
    assert last_fire(s, nxt) == nxt
    assert last_fire(s, nxt - timedelta(microseconds=1)) <= after


@PROPERTY
@given(st.sampled_from([s for s in SCHEDULES if s != "30 2 * * 1"]), timezones, moments,
       st.integers(3 * 86400, 3 * 86400 + 7200))
def test_service_down_for_three_days_takes_one_snapshot_per_policy_not_one_per_missed_fire(
        text: str, tz: str, last: datetime, down: int) -> None:
    s = sched(text, tz)
    resume = last + timedelta(seconds=down)
    assert due(s, last, resume)
    taken_at = resume
    t = resume + timedelta(minutes=1)
    while t < next_run(s, resume):  # a pass every 7 minutes until the next fire time
        assert not due(s, taken_at, t)
        t += timedelta(minutes=7)


@PROPERTY
@given(st.sampled_from(["5m", "15m", "1h", "*/10 * * * *", "0 * * * *"]), st.integers(0, 2**32))
def test_clock_skew_of_a_few_seconds_neither_doubles_nor_misses_a_snapshot(text: str, seed: int) -> None:
    # The controller's clock jitters ±5 s around a pass on every whole minute, so passes land
    # just before or after fire times; the host records the snapshot time with its own clock,
    # up to ±5 s off. Each fire time still gets exactly one snapshot.
    rnd = random.Random(seed)
    fleet = Fleet({"g": {}}, [policy("p", text)])
    # No fire time lies in the last 2 minutes, so every fire time before `end` has its pass.
    start, end = T0 + timedelta(minutes=2), T0 + timedelta(hours=3, minutes=3)
    tick = start
    while tick < end:
        fleet.run(tick + timedelta(seconds=rnd.uniform(-5, 5)), timedelta(seconds=rnd.uniform(-5, 5)))
        tick += timedelta(minutes=1)
    s = sched(text)
    fires = []
    t = start
    while (t := next_run(s, t)) < end:
        fires.append(t)
    times = sorted(snap.created for _, snap in fleet.taken)
    assert len(times) == 1 + len(fires)  # the first pass, then one per fire time
    for fire, made in zip(fires, times[1:], strict=True):
        assert fire - timedelta(seconds=10) <= made <= fire + timedelta(seconds=75)


# ----------------------------------------------------------------- passes over guests


def test_three_days_down_catch_up_with_one_snapshot_per_due_policy() -> None:
    policies = [policy("hourly", "1h", hourly=24), policy("nightly", "0 3 * * *", daily=7)]
    fleet = Fleet({"web1": {}, "web2": {}}, policies)
    fleet.run(at("2024-03-18T03:00:05"))
    assert len(fleet.taken) == 4
    t = at("2024-03-21T14:07:00")  # back after three and a half days
    while t < at("2024-03-21T15:00:00"):
        fleet.run(t)
        t += timedelta(minutes=1)
    caught_up = [(g, s.policy, s.created) for g, s in fleet.taken[4:]]
    assert caught_up == [
        ("web1", "hourly", at("2024-03-21T14:07:00")),
        ("web1", "nightly", at("2024-03-21T14:07:00")),
        ("web2", "hourly", at("2024-03-21T14:07:00")),
        ("web2", "nightly", at("2024-03-21T14:07:00")),
    ]
    fleet.run(at("2024-03-21T15:00:01"))
    assert [s.policy for _, s in fleet.taken[8:]] == ["hourly", "hourly"]


def test_guest_selected_by_two_policies_gets_and_prunes_each_independently() -> None:
    policies = [policy("nightly", "0 3 * * *", {"backup": "yes"}, daily=1),
                policy("hourly", "1h", {"tier": "web"}, hourly=2)]
    old = [Snapshot("vs-nightly-20240318T030000Z", at("2024-03-18T03:00:00"), "nightly"),
           Snapshot("vs-hourly-20240318T080000Z", at("2024-03-18T08:00:00"), "hourly"),
           Snapshot("vs-hourly-20240318T090000Z", at("2024-03-18T09:00:00"), "hourly")]
    guests = {"web1": GuestSnapshots({"tier": "web", "backup": "yes"}, tuple(old))}
    decisions = plan_pass(guests, policies, at("2024-03-18T10:00:00.250"))
    assert [(d.policy, d.take and d.take.name, d.delete) for d in decisions] == [
        ("hourly", "vs-hourly-20240318T100000Z", ("vs-hourly-20240318T080000Z",)),
        ("nightly", None, ()),
    ]
    assert decisions[0].retention.reasons == {"vs-hourly-20240318T100000Z": ("latest", "hourly"),
                                              "vs-hourly-20240318T090000Z": ("hourly",)}


def test_pass_lists_every_selected_pair_and_skips_unselected_guests() -> None:
    guests = {"db1": GuestSnapshots({"tier": "db"}), "web1": GuestSnapshots({"tier": "web"})}
    decisions = plan_pass(guests, [policy("web", "1h", {"tier": "web"})], T0)
    assert [(d.guest, d.policy, d.changes) for d in decisions] == [("web1", "web", True)]
    taken = decisions[0].take
    assert taken is not None
    again = plan_pass({"web1": GuestSnapshots({"tier": "web"}, (taken,))}, [policy("web", "1h", {"tier": "web"})], T0)
    assert [(d.take, d.delete, d.changes) for d in again] == [(None, (), False)]


def test_snapshots_of_a_policy_that_no_longer_selects_the_guest_are_left_alone() -> None:
    stale = Snapshot("vs-gone-20240101T000000Z", at("2024-01-01T00:00:00"), "gone")
    decisions = plan_pass({"web1": GuestSnapshots({}, (stale,))}, [policy("web", "1h", {"tier": "web"})], T0)
    assert decisions == []


def test_no_take_when_a_snapshot_of_that_name_already_exists() -> None:
    # A host clock 30 s behind: the record says 09:59:30, but the name is this second's.
    clash = Snapshot("vs-web-20240318T100000Z", at("2024-03-18T09:59:30"), "web")
    decisions = plan_pass({"g": GuestSnapshots({}, (clash,))}, [policy("web", "1h")], T0)
    assert decisions[0].take is None


def test_policies_for_needs_every_label_and_orders_by_name() -> None:
    policies = [policy("b", "1h", {"tier": "web"}), policy("a", "1h", {"tier": "web", "backup": "yes"}),
                policy("c", "1h", {"tier": "db"}), policy("all", "1h")]
    chosen = policies_for({"tier": "web", "backup": "yes", "x": "y"}, policies)
    assert [p.metadata.name for p in chosen] == ["a", "all", "b"]
    assert [p.metadata.name for p in policies_for({"tier": "web"}, policies)] == ["all", "b"]
    assert [p.metadata.name for p in policies_for({}, policies)] == ["all"]


# ----------------------------------------------------------------- names


def test_names_say_policy_and_utc_time() -> None:
    berlin = datetime.fromisoformat("2024-03-18T11:00:00.750+01:00")
    assert snapshot_name("web", berlin) == "vs-web-20240318T100000Z"


def test_policy_names_with_dashes_and_dots_parse_back() -> None:
    parsed = parse_name("vs-web-a.b-20240318T100000Z")
    assert parsed is not None and (parsed.policy, parsed.created) == ("web-a.b", at("2024-03-18T10:00:00"))


@pytest.mark.parametrize("name", ["before-upgrade", "vs-web-20240318T100000", "vs--20240318T100000Z",
                                  "vs-web-20241318T100000Z", "xvs-web-20240318T100000Z", "vs-web/x-20240318T100000Z"])
def test_other_names_are_not_virtsync_names(name: str) -> None:
    assert parse_name(name) is None


def test_invalid_policy_names_are_refused() -> None:
    with pytest.raises(ValueError, match="not a valid policy name"):
        snapshot_name("a/b", T0)


@PROPERTY
@given(st.from_regex(NAME_PATTERN, fullmatch=True), moments)
def test_names_round_trip_and_are_valid_libvirt_snapshot_names(name: str, when: datetime) -> None:
    text = snapshot_name(name, when)
    assert "/" not in text and text.isascii() and not text.startswith(".")
    parsed = parse_name(text)
    assert parsed is not None and (parsed.policy, parsed.created) == (name, when.replace(microsecond=0))
