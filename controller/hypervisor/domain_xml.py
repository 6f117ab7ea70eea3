"""Domain XML ⇄ model, through the field registry (controller/fields/guest.py).

Reading merges every field's reader into the essence; writing edits the XML in place
(virt-manager's virtinst habit): only the elements of the fields being set are touched,
so everything virtsync does not model — devices added by hand, addresses libvirt
assigned, a <seclabel> — survives every update. A new guest is the same edit applied to a
skeleton.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from lxml import etree

from controller.fields.base import Facts, read_all, write_all
from controller.fields.devices import read_devices, read_disk
from controller.fields.guest import GUEST_FIELDS, WRITTEN_WITH, write_xen_os
from controller.fields.xmlutil import parse, remove, tostring
from controller.hypervisor import ownership
from controller.model.records import record
from controller.model.state import GuestConfig, Owner
from controller.spec.models import GuestSpec

# ---------------------------------------------------------------- reading


@lru_cache(maxsize=16384)
def read_guest(xml: str) -> tuple[str, str, GuestConfig, Owner | None]:
    """(name, uuid, essence, owner) of a domain XML document.

    Cached by the document's text: the service observes the same unchanged definitions again
    and again (events, resyncs), and the essence is frozen data, safe to share."""
    return read_guest_root(parse(xml))


def read_guest_root(root: etree._Element) -> tuple[str, str, GuestConfig, Owner | None]:
    name = root.findtext("name") or ""
    uuid = root.findtext("uuid") or ""
    config = GuestConfig(uuid=uuid, virt_type=root.get("type", ""), **read_all(GUEST_FIELDS, root),
                         **read_devices(name, root))
    return name, uuid, config, ownership.find_owner(root)


# ---------------------------------------------------------------- writing


@record
class WriteContext:
    """What the XML needs beyond the spec: host facts, resolved paths, the ownership record."""

    virt_type: str  # kvm | qemu | xen | test
    pool_paths: dict[str, str]  # pool name → directory on the host
    owner: Owner
    uuid: str | None = None
    keep: frozenset[str] = frozenset()  # devices whose removal waits for --prune

    def facts(self, name: str) -> Facts:
        return Facts(name, self.virt_type, self.pool_paths, self.keep)


SKELETON = """<domain type='kvm'><name/><memory unit='KiB'>0</memory>
<os><type>hvm</type></os><features><acpi/><apic/></features><clock offset='utc'/>
<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
<devices><console type='pty'/></devices></domain>"""


def new_guest_xml(name: str, spec: GuestSpec, ctx: WriteContext) -> str:
    """The full definition of a guest that does not exist yet."""
    root = parse(SKELETON)
    root.set("type", ctx.virt_type)
    root.find("name").text = name  # type: ignore[union-attr]
    if ctx.uuid:
        root.find("name").addnext(etree.Element("uuid"))  # type: ignore[union-attr]
        root.find("uuid").text = ctx.uuid  # type: ignore[union-attr]
    if ctx.virt_type == "test" or (ctx.virt_type == "xen" and spec.xen is not None and spec.xen.mode != "hvm"):
        remove(root.find("features"))  # PV/PVH guests have none; the test driver ignores them
    if ctx.virt_type == "xen":
        write_xen_os(root, spec.xen.mode if spec.xen is not None else "pv")
    edit_guest(root, name, spec, ctx, fields=None)
    return tostring(root)


def update_guest_xml(xml: str, name: str, spec: GuestSpec, ctx: WriteContext,
                     fields: Iterable[str]) -> str:
    """The persistent definition with ``fields`` (spec names) set as the spec says."""
    root = parse(xml)
    edit_guest(root, name, spec, ctx, fields=set(fields))
    return tostring(root)


def edit_guest(root: etree._Element, name: str, spec: GuestSpec, ctx: WriteContext,
               fields: set[str] | None) -> None:
    """Write spec fields into a domain XML tree; ``fields=None`` writes all of them.

    The xmlPatches entry is last in the registry and always written: the patches are applied
    after the declared fields on every write, so no update or recreate drops what they add."""
    ownership.set_owner(root, ctx.owner)
    names = None if fields is None else {WRITTEN_WITH.get(f, f) for f in fields} | {"xmlPatches"}
    write_all(GUEST_FIELDS, root, spec, ctx.facts(name), names)


# ------------------------------------------------------- device XML for hot-plug calls


def _nic_element(xml: str, mac: str) -> etree._Element | None:
    for el in parse(xml).findall("devices/interface"):
        m = el.find("mac")
        if m is not None and (m.get("address") or "").lower() == mac:
            return el
    return None


def nic_xml(xml: str, mac: str) -> str | None:
    """The <interface> with this MAC, ready for attach/detach/updateDevice."""
    el = _nic_element(xml, mac)
    return etree.tostring(el, encoding="unicode") if el is not None else None


def nic_xml_at(xml: str, index: int) -> str | None:
    els = parse(xml).findall("devices/interface")
    return etree.tostring(els[index], encoding="unicode") if 0 <= index < len(els) else None


def nic_replug_xmls(live_xml: str, mac: str, bridge: str) -> tuple[str, str] | None:
    """The two live updates that put a NIC's tap back on its network's bridge: first as a
    plain bridge NIC (libvirt re-plugs the tap), then as the network NIC again (the port)."""
    el = _nic_element(live_xml, mac)
    if el is None:
        return None
    via_bridge = etree.fromstring(etree.tostring(el))
    via_bridge.set("type", "bridge")
    src = via_bridge.find("source")
    if src is not None:
        src.attrib.clear()
        src.set("bridge", bridge)
    src = el.find("source")
    if src is not None:
        for attr in ("portid", "bridge"):
            if attr in src.attrib:
                del src.attrib[attr]
    return etree.tostring(via_bridge, encoding="unicode"), etree.tostring(el, encoding="unicode")


def graphics_xml(xml: str) -> str | None:
    """The first <graphics> (with its password), for updateDeviceFlags."""
    el = parse(xml).find("devices/graphics")
    return etree.tostring(el, encoding="unicode") if el is not None else None


def disk_xml_by_target(xml: str, target: str) -> str | None:
    for el in parse(xml).findall("devices/disk"):
        t = el.find("target")
        if t is not None and t.get("dev") == target:
            return etree.tostring(el, encoding="unicode")
    return None


def disk_xml_by_name(xml: str, guest: str, disk_name: str) -> str | None:
    """The <disk> a spec names (by its ua- alias, or the volume naming), for a hot-plug."""
    for el in parse(xml).findall("devices/disk"):
        if read_disk(guest, el).name == disk_name:
            return etree.tostring(el, encoding="unicode")
    return None
