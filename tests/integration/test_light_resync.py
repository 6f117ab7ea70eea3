"""The light resync's fingerprints on libvirt's test driver: a pass learns, the next queues only
the declared objects that changed without an event, and a slice of the domains' definitions
is read each pass so that every domain is read every `slices` passes."""

from __future__ import annotations

import re
from pathlib import Path

import libvirt

from controller.hypervisor.fingerprints import HostFingerprints
from controller.model.state import ResourceKey
from controller.service.resync import LightResync
from controller.spec.loader import load_specs
from tests.integration.conftest import TEST_NS, guest_doc, host_doc, network_doc, write_host, write_specs


def _domain(name: str, memory_mib: int) -> str:
    return (f"<domain type='test' xmlns:test='{TEST_NS}'><name>{name}</name>"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>")


def _redefine(conn: libvirt.virConnect, name: str, memory_mib: int) -> None:
    """Replace a domain's definition under its UUID (what `virsh edit` does)."""
    xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    xml = re.sub(r"<(memory|currentMemory) unit='KiB'>\d+<",
                 lambda m: f"<{m.group(1)} unit='KiB'>{memory_mib * 1024}<", xml)
    conn.defineXML(xml)


def _setup(tmp_path: Path) -> tuple[libvirt.virConnect, LightResync, list[ResourceKey], object]:
    uri = write_host(tmp_path, _domain("web", 64) + _domain("other", 64)
                     + "<network><name>lab</name><bridge name='vbr9'/>"
                       "<ip address='10.9.9.1' prefix='24'/></network>")
    specs = write_specs(tmp_path, [host_doc(uri), guest_doc("web", memory="64MiB"),
                                   network_doc("lab", mode="isolated", bridge="vbr9",
                                               ipv4={"address": "10.9.9.1/24"})])
    loaded = load_specs([specs]).raise_for_errors()
    conn = libvirt.open(uri)
    queued: list[ResourceKey] = []
    light = LightResync(lambda _host: conn, queued.append, interval=1.0, slices=1)
    return conn, light, queued, loaded


def test_a_changed_definition_queues_that_object_alone_and_undeclared_ones_not(tmp_path: Path) -> None:
    conn, light, queued, specs = _setup(tmp_path)
    try:
        assert light.run_pass(specs, lambda _h: True) == set()  # the first pass learns only
        assert light.run_pass(specs, lambda _h: True) == set()  # nothing changed: nothing queued
        # Out of band, with no event anyone listens to: web's definition, and a domain the
        # specs do not name.
        _redefine(conn, "web", 48)
        _redefine(conn, "other", 48)
        conn.networkLookupByName("lab").setAutostart(1)
        assert light.run_pass(specs, lambda _h: True) == {ResourceKey("kvm1", "Guest", "web"),
                                                         ResourceKey("kvm1", "Network", "lab")}
        assert sorted(queued) == [ResourceKey("kvm1", "Guest", "web"), ResourceKey("kvm1", "Network", "lab")]
        status = light.status()
        assert status["queuedLastPass"] == 2 and status["queuedTotal"] == 2 and status["objects"] == 3
        assert ResourceKey("kvm1", "Guest", "other") in light.checked()
        # A host another replica holds is not read at all.
        assert light.run_pass(specs, lambda _h: False) == set() and light.status()["objects"] == 0
    finally:
        conn.close()


def test_each_domain_definition_is_read_once_every_slices_passes(tmp_path: Path) -> None:
    uri = write_host(tmp_path, "".join(_domain(f"g{i}", 64) for i in range(12)))
    conn = libvirt.open(uri)
    try:
        fp = HostFingerprints("h", slices=3)
        first = fp.read(conn)
        _redefine(conn, "g5", 32)
        seen_after = None
        for n in range(1, 4):  # within 3 passes the change shows, whichever slice g5 is in
            if fp.read(conn)[("Guest", "g5")] != first[("Guest", "g5")]:
                seen_after = n
                break
        assert seen_after is not None and seen_after <= 3
    finally:
        conn.close()


def test_autostart_and_persistence_changes_show_whichever_side_of_them_is_listed(tmp_path: Path) -> None:
    # The pass lists the autostart domains while they are the fewer, the others once most have
    # it; a transient domain is one the transient list names. A change shows either way.
    uri = write_host(tmp_path, "".join(_domain(f"g{i}", 64) for i in range(6)))
    conn = libvirt.open(uri)
    try:
        fp = HostFingerprints("h", slices=1)
        before = fp.read(conn)
        conn.lookupByName("g0").setAutostart(1)
        after = fp.read(conn)
        assert {k for k in before if before[k] != after[k]} == {("Guest", "g0")}
        for i in range(1, 5):  # now most autostart: the next passes list the ones without it
            conn.lookupByName(f"g{i}").setAutostart(1)
        autostart_side = fp.read(conn)
        steady = fp.read(conn)  # this pass lists the other side: nothing changed, nothing shows
        assert steady == autostart_side and fp.read(conn) == steady
        conn.lookupByName("g5").setAutostart(1)
        conn.lookupByName("g2").setAutostart(0)
        flipped = fp.read(conn)
        assert {k for k in steady if steady[k] != flipped[k]} == {("Guest", "g5"), ("Guest", "g2")}
        conn.createXML(_domain("once", 32), 0)  # transient: running, with no definition to read
        with_transient = fp.read(conn)
        assert ("Guest", "once") in with_transient and with_transient != flipped
        assert fp.read(conn) == with_transient
    finally:
        conn.close()
