"""How a whole-host observation lists domains and probes the host (libvirt's test driver)."""

from __future__ import annotations

from pathlib import Path

import libvirt

from controller.engine import Engine
from controller.hypervisor.connection import ConnectionPool
from controller.hypervisor.observe import observe_guests
from controller.spec.loader import load_specs
from tests.integration.conftest import host_doc, unmanaged_domain, write_host, write_specs


def test_transient_persistent_running_and_stopped_domains_are_told_apart(tmp_path: Path) -> None:
    uri = write_host(tmp_path, unmanaged_domain("up") + unmanaged_domain("down", running=False))
    conn = libvirt.open(uri)
    try:
        conn.createXML("<domain type='test'><name>passing</name><memory unit='MiB'>64</memory>"
                       "<os><type>hvm</type></os></domain>", 0)
        listed = [d.name() for d in conn.listAllDomains(0)]
        guests = observe_guests(conn, "h")
    finally:
        conn.close()
    assert list(guests) == listed  # in the order libvirt lists them
    up, down, passing = guests["up"], guests["down"], guests["passing"]
    assert (up.state, up.persistent is not None, up.live is not None) == ("running", True, True)
    assert (down.state, down.persistent is not None, down.live) == ("stopped", True, None)
    assert (passing.state, passing.persistent, passing.live is not None) == ("running", None, True)


def test_a_connection_is_probed_once_and_a_new_connection_again(tmp_path: Path) -> None:
    uri = write_host(tmp_path, unmanaged_domain("up"))
    specs = load_specs([write_specs(tmp_path, [host_doc(uri)])]).raise_for_errors()
    engine = Engine(pool=ConnectionPool())
    try:
        first = engine.observe(specs).states["kvm1"].caps
        assert engine.observe(specs).states["kvm1"].caps is first  # not probed again
        engine.connection(specs.hosts[0]).close()
        again = engine.observe(specs).states["kvm1"].caps
        assert again is not first and again == first  # a new connection (a restarted daemon) is probed
    finally:
        engine.close()


def test_the_fingerprint_changes_when_only_a_running_guests_live_definition_changes(tmp_path: Path) -> None:
    from controller.hypervisor.observe import fingerprint

    uri = write_host(tmp_path, unmanaged_domain("up"))
    conn = libvirt.open(uri)
    try:
        before = observe_guests(conn, "h")
        assert before["up"].live is before["up"].persistent  # one definition, read once
        again = fingerprint(observe_guests(conn, "h"), {}, {})
        assert again == fingerprint(before, {}, {})  # nothing changed: the same digest
        # the running guest's memory only (the definition stays): the live essence is its own now
        conn.lookupByName("up").setMemoryFlags(32 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        after = observe_guests(conn, "h")
    finally:
        conn.close()
    assert after["up"].xml == before["up"].xml and after["up"].live != after["up"].persistent
    assert fingerprint(after, {}, {}) != fingerprint(before, {}, {})
