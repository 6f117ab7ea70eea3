"""serve's start slots with a real reconcile (libvirt's test driver): a guest whose repair is a
start, while its host's slots are taken, is left as it is and waits in line; when a start
ends it is queued again and started."""

from __future__ import annotations

from pathlib import Path

import libvirt

from controller.logging import configure
from controller.model.state import ResourceKey
from controller.service.runner import Service, ServiceOptions
from controller.service.starts import StartSlots, Ticket
from tests.integration.conftest import connection, guest_doc, host_doc, write_host, write_specs

WEB = ResourceKey("kvm1", "Guest", "web")
OTHER = ResourceKey("kvm1", "Guest", "other")


def test_a_start_beyond_the_hosts_slots_waits_in_line_and_runs_when_one_is_free(tmp_path: Path) -> None:
    configure()  # logs to this test's stderr (an earlier test's may be closed)
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("web", state="stopped", memory="64MiB")])
    svc = Service(ServiceOptions(paths=[str(specs.parent)], coordination=f"file://{tmp_path / 'coord'}"))
    svc.starts = StartSlots(svc.queue.add, limit=1)
    svc.reload("test")
    while (key := svc.queue.get(timeout=0)) is not None:  # this test reconciles by hand
        svc.queue.done(key)
    try:
        assert svc.reconcile(WEB, Ticket()) is not None  # defined, stopped: no start, no slot
        write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("web", state="running", memory="64MiB")])
        svc.reload("test")
        assert svc.queue.get(timeout=0) == WEB
        svc.queue.done(WEB)
        assert svc.starts.take(OTHER)  # another guest's start is under way: the one slot
        waiting = Ticket()
        assert svc.reconcile(WEB, waiting) is None  # not in sync: nothing was carried out
        assert not waiting.took and svc.starts.waiting("kvm1") == 1
        assert connection(uri).lookupByName("web").info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        assert svc.queue.get(timeout=0) is None  # in line, not in the queue
        svc.starts.done(OTHER, took=True)  # that start ended
        assert svc.queue.get(timeout=0) == WEB
        turn = Ticket()
        assert svc.reconcile(WEB, turn) is not None
        assert turn.took
        assert connection(uri).lookupByName("web").info()[0] == libvirt.VIR_DOMAIN_RUNNING
        svc.queue.done(WEB)
        svc.starts.done(WEB, took=turn.took)
        assert svc.starts.take(OTHER)  # its slot was given back
    finally:
        svc.locks.close()
