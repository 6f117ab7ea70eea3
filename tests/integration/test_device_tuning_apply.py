"""Disk and NIC tuning through the CLI on libvirt's test driver: libvirt takes the XML virtsync
writes (bridge and direct NICs, driver options, iotune, bandwidth, VLAN), reads it back as
wanted, and a changed limit of a running guest waits for a boot there (the test driver has no
live tuning), said in the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs

DISK = {"name": "data", "path": "/var/lib/libvirt/images/data.raw", "format": "raw"}


def _specs(tmp_path: Path, uri: str, **spec: Any) -> Path:
    return write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("vm1", memory="128MiB", **spec)])


def test_bridge_and_direct_nics_and_tuned_disks_are_defined_and_plan_no_change(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, state="running",
                   disks=[{**DISK, "cache": "none", "io": "threads", "discard": "unmap", "serial": "D1",
                           "shareable": True, "iotune": {"totalBytesSec": 1048576, "readIopsSec": 50}}],
                   interfaces=[{"bridge": "br0", "mac": "52:54:00:42:00:01", "vlan": 42, "queues": 2,
                                "bandwidth": {"outbound": {"average": 100}}, "linkState": "down"},
                               {"direct": {"dev": "eth0", "mode": "bridge"}, "mac": "52:54:00:42:00:02"}])
    validated = virtsync("validate", specs)
    assert validated.code == 0, validated.out + validated.err  # no kind: Network needed for them
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    xml = connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for part in ("<source bridge='br0'/>", "<tag id='42'/>", "<source dev='eth0' mode='bridge'/>",
                 "cache='none'", "io='threads'", "discard='unmap'", "<serial>D1</serial>", "<shareable/>",
                 "<total_bytes_sec>1048576</total_bytes_sec>", "<outbound average='100'/>",
                 "<link state='down'/>", "queues='2'"):
        assert part in xml, part
    again = virtsync("plan", specs)
    assert again.code == 0 and "No changes" in again.out, again.out


def test_a_limit_of_a_running_guest_waits_for_a_boot_where_the_driver_has_no_live_call(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    nic = {"bridge": "br0", "mac": "52:54:00:42:00:01"}
    assert virtsync("apply", _specs(tmp_path, uri, state="running", disks=[DISK], interfaces=[nic]),
                    "--yes").code == 0
    specs = _specs(tmp_path, uri, state="running", disks=[{**DISK, "iotune": {"totalIopsSec": 100}}],
                   interfaces=[{**nic, "bandwidth": {"inbound": {"average": 10}}}])
    plan = virtsync("plan", specs)
    assert plan.code == 2, plan.out
    assert "Test cannot change it live" in plan.out, plan.out
    assert virtsync("apply", specs, "--yes").code == 0
    after = virtsync("plan", specs)
    assert "pending restart" in after.out, after.out
    assert "<total_iops_sec>100</total_iops_sec>" in connection(uri).lookupByName("vm1").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE)
