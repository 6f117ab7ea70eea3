"""serve's host locks: a host's object reconciles hold it together under one tooz (file) lock,
which keeps every other writer out; a whole-host writer holds it alone, after them, and new
object reconciles wait behind it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from controller.coordination import HostLocks, LockTimeout
from controller.service.host_locks import SharedHostLocks

URI = "qemu+tcp://kvm1/system"


def _other_process_can_take(url: str) -> bool:
    """Whether another process gets the host's lock right now."""
    out = subprocess.run([sys.executable, "-c", (
        "from controller.coordination import HostLocks\n"
        f"got = HostLocks({url!r}, holder='virtsync apply').try_hold('kvm1', {URI!r})\n"
        "print(got is not None)\n")], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip() == "True"


def test_object_reconciles_of_one_host_hold_it_together_and_keep_other_writers_out(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    locks = SharedHostLocks(url, holder="virtsync serve")
    inside = threading.Barrier(3, timeout=5)
    leave = threading.Event()

    def reconcile() -> None:
        with locks.shared("kvm1", URI):
            inside.wait()  # both at once, or this times out
            leave.wait(10)

    threads = [threading.Thread(target=reconcile) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    try:
        assert not _other_process_can_take(url)
        assert HostLocks(url, holder="virtsync apply").try_hold("kvm1", URI) is None
        assert locks.try_hold("kvm1", URI) is None  # a move's other end: not beside them
    finally:
        leave.set()
        for t in threads:
            t.join(5)
    assert _other_process_can_take(url)  # the last one out let the lock go


def test_a_whole_host_writer_waits_for_the_object_reconciles_and_new_ones_wait_behind_it(tmp_path: Path) -> None:
    locks = SharedHostLocks(f"file://{tmp_path}", holder="virtsync serve")
    order: list[str] = []
    first_in, leave_first = threading.Event(), threading.Event()

    def first() -> None:
        with locks.shared("kvm1", URI):
            first_in.set()
            leave_first.wait(10)
            order.append("object 1 out")

    def host() -> None:
        with locks.holding({"kvm1": URI}):
            order.append("host in")
            time.sleep(0.2)
            order.append("host out")

    def second() -> None:
        with locks.shared("kvm1", URI):
            order.append("object 2 in")

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_in.wait(5)
    th = threading.Thread(target=host)
    th.start()
    time.sleep(0.2)  # the host writer is waiting now
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.2)
    assert order == []  # neither got in beside the first object reconcile
    leave_first.set()
    for t in (t1, th, t2):
        t.join(5)
    assert order == ["object 1 out", "host in", "host out", "object 2 in"]


def test_the_engine_taking_the_host_inside_an_object_reconcile_takes_nothing_more(tmp_path: Path) -> None:
    locks = SharedHostLocks(f"file://{tmp_path}", holder="virtsync serve", timeout=1)
    with locks.shared("kvm1", URI):
        started = time.monotonic()
        with locks.holding({"kvm1": URI}) as waited:  # as Engine.reconcile does for its scope
            held = locks.try_hold("kvm1", URI)  # as a move's check of its own host does
            assert held is not None
            held.release()
        assert waited == {} and time.monotonic() - started < 0.5
        # Another thread's whole-host writer is still kept out.
        result: list[BaseException] = []

        def host() -> None:
            try:
                with locks.holding({"kvm1": URI}, timeout=0.3):
                    result.append(AssertionError("a whole-host writer got in beside an object reconcile"))
            except LockTimeout as exc:
                result.append(exc)

        t = threading.Thread(target=host)
        t.start()
        t.join(5)
        assert len(result) == 1 and isinstance(result[0], LockTimeout), result


def test_an_object_reconcile_gives_up_after_the_lock_timeout_while_another_process_writes(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from controller.coordination import HostLocks\n"
        f"l = HostLocks({url!r}, holder='virtsync apply')\n"
        f"with l.holding({{'kvm1': {URI!r}}}):\n"
        "    print('held', flush=True); time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        locks = SharedHostLocks(url, holder="virtsync serve", timeout=0.5)
        with pytest.raises(LockTimeout, match=r"virtsync apply pid"), locks.shared("kvm1", URI):
            pass
        # Nothing was left half-taken: once the other writer is gone, the host is ours.
    finally:
        holder.kill()
        holder.wait(10)
    with locks.shared("kvm1", URI):
        assert not _other_process_can_take(url)
    with locks.holding({"kvm1": URI}):
        pass


def test_a_steady_stream_of_repairs_makes_way_for_a_writer_of_another_process(tmp_path: Path) -> None:
    # Overlapping object reconciles, one starting every 50 ms and each holding 200 ms: the
    # shared hold never ends by itself. An apply waiting for the host must still get it, and
    # the repairs go on after it.
    url = f"file://{tmp_path}"
    locks = SharedHostLocks(url, holder="virtsync serve", timeout=30)
    stop = threading.Event()
    done: list[float] = []

    def reconcile() -> None:
        with locks.shared("kvm1", URI):
            time.sleep(0.2)
        done.append(time.monotonic())

    def stream() -> None:
        running: list[threading.Thread] = []
        while not stop.is_set():
            t = threading.Thread(target=reconcile)
            t.start()
            running.append(t)
            time.sleep(0.05)
        for t in running:
            t.join(35)

    feeder = threading.Thread(target=stream)
    feeder.start()
    try:
        time.sleep(0.5)
        assert not _other_process_can_take(url)  # held by the stream
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", (
            "import time\nfrom controller.coordination import HostLocks\n"
            f"locks = HostLocks({url!r}, holder='virtsync apply', timeout=10)\n"
            f"with locks.holding({{'kvm1': {URI!r}}}):\n"
            "    print('got', time.monotonic(), flush=True)\n    time.sleep(0.5)\n"
            "print('left', time.monotonic(), flush=True)\n")],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]  # not a LockTimeout after 10 s
        waited = time.monotonic() - started
        got = float(out.stdout.split()[1])
        left = float(out.stdout.split()[3])
        time.sleep(1.0)
    finally:
        stop.set()
        feeder.join(40)
    assert waited < 8, f"the apply waited {waited:.1f}s"
    assert not any(got < t < left for t in done), "no repair finished while the apply held the host"
    assert sum(t > left for t in done) >= 5, "the repairs went on after the apply"
    assert not list((tmp_path / "holders").glob("*.want.*")), "the waiting writer's record is gone"


def test_a_wait_record_of_a_process_that_died_or_of_this_one_asks_for_nothing(tmp_path: Path) -> None:
    from controller.coordination import lock_name

    locks = HostLocks(f"file://{tmp_path}", holder="virtsync serve")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holders = tmp_path / "holders"
    holders.mkdir()
    for pid in (gone.pid, os.getpid()):
        (holders / f"{lock_name(URI)}.want.{pid}.1").write_text('{"holder": "x"}')
    assert locks.wanted_elsewhere(URI) is None
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (holders / f"{lock_name(URI)}.want.{alive.pid}.1").write_text('{"holder": "virtsync apply pid 7"}')
        assert locks.wanted_elsewhere(URI) == "virtsync apply pid 7"
        assert locks.wanted_elsewhere("qemu+tcp://kvm2/system") is None  # another host's lock
    finally:
        alive.kill()
        alive.wait()
