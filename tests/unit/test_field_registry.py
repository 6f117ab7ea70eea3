"""Tests generated from the field registry: for every field, a change yields the impact and the
typed action the registry says, on KVM and on Xen capabilities; what is written reads back as
wanted (the plan after an apply is empty); docs/fields.md and the spec models agree with it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from controller.fields import guest as guest_fields
from controller.fields import network as network_fields
from controller.fields import pool as pool_fields
from controller.fields.base import Field, GuestView, live_ops
from controller.fields.devices import DISK_CONTROL, DISK_FIELDS, NIC_CONTROL, NIC_FIELDS, item_view
from controller.fields.docs import render_fields_md
from controller.fields.guest import GUEST_FIELDS
from controller.fields.network import NETWORK_FIELDS, NetworkView
from controller.fields.pool import POOL_FIELDS, VOLUME_FIELDS
from controller.hypervisor.domain_xml import WriteContext, new_guest_xml, read_guest, update_guest_xml
from controller.hypervisor.network_xml import network_xml, read_network
from controller.model.state import (
    DeviceSupport,
    HostCapabilities,
    HostState,
    ObservedGuest,
    ObservedNetwork,
    Owner,
)
from controller.plan.actions import Impact, RecreateGuest, RecreateNetwork, UpdateGuest, UpdateNetwork
from controller.plan.context import PlanOptions
from controller.plan.guests import guest_facts, plan_guest
from controller.plan.networks import plan_network
from controller.spec.models import Disk, Guest, GuestSpec, Interface, Network, NetworkSpec, StoragePoolSpec

ROOT = Path(__file__).resolve().parents[2]
KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)
XEN = HostCapabilities(driver="Xen", virt_type="xen", snapshots=False, block_resize=False,
                       guest_types=("xen", "xenpvh"))
CAPS = {"kvm": KVM, "xen": XEN}
OWNER = Owner("default", "Guest", "g")
GUEST_EXTRA: dict[str, dict[str, Any]] = {"topology": {"vcpus": 2}}  # what a field's samples need of the guest


def _set(doc: dict[str, Any], pointer: str, value: Any) -> None:
    parts = pointer.removeprefix("/spec/").split("/")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = copy.deepcopy(value)


def _guest(spec: dict[str, Any]) -> Guest:
    return Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                 "spec": spec})


def _observe(xml: str, state: str, autostart: bool) -> ObservedGuest:
    name, uuid, cfg, owner = read_guest(xml)
    return ObservedGuest(name, uuid, state, 1 if state == "running" else -1, cfg,  # type: ignore[arg-type]
                         cfg if state == "running" else None, autostart, owner, xml)


def _host(caps: HostCapabilities, obs: ObservedGuest | None = None) -> HostState:
    return HostState("h1", "test:///x", caps, {"g": obs} if obs else {})


def _applied(xml: str, guest: Guest, caps: HostCapabilities, fields: tuple[str, ...]) -> str:
    return update_guest_xml(xml, "g", guest.spec, WriteContext(caps.virt_type, {}, OWNER, None), fields)


def _guest_cases() -> list[Any]:
    cases = []
    for f in GUEST_FIELDS:
        if f.planned_by or len(f.samples) < 2:
            continue
        for kind in ("kvm", "xen"):
            if f.name == "xen" and kind == "kvm":
                continue  # a Xen guest type on a KVM host is refused before any field (tested below)
            for state in ("stopped", "running"):
                cases.append(pytest.param(f, kind, state, id=f"{f.name}-{kind}-{state}"))
    return cases


@pytest.mark.parametrize(("field", "kind", "state"), _guest_cases())
def test_a_guest_field_change_lands_as_the_registry_says(field: Field[GuestSpec], kind: str, state: str) -> None:
    caps = CAPS[kind]
    base: dict[str, Any] = {"host": "h1", "state": state, "memory": "128MiB", "restartPolicy": "never",
                            **GUEST_EXTRA.get(field.name, {})}
    before, after = dict(base), dict(base)
    _set(before, field.path, field.samples[0])
    _set(after, field.path, field.samples[1])
    old, new = _guest(before), _guest(after)
    xml = new_guest_xml("g", old.spec, WriteContext(caps.virt_type, {}, OWNER, "0b7c9e4e-0000-4000-8000-000000000001"))
    obs = _observe(xml, state, old.spec.autostart)

    # What was written reads back as what was wanted: no endless drift.
    same = plan_guest(old, _host(caps, obs), PlanOptions())
    assert same.actions == [] and same.pending == [], [a.as_json() for a in same.actions]

    out = plan_guest(new, _host(caps, obs), PlanOptions())
    facts = guest_facts("g", _host(caps, obs))
    if not field.applies(new.spec, facts):
        assert out.actions == [], f"{field.name} does not apply on {kind} but was planned"
        # a device the host cannot provide is refused (an error); other fields without effect are warned of
        severity = "error" if field.refuse is not None else "warning"
        assert any(field.name in p.message and p.severity == severity for p in out.problems), out.problems
        return
    assert obs.persistent is not None
    view = GuestView(new.spec, facts, caps, obs.persistent, obs.live, obs)
    want_impact = field.impact_for(view)
    changes = [c for a in out.actions for c in a.changes if c.path == field.path] + [
        c for p in out.pending for c in p.changes if c.path == field.path]
    assert changes and all(c.impact == want_impact for c in changes), (want_impact, changes)
    guest_actions = [a for a in out.actions if a.key.kind == "Guest" and isinstance(a, UpdateGuest | RecreateGuest)]
    if want_impact == Impact.RECREATE and state == "running":
        assert guest_actions == [] and out.pending, "a recreate of a running guest under never is pending"
        return
    assert len(guest_actions) == 1
    action = guest_actions[0]
    assert isinstance(action, RecreateGuest if want_impact == Impact.RECREATE else UpdateGuest)
    assert field.name in action.fields
    if isinstance(action, UpdateGuest):
        expected = field.call(new.spec) if field.call else (
            field.live(view) if field.live and state == "running" and want_impact == Impact.LIVE else None)
        for op in live_ops(expected):  # a field may need several calls (pinning: one per vCPU)
            assert op in action.live
            assert op.call in field.calls, f"{field.name} does not name {op.call} among its calls"
            assert all(op.call in c.call for c in changes), "the plan names the call per change"
    # Apply (write the fields in place), observe again: nothing left to do but a pending restart.
    again = _observe(_applied(xml, new, caps, action.fields), state, new.spec.autostart)
    rest = plan_guest(new, _host(caps, again), PlanOptions())
    assert [a for a in rest.actions if isinstance(a, UpdateGuest | RecreateGuest)] == [], \
        [a.as_json() for a in rest.actions]


def _item_cases() -> list[Any]:
    # a field whose guest needs more (ITEM_GUEST) that Xen refuses (iothreads: tests/unit/test_guest_tuning.py)
    return [pytest.param(f, which, kind, id=f"{which}-{f.name}-{kind}")
            for which, fields in (("disk", DISK_FIELDS), ("nic", NIC_FIELDS)) for f in fields
            for kind in ("kvm", "xen") if not (kind == "xen" and f.name in ITEM_GUEST)]


DISK_BASE = {"name": "data", "path": "/var/lib/libvirt/images/data.qcow2"}
ITEM_GUEST: dict[str, dict[str, Any]] = {"iothread": {"iothreads": 2}}  # what an item field needs of its guest
# A NIC is on exactly one source, and some fields exist only on some: each field's samples are
# tried on the first of these they are valid with.
NIC_BASES: tuple[dict[str, Any], ...] = (
    {"network": "lab", "mac": "52:54:00:00:00:0a"},
    {"bridge": "br0", "mac": "52:54:00:00:00:0a"},
    {"direct": {"dev": "eth0", "mode": "passthrough"}, "mac": "52:54:00:00:00:0a"},
)


def _item_pair(which: str, field: Field[Any]) -> tuple[Guest, Guest]:
    key = "disks" if which == "disk" else "interfaces"
    for base in (DISK_BASE,) if which == "disk" else NIC_BASES:
        before, after = dict(base), dict(base)
        before[field.name] = field.samples[0]
        after[field.name] = field.samples[1]
        extra = ITEM_GUEST.get(field.name, {})
        try:
            return (_guest({"host": "h1", "state": "stopped", key: [before], **extra}),
                    _guest({"host": "h1", "state": "stopped", key: [after], **extra}))
        except ValueError:
            continue
    raise AssertionError(f"{field.name}: its samples fit no base {which}")


@pytest.mark.parametrize(("field", "which", "kind"), _item_cases())
def test_a_disk_or_nic_field_change_lands_as_the_registry_says(field: Field[Any], which: str, kind: str) -> None:
    caps = CAPS[kind]
    old, new = _item_pair(which, field)
    xml = new_guest_xml("g", old.spec, WriteContext(caps.virt_type, {}, OWNER, None))
    obs = _observe(xml, "stopped", False)
    assert plan_guest(old, _host(caps, obs), PlanOptions()).actions == []
    out = plan_guest(new, _host(caps, obs), PlanOptions())
    path = field.path.format(i=0)
    action = next(a for a in out.actions if isinstance(a, UpdateGuest))
    assert obs.persistent is not None
    items = new.spec.disks if which == "disk" else new.spec.interfaces
    states = obs.persistent.disks if which == "disk" else obs.persistent.interfaces
    view = item_view(GuestView(new.spec, guest_facts("g", _host(caps, obs)), caps, obs.persistent, None, obs),
                     items[0], states[0], None)
    assert [c.impact for c in action.changes if c.path == path] == [field.impact_for(view)]
    again = _observe(_applied(xml, new, caps, action.fields), "stopped", False)
    assert plan_guest(new, _host(caps, again), PlanOptions()).actions == []


def test_a_xen_guest_without_a_xen_block_that_declares_a_disk_bus_has_no_endless_drift() -> None:
    guest = _guest({"host": "h1", "state": "stopped", "memory": "128MiB",
                    "disks": [{"name": "root", "path": "/var/lib/xen/images/root.img", "bus": "virtio",
                               "format": "raw"}]})
    xml = new_guest_xml("g", guest.spec, WriteContext("xen", {}, OWNER, None))
    assert "bus=\"xen\"" in xml  # libxl has no virtio disks: written as Xen's PV bus
    out = plan_guest(guest, _host(XEN, _observe(xml, "stopped", False)), PlanOptions())
    assert out.actions == [] and out.drift == []


def test_a_xen_guest_type_on_a_kvm_host_is_refused() -> None:
    guest = _guest({"host": "h1", "xen": {"mode": "pv"}})
    out = plan_guest(guest, _host(KVM), PlanOptions())
    assert out.actions == [] and any("not a Xen host" in p.message for p in out.problems)


# ---------------------------------------------------------------- networks

NET_BASE: dict[str, Any] = {"host": "h1", "mode": "nat", "bridge": "virbr9",
                            "ipv4": {"address": "192.168.150.1/24",
                                     "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99"}}}
NET_SAMPLES = {"address": ("192.168.150.1/24", "192.168.150.2/24")}  # the DHCP range stays inside
# fields that exist in some modes only: the base their samples fit (from the registry)
NET_BASES = {name: {"host": "h1", **base} for name, base in network_fields.SAMPLE_BASES.items()}
NET_CAPS = {"pf": HostCapabilities(driver="QEMU", virt_type="kvm", devices=DeviceSupport(vfio=True))}  # SR-IOV


def _network(spec: dict[str, Any]) -> Network:
    return Network.model_validate({"apiVersion": "virtsync/v1", "kind": "Network", "metadata": {"name": "n"},
                                   "spec": spec})


@pytest.mark.parametrize("field", [f for f in NETWORK_FIELDS if not f.planned_by], ids=lambda f: f.name)
def test_a_network_field_change_lands_as_the_registry_says(field: Field[NetworkSpec]) -> None:
    samples = NET_SAMPLES.get(field.name, field.samples)
    base = NET_BASES.get(field.name, NET_BASE)
    before, after = copy.deepcopy(base), copy.deepcopy(base)
    _set(before, field.path, samples[0])
    _set(after, field.path, samples[1])
    old, new = _network(before), _network(after)
    owner = Owner("default", "Network", "n")
    xml = network_xml("n", old.spec, owner, "5f0c1e0e-0000-4000-8000-000000000002")

    def observed(text: str, autostart: bool) -> HostState:
        _, uuid, cfg, own = read_network(text)
        net = ObservedNetwork("n", uuid, True, autostart, True, cfg, cfg, own, text)
        return HostState("h1", "test:///x", NET_CAPS.get(field.name, KVM), networks={"n": net})

    state = observed(xml, old.spec.autostart)
    assert plan_network(old, state, PlanOptions()).actions == []
    out = plan_network(new, state, PlanOptions())
    obs = state.networks["n"]
    want_impact = field.impact_for(NetworkView(new.spec, obs.config, obs.live_config, obs))
    assert len(out.actions) == 1
    action = out.actions[0]
    assert isinstance(action, RecreateNetwork if want_impact == Impact.RECREATE else UpdateNetwork)
    assert [c.impact for c in action.changes if c.path == field.path] == [want_impact]
    if isinstance(action, RecreateNetwork):  # recreated from the observed definition, edited in place
        again = observed(network_xml("n", new.spec, owner, obs.uuid, base=xml), new.spec.autostart)
        assert plan_network(new, again, PlanOptions()).actions == []


# ---------------------------------------------------------------- docs and completeness


def test_docs_fields_md_is_generated_from_the_registry_and_current() -> None:
    committed = ROOT / "docs" / "fields.md"
    assert committed.is_file(), "docs/fields.md is missing: run `virtsync schema`"
    assert committed.read_text() == render_fields_md(), "docs/fields.md is stale: run `virtsync schema`"


def _yaml_names(model: Any) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items()}


@pytest.mark.parametrize(("model", "fields", "control"), [
    (GuestSpec, GUEST_FIELDS, guest_fields.CONTROL),
    (Disk, DISK_FIELDS, DISK_CONTROL),
    (Interface, NIC_FIELDS, NIC_CONTROL),
    (NetworkSpec, NETWORK_FIELDS, network_fields.CONTROL),
    (StoragePoolSpec, POOL_FIELDS, pool_fields.CONTROL),
], ids=["Guest", "Disk", "Interface", "Network", "StoragePool"])
def test_every_spec_field_is_declared_in_the_registry_or_steers_virtsync(
        model: Any, fields: tuple[Field[Any], ...], control: dict[str, str]) -> None:
    declared = {f.name for f in fields} | set(control)
    if model is NetworkSpec:  # ipv4's own fields are registry entries with their pointers
        declared |= {"ipv4"}
    missing = _yaml_names(model) - declared
    assert not missing, f"{model.__name__}: fields neither in the registry nor in CONTROL: {sorted(missing)}"
    listed = render_fields_md()
    for name in _yaml_names(model):
        assert f"/{name}`" in listed, f"{model.__name__}.{name} is not in docs/fields.md"


def test_volume_fields_are_listed() -> None:
    assert {f.name for f in VOLUME_FIELDS} == {"size", "format", "from"}


def test_a_specs_declared_fields_come_in_registry_order_once_per_spec_object_and_go_with_it() -> None:
    import gc

    from controller.fields import base

    spec = _guest({"host": "h1", "vcpus": 2, "memory": "256MiB", "cpu": {"topology": {"sockets": 1, "cores": 2,
                                                                          "threads": 1}}}).spec
    names = base.declared(spec)
    found = base.declared_fields(GUEST_FIELDS, spec)
    assert found == tuple(f for f in GUEST_FIELDS if f.declared_in(spec, names))  # registry order
    assert {"vcpus", "memory", "topology"} <= {f.name for f in found} and "maxMemory" not in {f.name for f in found}
    assert base.declared_fields(GUEST_FIELDS, spec) is found  # memoized for this very object
    other = _guest({"host": "h1", "vcpus": 2}).spec
    assert {f.name for f in base.declared_fields(GUEST_FIELDS, other)} == {"vcpus"}  # host: not a registry field
    assert base.declared_names(other) == frozenset(base.declared(other))
    keys = [k for k in base._DECLARED if k[1] == id(other)]
    assert keys
    del other
    gc.collect()
    assert not any(k in base._DECLARED for k in keys)  # dropped with the spec: its id may be reused


def test_specs_that_declare_the_same_fields_share_one_filtering_and_nested_declarations_tell_them_apart() -> None:
    from controller.fields import base

    topology = {"topology": {"sockets": 1, "cores": 2, "threads": 1}}
    first = _guest({"host": "h1", "vcpus": 2, "memory": "256MiB", "cpu": topology}).spec
    second = _guest({"host": "h2", "vcpus": 2, "memory": "512MiB", "cpu": topology}).spec
    # the same names, other values: one filtering of the registry serves both
    assert base.declared_fields(GUEST_FIELDS, second) is base.declared_fields(GUEST_FIELDS, first)
    # cpu declared in both, but which of its parts (a field's own is_declared) differs: not shared
    mode = _guest({"host": "h1", "vcpus": 2, "memory": "256MiB", "cpu": {"mode": "host-model"}}).spec
    names = {f.name for f in base.declared_fields(GUEST_FIELDS, mode)}
    assert "topology" not in names and "cpu" in names
    assert "topology" in {f.name for f in base.declared_fields(GUEST_FIELDS, first)}
    assert "cpu" not in {f.name for f in base.declared_fields(GUEST_FIELDS, first)}  # topology alone keeps the mode
    for spec in (first, second, mode):
        assert base.declared_fields(GUEST_FIELDS, spec) == tuple(
            f for f in GUEST_FIELDS if f.declared_in(spec, base.declared(spec)))
