"""Out-of-band changes show as drift (desired / defined / live) and one apply repairs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.integration.conftest import VirtsyncCli, connection, quickstart_copy, write_host

MIB = 1024
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
WEB1_LEASE = "<host mac='52:54:00:00:01:01' ip='192.168.150.11' name='web1'/>"


def _destroy_web2(c: libvirt.virConnect) -> None:
    c.lookupByName("web2").destroy()


def _memory_config(c: libvirt.virConnect) -> None:
    c.lookupByName("web1").setMemoryFlags(200 * MIB, libvirt.VIR_DOMAIN_AFFECT_CONFIG)


def _vcpus_live(c: libvirt.virConnect) -> None:
    c.lookupByName("web1").setVcpusFlags(1, LIVE)  # spec: 2 of at most 3


def _vcpus_hot_added(c: libvirt.virConnect) -> None:
    c.lookupByName("web1").setVcpusFlags(3, LIVE)


def _undefine_running(c: libvirt.virConnect) -> None:
    c.lookupByName("web2").undefine()  # it keeps running, transient


def _undefine_stopped(c: libvirt.virConnect) -> None:
    dom = c.lookupByName("web2")
    dom.destroy()
    dom.undefine()


def _autostart_off(c: libvirt.virConnect) -> None:
    c.lookupByName("web1").setAutostart(0)


def _network_stopped(c: libvirt.virConnect) -> None:
    c.networkLookupByName("lab").destroy()


def _lease_removed(c: libvirt.virConnect) -> None:
    c.networkLookupByName("lab").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
        WEB1_LEASE,
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )


def _web1_config_memory_kib(c: libvirt.virConnect) -> int:
    xml = c.lookupByName("web1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return int(xml.split("<currentMemory unit='KiB'>")[1].split("<")[0])


@dataclass(frozen=True)
class Case:
    change: Callable[[libvirt.virConnect], None]
    kind: str
    name: str
    status: str
    path: str
    desired: Any
    defined: Any
    live: Any
    repaired: Callable[[libvirt.virConnect], bool]


CASES = {
    "guest destroyed": Case(_destroy_web2, "Guest", "web2", "drift", "/spec/state",
                            "running", "stopped", "stopped",
                            lambda c: c.lookupByName("web2").isActive() == 1),
    "memory changed in the definition": Case(
        _memory_config, "Guest", "web1", "drift", "/spec/memory", "128MiB", "200MiB", "128MiB",
        lambda c: _web1_config_memory_kib(c) == 128 * MIB),
    "vcpus changed live": Case(_vcpus_live, "Guest", "web1", "drift", "/spec/vcpus", 2, 2, 1,
                               lambda c: c.lookupByName("web1").info()[3] == 2),
    "running guest undefined": Case(
        _undefine_running, "Guest", "web2", "drift", "/spec", "defined", None, "running",
        lambda c: c.lookupByName("web2").isPersistent() == c.lookupByName("web2").isActive() == 1),
    "stopped guest undefined": Case(
        _undefine_stopped, "Guest", "web2", "missing", "/spec", "defined", None, None,
        lambda c: c.lookupByName("web2").isActive() == 1),
    "autostart flipped": Case(_autostart_off, "Guest", "web1", "drift", "/spec/autostart",
                              True, False, None, lambda c: c.lookupByName("web1").autostart() == 1),
    "network stopped": Case(_network_stopped, "Network", "lab", "drift", "/status/active",
                            True, False, False,
                            lambda c: c.networkLookupByName("lab").isActive() == 1),
    "dhcp host removed": Case(
        _lease_removed, "Network", "lab", "drift", "/spec/ipv4/dhcp/hosts",
        ["52:54:00:00:01:01=192.168.150.11"], [], [],
        lambda c: "52:54:00:00:01:01" in c.networkLookupByName("lab").XMLDesc(0)),
}


def specs_for(tmp_path: Path) -> Path:
    """examples/quickstart, with web1 at 2 vCPUs of at most 3 (room to hot-plug both ways)."""
    specs = quickstart_copy(tmp_path)
    lab = specs / "lab.yaml"
    text = lab.read_text()
    assert "  vcpus: 1\n  maxVcpus: 2\n" in text
    lab.write_text(text.replace("  vcpus: 1\n  maxVcpus: 2\n", "  vcpus: 2\n  maxVcpus: 3\n", 1))
    return specs


def _object(report: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    return next(o for h in report["hosts"] for o in h["objects"]
                if o["kind"] == kind and o["name"] == name)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_out_of_band_change_is_drift_and_apply_repairs_it(tmp_path: Path, virtsync: VirtsyncCli,
                                                          case: Case) -> None:
    uri = write_host(tmp_path)
    specs = specs_for(tmp_path)
    assert virtsync("apply", specs, "--connect", uri, "--yes").code == 0
    case.change(connection(uri))

    drift = virtsync("drift", specs, "--connect", uri, "--format", "json")
    assert drift.code == 2, drift.out + drift.err
    report = drift.json()
    assert report["inSync"] is False and report["hasErrors"] is False
    obj = _object(report, case.kind, case.name)
    assert obj["status"] == case.status
    change = next(c for c in obj["changes"] if c["path"] == case.path)
    assert {"desired", "defined", "live"} <= change.keys()
    assert (change["desired"], change["defined"], change["live"]) == (
        case.desired, case.defined, case.live)
    others = [o for o in _all_objects(report) if o is not obj and o["status"] != "in-sync"]
    assert others == [], "only the changed object drifts"

    applied = virtsync("apply", specs, "--connect", uri, "--yes")
    assert applied.code == 0, applied.out + applied.err
    assert case.repaired(connection(uri))
    after = virtsync("plan", specs, "--connect", uri)
    assert after.code == 0, after.out
    assert "No changes" in after.out
    assert virtsync("drift", specs, "--connect", uri).code == 0


def _all_objects(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for h in report["hosts"] for o in h["objects"]]


def test_one_apply_repairs_every_kind_of_drift_at_once(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = specs_for(tmp_path)
    assert virtsync("apply", specs, "--connect", uri, "--yes").code == 0
    conn = connection(uri)
    for change in (_memory_config, _vcpus_live, _autostart_off, _undefine_running,
                   _lease_removed, _network_stopped):
        change(conn)

    drift = virtsync("drift", specs, "--connect", uri, "--format", "json")
    assert drift.code == 2
    paths = {(o["name"], c["path"]) for o in _all_objects(drift.json()) for c in o["changes"]}
    assert paths >= {("web1", "/spec/memory"), ("web1", "/spec/vcpus"), ("web1", "/spec/autostart"),
                     ("web2", "/spec"), ("lab", "/status/active"),
                     ("lab", "/spec/ipv4/dhcp/hosts")}

    applied = virtsync("apply", specs, "--connect", uri, "--yes")
    assert applied.code == 0, applied.out + applied.err
    for case in CASES.values():
        if case.change in (_destroy_web2, _undefine_stopped):
            continue
        assert case.repaired(conn), case
    assert virtsync("plan", specs, "--connect", uri).code == 0
    assert virtsync("drift", specs, "--connect", uri).code == 0


def test_vcpus_hot_added_out_of_band_are_a_pending_restart_not_unplugged(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = specs_for(tmp_path)  # web1: restartPolicy never
    assert virtsync("apply", specs, "--connect", uri, "--yes").code == 0
    _vcpus_hot_added(connection(uri))

    drift = virtsync("drift", specs, "--connect", uri, "--format", "json")
    assert drift.code == 0, drift.out  # a pending restart is a status, not drift
    web1 = _object(drift.json(), "Guest", "web1")
    assert web1["status"] == "pending-restart"
    (change,) = web1["changes"]
    assert (change["path"], change["desired"], change["defined"], change["live"]) == (
        "/spec/vcpus", 2, 2, 3)
    plan = virtsync("plan", specs, "--connect", uri)
    assert plan.code == 0 and "pending" in plan.out
    assert virtsync("apply", specs, "--connect", uri, "--yes").code == 0
    assert connection(uri).lookupByName("web1").info()[3] == 3, "never unplugged"
