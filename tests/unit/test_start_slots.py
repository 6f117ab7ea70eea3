"""serve's guest starts under way on one host at once: a start beyond the limit waits in line
off its worker and is queued again, in order, when a start ends; a slot promised to a key that
no longer needs it goes on to the next."""

from __future__ import annotations

from controller.model.state import ResourceKey
from controller.service.starts import StartSlots


def _key(name: str, host: str = "kvm1") -> ResourceKey:
    return ResourceKey(host, "Guest", name)


def test_starts_beyond_the_limit_wait_in_line_and_are_woken_in_order() -> None:
    woken: list[ResourceKey] = []
    slots = StartSlots(woken.append, limit=2)
    assert slots.take(_key("a")) and slots.take(_key("b"))
    assert not slots.take(_key("c")) and not slots.take(_key("d"))
    assert not slots.take(_key("c"))  # queued again meanwhile (an event): still one place in line
    assert slots.waiting("kvm1") == 2 and woken == []
    slots.done(_key("a"), took=True)
    assert woken == [_key("c")]
    assert not slots.take(_key("e"))  # a new start does not overtake the line
    assert slots.take(_key("c"))  # the woken one has its slot kept for it
    slots.done(_key("c"), took=True)
    assert woken == [_key("c"), _key("d")]


def test_a_promised_slot_that_is_not_needed_goes_to_the_next_in_line() -> None:
    woken: list[ResourceKey] = []
    slots = StartSlots(woken.append, limit=1)
    assert slots.take(_key("a"))
    assert not slots.take(_key("b")) and not slots.take(_key("c"))
    slots.done(_key("a"), took=True)
    assert woken == [_key("b")]
    slots.done(_key("b"), took=False)  # b was repaired meanwhile: its reconcile started nothing
    assert woken == [_key("b"), _key("c")]
    slots.done(_key("x"), took=False)  # a reconcile that neither took nor was promised: nothing
    assert woken == [_key("b"), _key("c")]


def test_hosts_have_their_own_slots() -> None:
    slots = StartSlots(lambda _k: None, limit=1)
    assert slots.take(_key("a", "kvm1"))
    assert slots.take(_key("a", "kvm2"))
    assert not slots.take(_key("b", "kvm1"))
