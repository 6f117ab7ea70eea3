"""Guest tuning through the CLI on libvirt's test driver: libvirt takes the CPU topology, pinning,
NUMA cells and bindings, memory backing, I/O threads and cputune virtsync writes and reads them
back as wanted; a running guest's pinning changes live (pinVcpuFlags, pinEmulator, pinIOThread,
named per change in the plan); what the host cannot do is refused at plan time, naming the host
(the test driver's host file has 16 CPUs and 2 NUMA nodes; huge pages are checked in
tests/unit/test_guest_tuning.py against a host's capabilities)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs

DISK = {"name": "data", "path": "/var/lib/libvirt/images/data.raw", "format": "raw"}
PINS = {"vcpus": {0: "2", 1: 3}, "emulator": "0-1", "iothreads": {1: "0"}}


def _specs(tmp_path: Path, uri: str, **spec: Any) -> Path:
    base: dict[str, Any] = {"state": "running", "vcpus": 4, "memory": "256MiB", "iothreads": 2}
    return write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("vm1", **{**base, **spec})])


def _xml(uri: str, flags: int = libvirt.VIR_DOMAIN_XML_INACTIVE) -> str:
    return str(connection(uri).lookupByName("vm1").XMLDesc(flags))


def test_tuned_guest_is_defined_as_written_and_plans_no_change(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, cpu={"topology": {"sockets": 2, "cores": 2}, "pinning": PINS},
                   numa={"cells": [{"id": 0, "cpus": "0-1", "memory": "128MiB"},
                                   {"id": 1, "cpus": "2-3", "memory": "128MiB"}],
                         "hostNodes": "0-1", "mode": "interleave", "memnodes": [{"cell": 0, "nodes": "0"}]},
                   memoryBacking={"locked": True, "source": "memfd", "access": "shared"},
                   cputune={"shares": 512, "period": 100000, "quota": 50000},
                   disks=[{**DISK, "iothread": 2}])
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    xml = _xml(uri)
    for part in ("<topology sockets='2' dies='1' cores='2' threads='1'/>", "<vcpupin vcpu='0' cpuset='2'/>",
                 "<vcpupin vcpu='1' cpuset='3'/>", "<emulatorpin cpuset='0-1'/>",
                 "<iothreadpin iothread='1' cpuset='0'/>", "<iothreads>2</iothreads>",
                 "<cell id='0' cpus='0-1' memory='131072' unit='KiB'/>", "<memory mode='interleave' nodeset='0-1'/>",
                 "<memnode cellid='0' mode='strict' nodeset='0'/>", "<locked/>", "<source type='memfd'/>",
                 "<access mode='shared'/>", "<shares>512</shares>", "<quota>50000</quota>", "iothread='2'"):
        assert part in xml, f"{part} not in\n{xml}"
    again = virtsync("plan", specs)
    assert again.code == 0 and "No changes" in again.out, again.out


def test_pinning_of_a_running_guest_changes_live_and_the_plan_names_each_call(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", _specs(tmp_path, uri, cpu={"pinning": PINS}), "--yes").code == 0
    dom_id = connection(uri).lookupByName("vm1").ID()
    specs = _specs(tmp_path, uri, cpu={"pinning": {"vcpus": {0: "4-5", 1: "3"}, "emulator": "6",
                                                   "iothreads": {1: "7"}}})
    plan = virtsync("plan", specs)
    assert plan.code == 2, plan.out
    assert "cpu/pinning:" in plan.out and "[live: pinVcpuFlags, pinEmulator, pinIOThread]" in plan.out, plan.out
    assert "pending restart" not in plan.out, plan.out
    as_json = virtsync("plan", specs, "--format", "json").json()
    change = next(c for a in as_json["hosts"][0]["actions"] for c in a["changes"] if c["path"] == "/spec/cpu/pinning")
    assert change["call"] == "pinVcpuFlags, pinEmulator, pinIOThread" and change["impact"] == "live", change
    live_ops = [op["op"] for a in as_json["hosts"][0]["actions"] for op in a.get("args", {}).get("live", [])]
    assert live_ops == ["vcpupin", "emulatorpin", "iothreadpin"], live_ops  # vCPU 1 is pinned already
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    dom = connection(uri).lookupByName("vm1")
    assert dom.ID() == dom_id, "the guest was restarted"
    pins = dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    assert [i for i, on in enumerate(pins[0]) if on] == [4, 5] and [i for i, on in enumerate(pins[1]) if on] == [3]
    assert [i for i, on in enumerate(dom.emulatorPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)) if on] == [6]
    assert "<vcpupin vcpu='0' cpuset='4-5'/>" in _xml(uri) and "<emulatorpin cpuset='6'/>" in _xml(uri)
    again = virtsync("plan", specs)
    assert again.code == 0 and "No changes" in again.out, again.out


def test_next_boot_tuning_says_why_it_waits(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", _specs(tmp_path, uri), "--yes").code == 0
    specs = _specs(tmp_path, uri, cpu={"topology": {"sockets": 1, "cores": 4}}, cputune={"shares": 300})
    plan = virtsync("plan", specs)
    assert plan.code == 2 and "pending restart (restartPolicy: never)" in plan.out, plan.out
    assert "cpu/topology: (none) → sockets=1 dies=1 cores=4 threads=1  [next boot: the CPU topology is fixed " \
        "when the guest starts]" in plan.out, plan.out
    # the test driver's scheduler has only a weight: cputune waits for a boot there, and says so
    assert "cputune: (none) → shares=300  [next boot: this host's scheduler has no CPU shares" in plan.out, plan.out
    waits = virtsync("plan", specs, "--format", "json").json()["hosts"][0]["pending"][0]["changes"]
    assert {c["path"]: c["waits"] for c in waits}["/spec/cputune"].startswith("this host's scheduler"), waits


def test_what_the_host_cannot_do_is_refused_at_plan_time(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    cases = [({"cpu": {"pinning": {"vcpus": {0: "16-17"}}}}, "it has no CPU 16-17 (its CPUs are 0-15)"),
             ({"numa": {"cells": [{"id": 0, "cpus": "0-3", "memory": "256MiB"}], "hostNodes": "2"}},
              "it has no node 2 (its nodes are 0-1)")]
    for spec, why in cases:
        plan = virtsync("plan", _specs(tmp_path, uri, **spec))
        assert plan.code == 1, plan.out
        assert "host kvm1 (Test) cannot give" in plan.out and why in plan.out, (why, plan.out)
    assert "vm1" not in connection(uri).listDefinedDomains()
    assert connection(uri).listAllDomains() == [] or all(d.name() != "vm1" for d in connection(uri).listAllDomains())


def test_bad_tuning_is_refused_with_its_file_line_and_column(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    bad = [({"cpu": {"topology": {"sockets": 2, "cores": 3}}}, "= 6, but the guest has 4 vCPUs"),
           ({"cpu": {"pinning": {"vcpus": {4: "0"}}}}, "vCPU 4 does not exist"),
           ({"cpu": {"pinning": {"vcpus": {0: "1-x"}}}}, "is not a CPU set"),
           ({"cpu": {"pinning": {"emulator": "0-4000000000"}}}, "CPU numbers go up to 16383"),
           ({"numa": {"cells": [{"id": 0, "cpus": "0-1", "memory": "256MiB"}]}}, "vCPUs 2-3 are in no NUMA cell"),
           ({"numa": {"cells": [{"id": 0, "cpus": "0-3", "memory": "128MiB"}]}}, "the NUMA cells hold 128MiB"),
           ({"disks": [{**DISK, "iothread": 3}]}, "I/O thread 3 does not exist"),
           ({"memoryBacking": {"hugepages": {"size": "3MiB"}}}, "is not a huge page size")]
    for spec, why in bad:
        out = virtsync("validate", _specs(tmp_path, uri, **spec))
        assert out.code == 1, out.out
        text = out.out + out.err
        assert why in text and re.search(r"specs\.yaml:\d+:\d+: error: spec\.", text), (why, text)


def test_export_of_a_tuned_guest_plans_no_change(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, cpu={"topology": {"sockets": 2, "cores": 2}, "pinning": PINS},
                   numa={"cells": [{"id": 0, "cpus": "0-3", "memory": "256MiB"}], "hostNodes": "0"},
                   memoryBacking={"locked": True}, cputune={"shares": 512}, disks=[{**DISK, "iothread": 1}])
    assert virtsync("apply", specs, "--yes").code == 0
    out = tmp_path / "exported.yaml"
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "-o", out)
    assert exported.code == 0, exported.err
    text = out.read_text()
    for part in ("topology:", "pinning:", "emulator: 0-1", "hostNodes: '0'", "locked: true", "shares: 512",
                 "iothreads: 2", "iothread: 1"):
        assert part in text, f"{part} not in\n{text}"
    assert virtsync("validate", out).code == 0
    plan = virtsync("plan", out, "--connect", uri)
    assert plan.code == 0 and "No changes" in plan.out, plan.out + plan.err
