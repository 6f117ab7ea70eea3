"""A guest's reconcile in `serve` says from when its last observation saw the guest in sync, so
that the events of its own repair (queued while it ran, before it looked again) do not cost one
more reconcile each; a reconcile that leaves the guest out of sync says nothing, and neither
does one whose specs were replaced meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import libvirt

from controller.logging import configure
from controller.model.state import ResourceKey
from controller.service.runner import Service, ServiceOptions
from tests.integration.conftest import connection, guest_doc, host_doc, write_host, write_specs

WEB = ResourceKey("kvm1", "Guest", "web")


def _service(tmp_path: Path) -> tuple[Service, str]:
    configure()  # logs to this test's stderr (an earlier test's may be closed)
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("web", state="stopped", memory="64MiB")])
    svc = Service(ServiceOptions(paths=[str(specs.parent)], coordination=f"file://{tmp_path / 'coord'}"))
    svc.reload("test")
    while (key := svc.queue.get(timeout=0)) is not None:  # this test reconciles by hand
        svc.queue.done(key)
    return svc, uri


def test_a_repair_reports_a_time_after_its_last_action_and_a_no_op_one_after_it_took_the_lock(
        tmp_path: Path) -> None:
    svc, uri = _service(tmp_path)
    try:
        before = time.monotonic()
        repaired = svc.reconcile(WEB)  # web is missing: defined, then observed again
        after = time.monotonic()
        assert repaired is not None and before < repaired < after
        assert connection(uri).lookupByName("web").info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        again = svc.reconcile(WEB)  # nothing to do
        assert again is not None and after < again < time.monotonic()
    finally:
        svc.locks.close()


def test_a_reconcile_that_leaves_the_guest_out_of_sync_reports_nothing(tmp_path: Path) -> None:
    svc, uri = _service(tmp_path)
    try:
        assert svc.reconcile(WEB) is not None
        connection(uri).lookupByName("web").undefine()
        svc.suspended = True  # reporting only: the drift stays
        assert svc.reconcile(WEB) is None
        svc.suspended = False
        assert svc.reconcile(WEB) is not None
    finally:
        svc.locks.close()


def test_specs_loaded_during_a_reconcile_make_it_report_nothing(tmp_path: Path) -> None:
    svc, uri = _service(tmp_path)
    original = svc._reconcile_locked

    def reload_meanwhile(*args: object) -> float | None:
        got = original(*args)  # type: ignore[arg-type]
        # The spec changes while the reconcile compares against the old one.
        write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("web", state="stopped", memory="96MiB")])
        svc.reload("test")
        return got

    svc._reconcile_locked = reload_meanwhile  # type: ignore[method-assign]
    try:
        assert svc.reconcile(WEB) is None
        assert svc.queue.get(timeout=0) == WEB  # the spec change queued web again
    finally:
        svc.locks.close()
