"""Guest tuning without a host: CPU sets, the host facts read from capabilities, the plan-time
refusals of what a host cannot do (CPUs, NUMA nodes, huge pages; Xen), and plans that name, per
change, the libvirt call that makes it live or why it waits for the next boot — for every live
field of the registry."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest
from lxml import etree

from controller.fields.base import Field
from controller.fields.devices import DISK_FIELDS, NIC_FIELDS
from controller.fields.guest import GUEST_FIELDS
from controller.fields.network import NETWORK_FIELDS
from controller.fields.pool import POOL_FIELDS, VOLUME_FIELDS
from controller.hypervisor.capabilities import host_topology
from controller.hypervisor.domain_xml import WriteContext, new_guest_xml, read_guest
from controller.model.operations import LIVE_OP_TYPES, Impact
from controller.model.state import HostCapabilities, HostState, ObservedGuest, Owner, ResourceKey
from controller.plan.actions import FieldChange, HostPlan, Plan, UpdateGuest
from controller.plan.context import PlanOptions
from controller.plan.guests import plan_guest
from controller.report.plan_render import render_json, render_markdown, render_text
from controller.spec.guest_tuning import format_cpuset, parse_cpuset
from controller.spec.models import Guest

MiB = 1024**2
OWNER = Owner("default", "Guest", "g")
KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000, host_cpus=frozenset({0, 1, 2, 3}),
                       numa_nodes=frozenset({0}), hugepages=((2 * MiB, 64), (1024 * MiB, 0)))


def _guest(**spec: Any) -> Guest:
    base = {"host": "h1", "state": "running", "vcpus": 2, "memory": "128MiB", "restartPolicy": "never"}
    return Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                 "spec": {**base, **spec}})


def _host(caps: HostCapabilities, guest: Guest | None = None, state: str = "running") -> HostState:
    if guest is None:
        return HostState("h1", "test:///x", caps)
    ctx = WriteContext(caps.virt_type, {}, OWNER, "0b7c9e4e-0000-4000-8000-0000000000aa")
    xml = new_guest_xml("g", guest.spec, ctx)
    name, uuid, cfg, owner = read_guest(xml)
    obs = ObservedGuest(name, uuid, state, 3 if state == "running" else -1, cfg,  # type: ignore[arg-type]
                        cfg if state == "running" else None, False, owner, xml)
    return HostState("h1", "test:///x", caps, {"g": obs})


@pytest.mark.parametrize(("text", "cpus", "spelled"), [
    ("2", {2}, "2"), ("0-3,^1", {0, 2, 3}, "0,2-3"), ("4-7,12", {4, 5, 6, 7, 12}, "4-7,12"), ("1,0", {0, 1}, "0-1")])
def test_cpu_sets_read_and_spell_as_libvirt_does(text: str, cpus: set[int], spelled: str) -> None:
    assert parse_cpuset(text) == cpus
    assert format_cpuset(parse_cpuset(text)) == spelled


def test_host_cpus_nodes_and_huge_pages_come_from_the_capabilities_topology() -> None:
    caps = etree.fromstring("""<capabilities><host><topology><cells num='2'>
      <cell id='0'><pages unit='KiB' size='4'>1000</pages><pages unit='KiB' size='2048'>16</pages>
        <cpus num='2'><cpu id='0'/><cpu id='1'/></cpus></cell>
      <cell id='1'><pages unit='KiB' size='4'>1000</pages><pages unit='KiB' size='2048'>8</pages>
        <pages unit='KiB' size='1048576'>0</pages><cpus num='2'><cpu id='2'/><cpu id='3'/></cpus></cell>
    </cells></topology></host></capabilities>""")
    facts = host_topology(caps)
    assert facts == {"host_cpus": frozenset({0, 1, 2, 3}), "numa_nodes": frozenset({0, 1}),
                     "hugepages": ((2 * MiB, 24), (1024 * MiB, 0))}
    assert host_topology(etree.fromstring("<capabilities><host/></capabilities>")) == {}


@pytest.mark.parametrize(("spec", "why"), [
    ({"cpu": {"pinning": {"vcpus": {0: "3-5"}}}}, "vCPU 0 the host CPUs 3-5: it has no CPU 4-5 (its CPUs are 0-3)"),
    ({"cpu": {"pinning": {"emulator": "7"}}}, "emulator the host CPUs 7: it has no CPU 7 (its CPUs are 0-3)"),
    ({"numa": {"cells": [{"id": 0, "cpus": "0-1", "memory": "128MiB"}], "hostNodes": "0-1"}},
     "hostNodes on host NUMA nodes 0-1: it has no node 1 (its nodes are 0)"),
    ({"memoryBacking": {"hugepages": {"size": "1GiB"}}, "memory": "1GiB"},
     "1GiB huge pages: it has none of that size (its huge pages: 64 of 2MiB; allocate them, e.g. "
     "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages)"),
])
def test_what_the_host_cannot_do_is_refused_naming_the_host(spec: dict[str, Any], why: str) -> None:
    out = plan_guest(_guest(**spec), _host(KVM), PlanOptions())
    assert out.actions == []
    assert [p.message for p in out.problems] == [f"host h1 (QEMU) cannot give {why}"]


def test_what_the_host_has_is_planned() -> None:
    spec = {"cpu": {"pinning": {"vcpus": {0: "3"}, "emulator": "0-1"}}, "memoryBacking": {"hugepages": {}},
            "numa": {"cells": [{"id": 0, "cpus": "0-1", "memory": "128MiB"}], "hostNodes": "0"}}
    out = plan_guest(_guest(**spec), _host(KVM), PlanOptions())
    assert out.problems == [] and [a.op for a in out.actions] == ["define", "start"]


@pytest.mark.parametrize("spec", [{"cputune": {"shares": 512}}, {"iothreads": 1}, {"cpu": {"topology": {"cores": 2}}},
                                  {"cpu": {"pinning": {"vcpus": {0: "1"}}}}, {"numa": {"cells": [
    {"id": 0, "cpus": "0-1", "memory": "128MiB"}]}}, {"memoryBacking": {"locked": True}}])
def test_tuning_libxl_has_not_is_refused_on_xen(spec: dict[str, Any]) -> None:
    xen = HostCapabilities(driver="Xen", virt_type="xen", snapshots=False, guest_types=("xen",))
    out = plan_guest(_guest(xen={"mode": "pv"}, **spec), _host(xen), PlanOptions())
    assert out.actions == [] and len(out.problems) == 1 and "host h1 (Xen) has no" in out.problems[0].message


def _registry() -> list[Field[Any]]:
    return [*GUEST_FIELDS, *DISK_FIELDS, *NIC_FIELDS, *NETWORK_FIELDS, *POOL_FIELDS, *VOLUME_FIELDS]


@pytest.mark.parametrize("field", [f for f in _registry() if f.impact == Impact.LIVE or f.live or f.call],
                         ids=lambda f: f.path)
def test_every_live_field_names_the_libvirt_call_that_makes_it_live(field: Field[Any]) -> None:
    if field.planned_by == "migration":  # read by a move, nothing on the host: no call of its own
        assert field.calls == ()
        return
    assert field.calls, f"{field.path} is live but names no libvirt call (Field.calls)"


@pytest.mark.parametrize("op", LIVE_OP_TYPES, ids=lambda t: t.op)
def test_each_typed_live_call_is_a_method_of_libvirts_domain(op: type[Any]) -> None:
    assert callable(getattr(libvirt.virDomain, op.call, None)), op.call
    assert any(op.call in f.calls for f in _registry()), f"no field names {op.call}"


def test_a_running_guests_change_names_its_call_and_a_next_boot_change_why_it_waits() -> None:
    old = _guest(vcpus=2, maxVcpus=4, memory="128MiB", maxMemory="256MiB", cpu={"pinning": {"vcpus": {0: "0"}}})
    new = _guest(vcpus=3, maxVcpus=4, memory="192MiB", maxMemory="256MiB",
                 cpu={"pinning": {"vcpus": {0: "1", 1: "2"}}, "topology": {"sockets": 1, "cores": 4}})
    out = plan_guest(new, _host(KVM, old), PlanOptions())
    update = next(a for a in out.actions if isinstance(a, UpdateGuest))
    calls = {c.path: c.call for c in update.changes}
    assert calls["/spec/vcpus"] == "setVcpusFlags" and calls["/spec/memory"] == "setMemoryFlags"
    assert calls["/spec/cpu/pinning"] == "pinVcpuFlags"
    assert [op.op for op in update.live].count("vcpupin") == 2  # vCPU 0 and 1, one call each
    topology = next(c for c in update.changes if c.path == "/spec/cpu/topology")
    assert topology.impact == Impact.NEXT_BOOT and topology.call == ""
    assert topology.waits == "the CPU topology is fixed when the guest starts"
    stopped = plan_guest(new, _host(KVM, old, state="stopped"), PlanOptions())
    assert all(c.call == "" for a in stopped.actions for c in a.changes), "a stopped guest gets no live call"


def test_renderers_show_the_call_and_why_a_change_waits() -> None:
    changes = (FieldChange("/spec/cpu/pinning", "vcpus=0=1", "vcpus=0=0", "vcpus=0=0", Impact.LIVE,
                           call="pinVcpuFlags"),
               FieldChange("/spec/numa", "cells [0: cpus 0-1 128MiB]", None, None, Impact.NEXT_BOOT,
                           waits="the guest's NUMA nodes and their memory are laid out when it starts"))
    action = UpdateGuest(key=ResourceKey("h1", "Guest", "g"), reason="spec and definition differ", changes=changes)
    plan = Plan(hosts=(HostPlan(host="h1", uri="test:///x", fingerprint="", actions=(action,)),),
                instance="default", spec_digest="")
    text = render_text(plan)
    assert "cpu/pinning: vcpus=0=0 → vcpus=0=1  [live: pinVcpuFlags]" in text, text
    assert "numa: (none) → cells [0: cpus 0-1 128MiB]  [next boot: the guest's NUMA nodes" in text, text
    assert "[live: pinVcpuFlags]" in render_markdown(plan)
    doc = render_json(plan)["hosts"][0]["actions"][0]["changes"]
    assert doc[0]["call"] == "pinVcpuFlags" and "waits" not in doc[0]
    assert doc[1]["waits"].startswith("the guest's NUMA nodes") and "call" not in doc[1]
