"""Per-host write locks through tooz's file driver: one writer per host, the second waits and is
told who holds it, gives up after its timeout naming the holder, and a dead holder frees it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from controller.coordination import HostLocks, LockTimeout, check_url
from controller.errors import UsageError

URI = "qemu+tcp://kvm1/system"


def test_a_second_writer_waits_and_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    first, second = HostLocks(url, holder="virtsync apply"), HostLocks(url, holder="virtsync serve")
    told: list[tuple[str, str]] = []
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with first.holding({"kvm1": URI}):
            held.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(5)
    threading.Timer(0.5, release.set).start()
    with second.holding({"kvm1": URI}, on_wait=lambda h, who: told.append((h, who))) as waited:
        assert waited["kvm1"] >= 0.3
    t.join(5)
    assert told and told[0][0] == "kvm1" and told[0][1].startswith("virtsync apply pid ")
    assert " since " in told[0][1]


def test_a_writer_gives_up_after_its_timeout_naming_the_holder(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from controller.coordination import HostLocks\n"
        f"l = HostLocks({url!r}, holder='virtsync apply')\n"
        f"with l.holding({{'kvm1': {URI!r}}}):\n"
        "    print('held', flush=True); time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        other = HostLocks(url, holder="virtsync serve", timeout=0.5)
        assert other.try_hold("kvm1", URI) is None
        started = time.monotonic()
        expected = (rf"kvm1: another writer holds this host's lock \(virtsync apply pid {holder.pid} on .*\); "
                    r"gave up after 0.5s")
        with pytest.raises(LockTimeout, match=expected), other.holding({"kvm1": URI}):
            pass
        assert time.monotonic() - started < 3
    finally:
        holder.kill()
        holder.wait(10)
    # A holder killed with -9 releases its lock with its process.
    got = HostLocks(url, holder="x", timeout=2).try_hold("kvm1", URI)
    assert got is not None
    got.release()


def test_locks_of_different_hosts_do_not_wait_for_each_other(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    a, b = HostLocks(url, holder="a", timeout=0.2), HostLocks(url, holder="b", timeout=0.2)
    with a.holding({"kvm1": URI}), b.holding({"kvm2": "qemu+tcp://kvm2/system"}) as waited:
        assert waited == {}


@pytest.mark.parametrize("url", ["relative/dir", "file://relative"])
def test_a_coordination_url_that_cannot_work_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="--coordination"):
        check_url(url)


def test_a_file_lock_taken_without_tooz_excludes_a_writer_through_tooz_both_ways(tmp_path: Path) -> None:
    # HostLocks takes file:// locks itself (importing tooz costs a no-op apply ~0.25 s of CPU):
    # a writer of an older virtsync, or anything else through tooz's file driver, must still wait.
    from controller.coordination import lock_name

    url = f"file://{tmp_path}"
    script = (
        "import sys; from tooz import coordination\n"
        f"c = coordination.get_coordinator({url!r}, b'other'); c.start()\n"
        f"lock = c.get_lock({lock_name(URI)!r}.encode())\n"
        "for line in sys.stdin:\n"
        "    if line.strip() == 'take': print(lock.acquire(blocking=False), flush=True)\n"
        "    elif line.strip() == 'drop': lock.release(); print('dropped', flush=True)\n")
    tooz = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert tooz.stdin is not None and tooz.stdout is not None

    def ask(what: str) -> str:
        assert tooz.stdin is not None and tooz.stdout is not None
        tooz.stdin.write(what + "\n")
        tooz.stdin.flush()
        return tooz.stdout.readline().strip()

    try:
        ours = HostLocks(url, holder="virtsync apply")
        with ours.holding({"kvm1": URI}):
            assert ours._coordinator is None  # the lock above started no tooz coordinator
            assert ask("take") == "False"
        assert ask("take") == "True"
        assert ours.try_hold("kvm1", URI) is None
        assert ask("drop") == "dropped"
        held = ours.try_hold("kvm1", URI)
        assert held is not None
        held.release()
    finally:
        tooz.kill()
        tooz.wait(10)
