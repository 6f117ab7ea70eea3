"""The service's backoff of crash recoveries (pure: a clock the test moves)."""

from __future__ import annotations

from controller.model.state import ResourceKey
from controller.plan.actions import Recover, Start
from controller.service.crash_backoff import CrashBackoff, hold_recoveries

KEY = ResourceKey("h1", "Guest", "g")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_recovery_runs_at_once_and_each_next_one_waits_twice_as_long() -> None:
    clock = Clock()
    backoff = CrashBackoff(base=10, cap=300, window=600, clock=clock)
    held: list[tuple[float, int]] = []
    plan = [Recover(key=KEY, fault="crashed"), Start(key=ResourceKey("h1", "Guest", "other"))]

    def run() -> list[str]:
        return [a.op for a in hold_recoveries(plan, backoff, lambda a, w, n: held.append((w, n)))]

    assert run() == ["recover", "start"]  # 1st
    clock.now += 1
    assert run() == ["start"] and held[-1] == (9.0, 1)  # the other guest is not held up
    clock.now += 9
    assert run() == ["recover", "start"]  # 2nd, 10 s after the 1st
    clock.now += 19
    assert run() == ["start"] and held[-1] == (1.0, 2)  # the 3rd waits 20 s
    clock.now += 1
    assert run() == ["recover", "start"]
    for _ in range(10):  # the wait is capped
        clock.now += 300
        assert run() == ["recover", "start"]
    clock.now += 299
    assert run() == ["start"]


def test_a_guest_that_stayed_up_for_the_window_starts_from_nothing() -> None:
    clock = Clock()
    backoff = CrashBackoff(base=10, cap=300, window=600, clock=clock)
    for _ in range(4):
        backoff.record(KEY)
        clock.now += 5
    assert backoff.wait(KEY)[0] > 0
    clock.now += 601
    assert backoff.wait(KEY) == (0.0, 0)
    assert backoff.record(KEY) == 1
