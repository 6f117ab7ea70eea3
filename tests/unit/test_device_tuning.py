"""Disks and NICs in depth: cache/io/discard/serial/readonly/shareable/iotune on disks; network,
bridge or direct (macvtap) NICs with queues, bandwidth, link state, VLAN and portgroup.

Pure: the registry's writers and readers on domain XML, the planner on observed state built from
that XML (KVM and Xen capabilities), validation, keyed matching and export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pydantic import ValidationError

from controller.fields.keys import match_nics
from controller.hypervisor.domain_xml import WriteContext, new_guest_xml, read_guest, update_guest_xml
from controller.hypervisor.export import guest_spec
from controller.model.operations import SetBlockIoTune, SetInterfaceBandwidth, SetLinkState
from controller.model.state import HostCapabilities, HostState, NicState, ObservedGuest, Owner
from controller.plan.actions import Impact, UpdateGuest
from controller.plan.context import PlanOptions
from controller.plan.guests import plan_guest
from controller.spec.models import Guest, Interface
from tests.golden import assert_golden

GOLDEN = Path(__file__).parent / "golden"
KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)
XEN = HostCapabilities(driver="Xen", virt_type="xen", snapshots=False, block_resize=False,
                       guest_types=("xen", "xenpvh"))
OWNER = Owner("default", "Guest", "g")
MAC = "52:54:00:00:00:0a"
DISK = {"name": "data", "path": "/var/lib/libvirt/images/data.qcow2"}


def _guest(**spec: Any) -> Guest:
    return Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                 "spec": {"host": "h1", "memory": "128MiB", **spec}})


def _observe(xml: str, running: bool, live_xml: str | None = None) -> ObservedGuest:
    name, uuid, cfg, owner = read_guest(xml)
    live = read_guest(live_xml)[2] if live_xml else cfg
    return ObservedGuest(name, uuid, "running" if running else "stopped", 1 if running else -1, cfg,
                         live if running else None, False, owner, xml)


def _host(caps: HostCapabilities, obs: ObservedGuest) -> HostState:
    return HostState("h1", "test:///x", caps, {"g": obs})


def _xml(guest: Guest, caps: HostCapabilities = KVM) -> str:
    return new_guest_xml("g", guest.spec, WriteContext(caps.virt_type, {}, OWNER, None))


def _update(a: Guest, b: Guest, caps: HostCapabilities = KVM, running: bool = True) -> tuple[UpdateGuest, Any]:
    xml = _xml(a, caps)
    out = plan_guest(b, _host(caps, _observe(xml, running)), PlanOptions())
    updates = [x for x in out.actions if isinstance(x, UpdateGuest)]
    assert len(updates) == 1, [x.as_json() for x in out.actions]
    return updates[0], out


# ------------------------------------------------------------------ live on a running KVM guest


def test_iotune_of_a_running_kvm_guest_is_set_live_with_every_limit() -> None:
    a = _guest(disks=[{**DISK, "iotune": {"totalBytesSec": 1000}}])
    b = _guest(disks=[{**DISK, "iotune": {"readBytesSec": 2000, "writeIopsSec": 50}}])
    update, out = _update(a, b)
    assert update.impact == Impact.LIVE and out.pending == []
    # total is lifted (0) while read and write are set: libvirt refuses a total with either
    assert update.live == (SetBlockIoTune("vda", read_bytes_sec=2000, write_iops_sec=50),)
    assert SetBlockIoTune("vda", read_bytes_sec=2000).params()["total_bytes_sec"] == 0
    change = next(c for c in update.changes if c.path == "/spec/disks/0/iotune")
    assert (change.desired, change.defined) == ("readBytesSec=2000 writeIopsSec=50", "totalBytesSec=1000")


def test_bandwidth_and_link_state_of_a_running_kvm_guest_are_set_live() -> None:
    a = _guest(interfaces=[{"network": "lab", "mac": MAC}])
    b = _guest(interfaces=[{"network": "lab", "mac": MAC, "linkState": "down",
                            "bandwidth": {"inbound": {"average": 1000, "peak": 2000, "burst": 512}}}])
    update, out = _update(a, b)
    assert update.impact == Impact.LIVE and out.pending == []
    assert set(update.live) == {
        SetInterfaceBandwidth(MAC, inbound_average=1000, inbound_peak=2000, inbound_burst=512),
        SetLinkState(MAC, "down")}
    assert SetInterfaceBandwidth(MAC, inbound_average=1).params()["inbound.average"] == 1
    assert {"op": "link-state", "mac": MAC, "state": "down"} in [op.as_json() for op in update.live]


def test_a_running_item_changed_live_out_of_band_is_repaired_live() -> None:
    guest = _guest(interfaces=[{"network": "lab", "mac": MAC, "bandwidth": {"outbound": {"average": 300}}}],
                   disks=[{**DISK, "iotune": {"totalIopsSec": 100}}])
    xml = _xml(guest)
    live = xml.replace('<outbound average="300"/>', '<outbound average="999"/>').replace(
        "<total_iops_sec>100<", "<total_iops_sec>7<")
    assert live != xml
    out = plan_guest(guest, _host(KVM, _observe(xml, True, live)), PlanOptions())
    update = next(a for a in out.actions if isinstance(a, UpdateGuest))
    assert update.fields == () and update.reason == "running guest differs from its definition"
    assert set(update.live) == {SetInterfaceBandwidth(MAC, outbound_average=300),
                                SetBlockIoTune("vda", total_iops_sec=100)}


def test_a_stopped_guest_gets_the_definition_only() -> None:
    a = _guest(state="stopped", disks=[DISK])
    b = _guest(state="stopped", disks=[{**DISK, "iotune": {"totalBytesSec": 1000}}])
    update, _ = _update(a, b, running=False)
    assert update.live == () and update.fields == ("disks",)


# ------------------------------------------------------------------ Xen: next boot, said in the plan


@pytest.mark.parametrize(("before", "after", "field"), [
    ({"disks": [DISK]}, {"disks": [{**DISK, "iotune": {"totalBytesSec": 1000}}]}, "/spec/disks/0/iotune"),
    ({"interfaces": [{"network": "lab", "mac": MAC}]},
     {"interfaces": [{"network": "lab", "mac": MAC, "linkState": "down"}]}, "/spec/interfaces/0/linkState"),
    ({"interfaces": [{"network": "lab", "mac": MAC}]},
     {"interfaces": [{"network": "lab", "mac": MAC, "bandwidth": {"inbound": {"average": 9}}}]},
     "/spec/interfaces/0/bandwidth"),
], ids=["iotune", "linkState", "bandwidth"])
def test_on_xen_live_tuning_is_next_boot_and_the_plan_says_why(before: dict[str, Any], after: dict[str, Any],
                                                              field: str) -> None:
    a, b = _guest(xen={"mode": "pvh"}, **before), _guest(xen={"mode": "pvh"}, **after)
    update, out = _update(a, b, caps=XEN)
    assert update.live == () and update.impact == Impact.NEXT_BOOT
    change = next(c for c in update.changes if c.path == field)
    assert change.impact == Impact.NEXT_BOOT and change.note == "Xen cannot change it live"
    assert any("pending restart" in p.reason for p in out.pending)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("nic", "field", "words"), [
    ({"network": "lab", "bridge": "br0"}, "bridge", "not network and bridge"),
    ({"bridge": "br0", "direct": {"dev": "eth0"}}, "direct", "not bridge and direct"),
    ({"model": "virtio"}, "network", "needs one of 'network'"),
    ({"bridge": "br0", "type": "direct"}, "type", "does not match"),
    ({"bridge": "br0", "portgroup": "web"}, "portgroup", "needs 'network'"),
    ({"network": "lab", "vlan": 42}, "vlan", "takes its VLAN from the network"),
    ({"direct": {"dev": "eth0", "mode": "bridge"}, "vlan": 42}, "vlan", "passthrough"),
    ({"network": "lab", "queues": 4, "model": "e1000"}, "queues", "model virtio"),
    ({"network": "lab", "queues": 0}, "queues", "greater than or equal to 1"),
    ({"network": "lab", "linkState": "sideways"}, "linkState", "'up' or 'down'"),
    ({"network": "lab", "bandwidth": {"inbound": {"peak": 10}}}, "average", "Field required"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_nic_is_refused_naming_the_field(nic: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        _guest(interfaces=[nic])
    text = str(err.value)
    assert words in text
    located = [".".join(str(p) for p in e["loc"]) for e in err.value.errors()]
    assert any(field in loc for loc in located) or field in text, located


@pytest.mark.parametrize(("disk", "words"), [
    ({"iotune": {"totalBytesSec": 1, "readBytesSec": 1}}, "totalBytesSec or readBytesSec/writeBytesSec"),
    ({"iotune": {"totalIopsSec": 1, "writeIopsSec": 1}}, "totalIopsSec or readIopsSec/writeIopsSec"),
    ({"io": "native", "cache": "writeback"}, "io native needs cache none or directsync"),
    ({"device": "cdrom", "bus": "sata", "readonly": False}, "always read-only"),
    ({"cache": "fast"}, "'none', 'writeback'"),
    ({"serial": "bad/serial"}, "should match pattern"),
    ({"iotune": {"totalBytesSec": 0}}, "greater than or equal to 1"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_disk_is_refused_with_a_clear_message(disk: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        _guest(disks=[{**DISK, **disk}])
    assert words in str(err.value)


def test_the_nic_type_follows_from_its_source() -> None:
    assert Interface.model_validate({"network": "lab"}).kind == "network"
    assert Interface.model_validate({"bridge": "br0", "type": "bridge"}).kind == "bridge"
    nic = Interface.model_validate({"direct": {"dev": "eth0"}})
    assert (nic.kind, nic.source, nic.direct.mode if nic.direct else None) == ("direct", "eth0", "bridge")


# ------------------------------------------------------------------ keys


def test_nics_without_a_mac_match_by_source_and_position() -> None:
    spec = _guest(interfaces=[{"bridge": "br0"}, {"network": "lab"}, {"direct": {"dev": "eth1"}},
                              {"bridge": "br0"}]).spec
    observed = [NicState("52:54:00:00:00:01", network="lab", type="network"),
                NicState("52:54:00:00:00:02", bridge="br0", type="bridge"),
                NicState("52:54:00:00:00:03", type="direct", direct=("eth1", "bridge")),
                NicState("52:54:00:00:00:04", bridge="br0", type="bridge"),
                NicState("52:54:00:00:00:05", network="other", bridge="br0", type="network")]  # a live network NIC
    pairs, extra = match_nics(spec.interfaces, observed)
    assert [i for _, i in pairs] == [1, 0, 2, 3]
    assert extra == [4]  # a network NIC whose network's bridge is br0 is not a bridge NIC


# ------------------------------------------------------------------ writing in place


UNMODELLED = """<domain type='kvm'><name>g</name><uuid>0b7c9e4e-0000-4000-8000-000000000001</uuid>
<memory unit='KiB'>131072</memory><currentMemory unit='KiB'>131072</currentMemory><vcpu>1</vcpu>
<os><type>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='writeback' copy_on_read='on'/>
<source file='/var/lib/libvirt/images/data.qcow2'/><target dev='vda' bus='virtio'/>
<iotune><total_bytes_sec>500</total_bytes_sec><total_bytes_sec_max>900</total_bytes_sec_max>
<group_name>grp</group_name></iotune><alias name='ua-data'/></disk>
<interface type='bridge'><mac address='52:54:00:00:00:0a'/><source bridge='br0'/>
<virtualport type='openvswitch'/><model type='virtio'/>
<bandwidth><inbound average='10' floor='5'/></bandwidth><mtu size='9000'/></interface>
</devices></domain>"""


def test_writers_edit_the_existing_elements_and_keep_what_virtsync_does_not_model() -> None:
    guest = _guest(adopt=True, state="stopped",
                   disks=[{**DISK, "cache": "none", "iotune": {"readBytesSec": 700}, "serial": "S-1"}],
                   interfaces=[{"bridge": "br0", "mac": MAC, "vlan": 42, "queues": 2,
                                "bandwidth": {"inbound": {"average": 20}, "outbound": {"average": 30}}}])
    obs = _observe(UNMODELLED, False)
    update = next(a for a in plan_guest(guest, _host(KVM, obs), PlanOptions()).actions
                  if isinstance(a, UpdateGuest))
    xml = update_guest_xml(UNMODELLED, "g", guest.spec, WriteContext("kvm", {}, OWNER, None), update.fields)
    root = etree.fromstring(xml.encode())
    disk, nic = root.find("devices/disk"), root.find("devices/interface")
    assert disk is not None and nic is not None
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2", "cache": "none",  # type: ignore[union-attr]
                                          "copy_on_read": "on"}
    assert [c.tag for c in disk.find("iotune")] == ["total_bytes_sec_max", "group_name", "read_bytes_sec"]  # type: ignore[union-attr]
    assert disk.findtext("serial") == "S-1"
    assert nic.find("virtualport") is not None and nic.find("mtu") is not None
    assert nic.find("bandwidth/inbound").attrib == {"average": "20", "floor": "5"}  # type: ignore[union-attr]
    assert nic.find("vlan/tag").get("id") == "42"  # type: ignore[union-attr]
    assert nic.find("driver").get("queues") == "2"  # type: ignore[union-attr]
    again = plan_guest(guest, _host(KVM, _observe(xml, False)), PlanOptions())
    assert again.actions == [] and again.drift == []


def test_a_nic_moved_from_a_network_to_a_bridge_keeps_its_mac_and_model() -> None:
    a = _guest(state="stopped", interfaces=[{"network": "lab", "mac": MAC, "model": "e1000", "portgroup": "web"}])
    b = _guest(state="stopped", interfaces=[{"bridge": "br0", "mac": MAC, "model": "e1000"}])
    update, _ = _update(a, b, running=False)
    assert [c.path for c in update.changes] == ["/spec/interfaces/0/bridge"]
    xml = update_guest_xml(_xml(a), "g", b.spec, WriteContext("kvm", {}, OWNER, None), update.fields)
    nic = etree.fromstring(xml.encode()).find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    assert nic.find("source").attrib == {"bridge": "br0"}  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == MAC and nic.find("model").get("type") == "e1000"  # type: ignore[union-attr]


TUNED: dict[str, Any] = {
    "disks": [{"name": "root", "pool": "p", "size": "10GiB", "cache": "none", "io": "native", "discard": "unmap",
               "serial": "ROOT-1", "iotune": {"totalBytesSec": 52428800, "totalIopsSec": 500}},
              {"name": "shared", "path": "/var/lib/libvirt/images/shared.raw", "format": "raw",
               "shareable": True, "cache": "none"},
              {"name": "iso", "path": "/var/lib/libvirt/images/tools.iso", "format": "raw", "device": "cdrom",
               "bus": "sata",
               "readonly": True}],
    "interfaces": [{"network": "lab", "mac": "52:54:00:00:00:01", "portgroup": "web", "queues": 4,
                    "bandwidth": {"inbound": {"average": 1000, "peak": 2000, "burst": 256},
                                  "outbound": {"average": 500}}, "linkState": "down"},
                   {"bridge": "br0", "mac": "52:54:00:00:00:02", "vlan": 42},
                   {"direct": {"dev": "eth0", "mode": "vepa"}, "mac": "52:54:00:00:00:03"}],
}


def test_tuned_disks_and_nics_match_their_golden_file(update_golden: bool) -> None:
    ctx = WriteContext("kvm", {"p": "/var/lib/libvirt/images/p"}, OWNER, "6c1f4b52-2d2e-4f0e-9a51-1b2c3d4e5f60")
    assert_golden(GOLDEN / "kvm-disk-nic-tuning.xml", new_guest_xml("g", _guest(**TUNED).spec, ctx), update_golden)


# ------------------------------------------------------------------ export


def test_export_writes_every_field_back_and_plans_no_change() -> None:
    xml = new_guest_xml("g", _guest(**TUNED).spec, WriteContext("kvm", {"p": "/var/lib/libvirt/images/p"}, OWNER,
                                                                "6c1f4b52-2d2e-4f0e-9a51-1b2c3d4e5f60"))
    obs = _observe(xml, False)
    notes: list[str] = []
    spec = guest_spec("h1", obs, owned=True, comments=notes)
    assert notes == [] and "ignore" not in spec
    root, shared, iso = spec["disks"]
    assert root["iotune"] == {"totalBytesSec": 52428800, "totalIopsSec": 500} and root["serial"] == "ROOT-1"
    assert (root["cache"], root["io"], root["discard"]) == ("none", "native", "unmap")
    assert shared["shareable"] is True and iso["readonly"] is True
    lab, br, direct = spec["interfaces"]
    assert lab == {"network": "lab", "mac": "52:54:00:00:00:01", "model": "virtio", "queues": 4,
                   "bandwidth": {"inbound": {"average": 1000, "peak": 2000, "burst": 256},
                                 "outbound": {"average": 500}},
                   "linkState": "down", "portgroup": "web"}
    assert br == {"bridge": "br0", "mac": "52:54:00:00:00:02", "model": "virtio", "vlan": 42}
    assert direct == {"direct": {"dev": "eth0", "mode": "vepa"}, "mac": "52:54:00:00:00:03", "model": "virtio"}
    exported = Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                     "spec": spec})
    out = plan_guest(exported, _host(KVM, obs), PlanOptions())
    assert out.actions == [] and out.drift == []


def test_export_leaves_a_nic_it_cannot_describe_under_ignore() -> None:
    xml = _xml(_guest(interfaces=[{"network": "lab", "mac": MAC}]))
    # an Open vSwitch network's NIC may carry a VLAN tag; the spec refuses one on a network NIC
    tagged = xml.replace('<model type="virtio"/>', '<model type="virtio"/><vlan><tag id="7"/></vlan>')
    user = xml.replace('<interface type="network">', '<interface type="user">')
    for text, why in ((tagged, "takes its VLAN from the network"), (user, "type user")):
        notes: list[str] = []
        spec = guest_spec("h1", _observe(text, False), owned=True, comments=notes)
        assert spec["ignore"] == ["/spec/interfaces"] and spec["interfaces"] == []
        assert len(notes) == 1 and why in notes[0], notes
