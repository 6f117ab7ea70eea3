"""`serve` repairs several guests of one host at once (issue 17, target 6): one guest's reconcile
waiting on a slow call (a start takes a second or more at 1,000 guests) holds up neither the
host's lock for the other guests' reconciles (they share the service's one hold of it,
service/host_locks.py) nor their calls (each worker goes over a connection of its own)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from controller.hypervisor.events import start_event_loop
from controller.model.state import ResourceKey
from controller.service.runner import Service, ServiceOptions
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.service, pytest.mark.timeout(120)]

SLOW = 5.0  # seconds the first guest's reconcile is held up on its connection


def test_a_guest_is_repaired_while_another_guests_reconcile_of_the_host_waits_on_a_slow_call(
        hermetic_host: HermeticHost, tmp_path: Path) -> None:
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / "specs.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: busy}}
spec: {{uri: "{hermetic_host.uri}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: slow}}
spec: {{host: busy, state: stopped, memory: 32MiB}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: quick}}
spec: {{host: busy, state: stopped, memory: 32MiB}}
""")
    start_event_loop()
    svc = Service(ServiceOptions(paths=[str(specs_dir)], coordination=f"file://{tmp_path / 'coord'}", workers=2))
    svc.reload("test")
    specs, _ = svc.desired.snapshot()
    assert specs is not None
    conn = svc.engine.connection(specs.hosts[0])
    errors: list[BaseException] = []
    try:
        assert conn.lanes > 2, "a qemu host has several connections"
        lane0 = conn.get(lane=0)
        # Worker 0's connection is busy with a slow call: its reconcile of `slow` waits on it,
        # holding the host for its guest all along.
        busy = threading.Thread(target=lane0._runner.call, args=("a slow start", time.sleep, SLOW))
        busy.start()
        time.sleep(0.2)

        def reconcile_slow() -> None:
            try:
                svc.reconcile(ResourceKey("busy", "Guest", "slow"))  # the first lane: the busy one
            except BaseException as exc:
                errors.append(exc)

        first = threading.Thread(target=reconcile_slow)
        first.start()
        time.sleep(0.3)
        started = time.monotonic()
        svc.reconcile(ResourceKey("busy", "Guest", "quick"))  # another worker, beside it
        took = time.monotonic() - started
        slow_running = first.is_alive()
        busy.join()
        first.join(60)
    finally:
        conn.close()
        svc.locks.close()
    assert not errors, errors
    assert slow_running, "the slow guest's reconcile was not under way meanwhile"
    assert took < SLOW - 2, f"the quick guest's repair waited {took:.1f}s behind the slow one"
    raw = hermetic_host.connect()
    try:
        assert sorted(d.name() for d in raw.listAllDomains()) == ["quick", "slow"]  # both defined
    finally:
        raw.close()
