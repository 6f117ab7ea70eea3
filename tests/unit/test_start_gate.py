"""Guests one apply starts together on a host are started paused and resumed together."""

from __future__ import annotations

import threading
import time

from controller.apply.start_gate import StartGate, gated_starts
from controller.model.state import ResourceKey
from controller.plan import actions as act


def _key(name: str) -> ResourceKey:
    return ResourceKey("h", "Guest", name)


def test_two_or_more_lone_starts_of_running_guests_are_gated_and_nothing_else_is() -> None:
    start_a, start_b = act.Start(key=_key("a")), act.Start(key=_key("b"))
    paused = act.Start(key=_key("p"), paused=True)
    stop = act.Stop(key=_key("s"))
    assert gated_starts([[start_a], [start_b], [paused], [stop]]) == {_key("a"), _key("b")}
    assert gated_starts([[start_a], [paused], [stop]]) == set()  # one start: nothing to wait for
    assert gated_starts([[stop, start_a], [start_b]]) == set()  # a start after a stop is no lone start


def test_the_gate_opens_once_every_start_has_arrived_whether_made_or_failed() -> None:
    gate = StartGate({_key("a"), _key("b"), _key("c")}, concurrency=2)
    opened: list[float] = []
    waiter = threading.Thread(target=lambda: opened.append(gate.wait(timeout=10)))
    waiter.start()
    gate.arrive(_key("a"))
    gate.arrive(_key("a"))  # arriving twice (made, then its chain's end) counts once
    gate.arrive(_key("b"))
    time.sleep(0.2)
    assert not opened, "c has not arrived: the gate stays shut"
    gate.arrive(_key("c"))  # e.g. its start failed, or was skipped
    waiter.join(5)
    assert opened and opened[0] < 5


def test_a_start_that_never_arrives_holds_the_others_only_until_the_timeout() -> None:
    gate = StartGate({_key("a"), _key("b")}, concurrency=1)
    gate.arrive(_key("a"))
    assert 0.1 <= gate.wait(timeout=0.2) < 2
