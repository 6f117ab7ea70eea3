"""The service's work queue: one entry per key, announced work before a resync's, wait times."""

from __future__ import annotations

import threading
import time

from controller.service.queue import WorkQueue


def _drain(q: WorkQueue[str]) -> list[str]:
    out = []
    while (key := q.get(timeout=0.05)) is not None:
        out.append(key)
        q.done(key)
    return out


def test_announced_work_goes_before_what_a_resync_queued() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("resync-1", background=True)
    q.add("resync-2", background=True)
    q.add("event-1")
    q.add("event-2")
    assert _drain(q) == ["event-1", "event-2", "resync-1", "resync-2"]


def test_a_resync_key_announced_again_moves_ahead_and_runs_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a", background=True)
    q.add("b", background=True)
    q.add("b")  # an event for b while the resync's entry waits
    q.add("b", background=True)  # and the next pass again: still the announced entry
    assert _drain(q) == ["b", "a"]


def test_a_key_queued_twice_runs_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(3):
        q.add("a")
    q.add("a", background=True)
    assert q.depth() == 1
    assert _drain(q) == ["a"]


def test_a_key_added_while_processed_is_handed_out_again_only_when_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=1) == "a"
    q.add("a")
    q.add("a")
    q.add("b", background=True)
    assert q.get(timeout=0.05) == "b"  # a is still processed: not handed to a second worker
    assert q.get(timeout=0.05) is None
    q.done("b")
    q.done("a")
    assert _drain(q) == ["a"]


def test_a_retry_comes_back_as_announced_work() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("resync", background=True)
    q.add_after("retry", 0.05)
    time.sleep(0.1)
    assert _drain(q) == ["retry", "resync"]


def test_the_time_a_key_waited_is_measured_from_its_first_add() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    time.sleep(0.15)
    q.add("a")  # de-duplicated: the wait runs from the first
    assert q.get(timeout=1) == "a"
    assert 0.15 <= q.waited("a") < 1.0
    q.done("a")
    assert q.waited("a") == 0.0


def test_workers_never_hold_one_key_at_once() -> None:
    q: WorkQueue[int] = WorkQueue()
    inside: set[int] = set()
    clash: list[int] = []
    lock = threading.Lock()
    ran = [0]

    def work() -> None:
        while (key := q.get(timeout=0.2)) is not None:
            with lock:
                if key in inside:
                    clash.append(key)
                inside.add(key)
                ran[0] += 1
            time.sleep(0.001)
            with lock:
                inside.discard(key)
            q.done(key)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for t in workers:
        t.start()
    for i in range(2000):
        q.add(i % 5, background=i % 2 == 0)
    for t in workers:
        t.join(10)
    assert not clash
    assert 5 <= ran[0] <= 2000
    assert q.idle()


def test_adds_made_before_the_processing_last_observed_the_object_are_dropped() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=1) == "a"
    q.add("a")  # the event of its own repair, before the processing looked again
    seen = time.monotonic()
    q.done("a", seen_at=seen)
    assert q.get(timeout=0.05) is None and q.covered == 1


def test_an_add_after_the_last_observation_is_kept() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=1) == "a"
    q.add("a", background=True)
    seen = time.monotonic()
    time.sleep(0.01)
    q.add("a")  # changed again after it was observed: must be looked at again
    q.done("a", seen_at=seen)
    assert _drain(q) == ["a"] and q.covered == 0


def test_without_an_in_sync_observation_an_add_during_processing_runs_again() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=1) == "a"
    q.add("a")
    q.done("a")  # failed, or not in sync: no seen_at
    assert _drain(q) == ["a"]


def test_a_resync_key_that_waited_its_patience_goes_before_announced_work() -> None:
    q: WorkQueue[str] = WorkQueue(patience=0.1)
    q.add("setmem", background=True)
    q.add("event-1")
    time.sleep(0.15)
    q.add("event-2")
    assert _drain(q) == ["setmem", "event-1", "event-2"]
