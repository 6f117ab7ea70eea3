"""The per-call deadline: a call that overruns fails its caller, marks the host hung, and later
calls fail at once instead of queueing behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from controller.errors import HostUnreachable
from controller.hypervisor.connection import HostConnection
from controller.hypervisor.deadline import (
    LONG_CALLS,
    START_CALLS,
    Bounded,
    CallRunner,
    Direct,
    bounded,
    read_each,
)


def test_a_call_within_its_deadline_returns_its_value_and_raises_its_error() -> None:
    runner = CallRunner("h", "test:///default", 5)
    assert runner.call("add", lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        runner.call("div", lambda: 1 / 0)
    assert not runner.hung


def test_an_overrun_call_fails_within_the_deadline_and_later_calls_fail_at_once() -> None:
    runner = CallRunner("kvm2", "qemu+tcp://kvm2/system", 0.3)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=r"kvm2: no answer from qemu\+tcp://kvm2/system within 0.3s \(wait\)"):
        runner.call("wait", release.wait)
    assert time.monotonic() - started < 2
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="no answer from"):
        runner.call("other", lambda: 1)
    assert time.monotonic() - started < 0.1
    release.set()


def test_long_operations_have_no_call_deadline() -> None:
    runner = CallRunner("h", "test:///default", 0.05)
    def slow() -> str:
        time.sleep(0.2)
        return "done"

    assert runner.call("migrate", slow, long=True) == "done"
    assert not runner.hung
    assert {"migrateToURI3", "createXMLFrom", "sendAll", "snapshotCreateXML"} <= LONG_CALLS


def test_a_guest_start_has_no_call_deadline_but_takes_its_turn() -> None:
    # A start on a loaded host can take longer than the deadline while the daemon answers.
    runner = CallRunner("h", "test:///default", 0.05)
    order: list[str] = []

    def start() -> str:
        order.append("start in")
        time.sleep(0.2)
        order.append("start out")
        return "started"

    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(runner.call("createWithFlags", start, untimed=True)))
    t.start()
    time.sleep(0.05)
    runner.call("read", lambda: order.append("read"), timeout=2)  # waits for the start's turn to end
    t.join(5)
    assert done == ["started"] and not runner.hung
    assert order == ["start in", "start out", "read"]
    assert {"create", "createWithFlags"} <= START_CALLS["virDomain"] and "createXML" in START_CALLS["virConnect"]
    assert "virNetwork" not in START_CALLS and "virStoragePool" not in START_CALLS


def test_calls_to_different_hosts_run_at_once_each_on_a_worker() -> None:
    runners = [CallRunner(f"h{i}", "test:///default", 5) for i in range(4)]
    barrier = threading.Barrier(4, timeout=3)
    results: list[int] = []

    def one(i: int) -> None:
        results.append(runners[i].call("meet", lambda: barrier.wait() * 0 + i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(results) == [0, 1, 2, 3]  # all four ran at once: the barrier let them through


def test_one_hosts_calls_go_into_libvirt_one_at_a_time_but_long_ones_do_not_wait() -> None:
    # Two threads waiting on one connection crash libvirt 9.0's client when keepalive closes it.
    runner = CallRunner("h", "test:///default", 5)
    inside, most = 0, 0
    lock = threading.Lock()

    def short() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)
        with lock:
            inside -= 1

    threads = [threading.Thread(target=runner.call, args=("short", short)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert most == 1
    release = threading.Event()
    long_call = threading.Thread(target=runner.call, args=("migrate", release.wait), kwargs={"long": True})
    long_call.start()
    try:
        assert runner.call("short", lambda: 7, timeout=1) == 7  # not held up by the migration
    finally:
        release.set()
        long_call.join(5)


def test_bounded_libvirt_objects_wrap_what_they_return_and_pass_as_plain_ones() -> None:
    conn = bounded(libvirt.open("test:///default"), CallRunner("h", "test:///default", 5))
    assert isinstance(conn, Bounded)
    doms = conn.listAllDomains(0)
    assert doms and all(isinstance(d, Bounded) for d in doms)
    assert doms[0].name() == "test"
    pool = conn.storagePoolLookupByName("default-pool")
    assert isinstance(pool, Bounded)
    vol = pool.createXML("<volume><name>src.img</name><capacity>1048576</capacity></volume>")
    assert isinstance(vol, Bounded)
    # Handed to another libvirt method, a Bounded object is its plain self (libvirt reads ._o).
    clone = pool.createXMLFrom("<volume><name>copy.img</name><capacity>1048576</capacity></volume>", vol)
    assert clone.name() == "copy.img"
    conn.close()


class _FreesADomainInTheWindow(libvirt.virConnect):
    """A real test-driver connection whose listAllSecrets does what libvirt-python's does, except
    that a libvirt object is freed between the failed C call and the reading of its error — what
    the garbage collector does now and then. Only the first call is disturbed."""

    disturbed = 0

    def listAllSecrets(self, flags: int = 0) -> list[libvirt.virSecret]:
        import libvirtmod  # type: ignore[import-not-found]

        ret = libvirtmod.virConnectListAllSecrets(self._o, flags)
        if ret is None:
            if not self.disturbed:
                self.disturbed += 1
                dom = self.lookupByName("test")
                del dom  # virDomainFree resets the thread's last error
            raise libvirt.libvirtError("virConnectListAllSecrets() failed")
        return [libvirt.virSecret(self, s) for s in ret]


def test_a_read_whose_error_lost_its_code_is_asked_again() -> None:
    libvirt.registerErrorHandler(lambda *_: None, None)
    plain = libvirt.open("test:///default")
    conn = _FreesADomainInTheWindow(_obj=plain._o)
    with pytest.raises(libvirt.libvirtError) as raw:
        conn.listAllSecrets(0)
    assert raw.value.get_error_code() is None  # the mechanism: the code is gone
    conn.disturbed = 0
    with pytest.raises(libvirt.libvirtError) as seen:
        Bounded(conn, CallRunner("h1", "test:///default", 5)).listAllSecrets(0)
    assert seen.value.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT  # asked again: the driver's own answer
    assert conn.disturbed == 1


def _closed(raw: libvirt.virConnect) -> bool:
    return raw._o is None  # libvirt-python clears the handle in close()


def test_a_connection_is_closed_only_once_the_call_inside_it_has_returned() -> None:
    host = HostConnection("h", "test:///default", call_timeout=0.2)
    conn = host.get()
    raw = conn.unbounded
    hooked: list[libvirt.virConnect] = []
    host.on_close(hooked.append)
    inside, release = threading.Event(), threading.Event()

    def slow_read() -> int:
        inside.set()
        release.wait(10)
        return raw.numOfDomains()  # the connection is still usable when the call goes on

    answers: list[object] = []
    caller = threading.Thread(target=lambda: answers.append(_call_or_error(host, slow_read)))
    caller.start()
    assert inside.wait(5)
    caller.join(5)
    assert isinstance(answers[0], HostUnreachable)  # the caller gave up: the host counts as hung
    fresh = host.get()  # a new connection; the old one still has a call inside it
    assert fresh.unbounded is not raw
    assert not _closed(raw) and hooked == []
    with pytest.raises(HostUnreachable):
        conn.numOfDomains()  # nothing new starts on the old connection
    release.set()
    deadline = time.monotonic() + 5
    while not _closed(raw) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _closed(raw) and hooked == [raw]
    host.close()
    assert _closed(fresh.unbounded)  # no call inside: closed at once


def _call_or_error(host: HostConnection, fn: Callable[[], int]) -> object:
    try:
        return host._runners[0].call("slow read", fn)
    except HostUnreachable as exc:
        return exc


class _Counting(CallRunner):
    """A runner that counts the calls handed to its worker."""

    calls = 0

    def call(self, what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        self.calls += 1
        return super().call(what, fn, *args, **kwargs)


def _five_domains(tmp_path: Path) -> str:
    doms = "".join(f"<domain type='test'><name>g{i}</name><memory>65536</memory><os><type>hvm</type></os></domain>"
                   for i in range(5))
    (tmp_path / "host.xml").write_text(f"<node>{doms}</node>")
    return f"test://{tmp_path / 'host.xml'}"


def test_reads_of_many_objects_go_to_the_worker_in_runs_not_a_call_each(tmp_path: Path) -> None:
    uri = _five_domains(tmp_path)
    runner = _Counting("h", uri, 30)
    doms = bounded(libvirt.open(uri), runner).listAllDomains(0)
    runner.calls = 0
    got = read_each(doms[0], "read domains", doms, lambda d: (d.name(), d.XMLDesc(0), type(d)))
    assert runner.calls == 1  # five domains, ten libvirt calls: one handoff
    assert [g[:2] for g in got] == [(d.name(), d.unbounded.XMLDesc(0)) for d in doms]
    assert all(g[2] is Direct for g in got)
    # A run ends after a tenth of the call timeout: each call inside keeps its own deadline.
    slow = _Counting("h", uri, 0.5)
    slow_doms = bounded(libvirt.open(uri), slow).listAllDomains(0)
    slow.calls = 0

    def sleepy(d: Direct) -> str:
        time.sleep(0.06)
        return str(d.name())

    assert read_each(slow_doms[0], "read domains", slow_doms, sleepy) == [d.name() for d in slow_doms]
    assert slow.calls == 5 and not slow.hung


def test_a_run_of_reads_that_stops_answering_makes_the_host_hung(tmp_path: Path) -> None:
    uri = _five_domains(tmp_path)
    runner = CallRunner("kvm3", uri, 0.3)
    doms = bounded(libvirt.open(uri), runner).listAllDomains(0)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=r"within 0.3s \(read domains\)"):
        read_each(doms[0], "read domains", doms, lambda d: release.wait(5))
    assert time.monotonic() - started < 2 and runner.hung
    release.set()


def test_a_read_in_a_run_whose_error_lost_its_code_is_asked_again() -> None:
    libvirt.registerErrorHandler(lambda *_: None, None)
    plain = libvirt.open("test:///default")
    conn = _FreesADomainInTheWindow(_obj=plain._o)
    seen = Bounded(conn, CallRunner("h1", "test:///default", 5))
    with pytest.raises(libvirt.libvirtError) as err:
        read_each(seen, "list secrets", [seen], lambda c: c.listAllSecrets(0))
    assert err.value.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT  # asked again: the driver's own answer
    assert conn.disturbed == 1
