"""networkUpdate on libvirt's test driver: DNS records, port groups and leases added, changed
and removed by a spec change land on the running network item by item (its UUID and active
state unchanged, no recreate), then the plan is empty; a hostdev network is refused at plan
time on a host without VFIO, and nothing is defined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import (
    VirtsyncCli,
    connection,
    host_doc,
    network_doc,
    snapshot,
    write_host,
    write_specs,
)

BASE: dict[str, Any] = {"mode": "nat", "bridge": "virbr-lab",
                        "ipv4": {"address": "192.168.150.1/24",
                                 "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99"}},
                        "ipv6": {"address": "fd00:150::1/64"}}


def _edits(virtsync: VirtsyncCli, path: Path) -> list[tuple[str, str, str]]:
    plan = virtsync("plan", path, "--format", "json")
    assert plan.code == 2, plan.out + plan.err
    actions = [a for h in plan.json()["hosts"] for a in h["actions"]]
    assert [a["op"] for a in actions] == ["update-network"], actions
    return [(e["command"], e["section"], e["target"]) for e in actions[0]["args"]["edits"]]


def _apply(virtsync: VirtsyncCli, tmp_path: Path, uri: str, **spec: Any) -> list[tuple[str, str, str]]:
    """The spec applied (its networkUpdate edits, from the JSON plan, returned); then nothing to do."""
    path = write_specs(tmp_path / "specs", [host_doc(uri), network_doc("lab", **{**BASE, **spec})])
    edits = _edits(virtsync, path) if spec else []
    done = virtsync("apply", path, "--yes")
    assert done.code == 0, done.out + done.err
    again = virtsync("plan", path)
    assert again.code == 0 and "No changes" in again.out, again.out + again.err
    return edits


def test_dns_records_portgroups_and_leases_change_live_item_by_item(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    _apply(virtsync, tmp_path, uri)
    net = connection(uri).networkLookupByName("lab")
    uuid = net.UUIDString()

    edits = _apply(virtsync, tmp_path, uri,
                   dns={"hosts": [{"ip": "192.168.150.5", "hostnames": ["nas"]}],
                      "srv": [{"service": "ldap", "protocol": "tcp", "target": "ldap.lab", "port": 389}],
                      "txt": [{"name": "lab", "value": "one"}]},
                 portgroups=[{"name": "slow", "bandwidth": {"inbound": {"average": 1000}}}])
    assert edits == [("add", "dns-host", "both"), ("add", "dns-srv", "both"), ("add", "dns-txt", "both"),
                     ("add", "portgroup", "both")]
    xml = net.XMLDesc(0)
    for piece in ("<hostname>nas</hostname>", "service='ldap'", "name='lab' value='one'",
                  "<portgroup name='slow'>", "average='1000'"):
        assert piece in xml, (piece, xml)

    # changed and removed: a DNS host renamed (delete + add), a TXT value, a port group's VLAN-less
    # bandwidth (modify), the SRV record gone; a static lease added
    edits = _apply(virtsync, tmp_path, uri,
                   ipv4={**BASE["ipv4"], "dhcp": {**BASE["ipv4"]["dhcp"],
                                                "hosts": [{"mac": "52:54:00:00:00:22", "ip": "192.168.150.22"}]}},
                 dns={"hosts": [{"ip": "192.168.150.5", "hostnames": ["files"]}], "srv": [],
                      "txt": [{"name": "lab", "value": "two"}]},
                 portgroups=[{"name": "slow", "default": True, "bandwidth": {"inbound": {"average": 2000}}}])
    assert edits == [("delete", "dns-host", "both"), ("add", "dns-host", "both"), ("delete", "dns-srv", "both"),
                     ("delete", "dns-txt", "both"), ("add", "dns-txt", "both"), ("modify", "portgroup", "both")]
    xml = net.XMLDesc(0)
    assert "<hostname>files</hostname>" in xml and "<hostname>nas</hostname>" not in xml, xml
    assert "service='ldap'" not in xml and "value='two'" in xml, xml
    assert "<portgroup name='slow' default='yes'>" in xml and "average='2000'" in xml, xml
    assert "mac='52:54:00:00:00:22'" in xml, xml
    assert net.UUIDString() == uuid and net.isActive()


def test_a_hostdev_network_is_refused_at_plan_time_and_nothing_is_defined(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    path = write_specs(tmp_path / "specs", [host_doc(uri), network_doc("sriov", mode="hostdev", pf="eth3")])
    before = snapshot(connection(uri))
    plan = virtsync("plan", path)
    assert plan.code == 1, plan.out + plan.err
    assert "host kvm1" in plan.out + plan.err and "SR-IOV" in plan.out + plan.err, plan.out + plan.err
    assert virtsync("apply", path, "--yes").code == 1
    assert snapshot(connection(uri)) == before
