"""A guest's keyed lists: disks (by name) and NICs (by MAC, else source and position).

The list readers and writers edit ``<devices>`` in place; the item fields (a disk's bus,
cache, I/O limits…, a NIC's source, model, bandwidth, link…) are declared once here, each
with its reader and in-place writer, and used by the planner's diff, the writer and export
alike.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from lxml import etree

from controller.fields.applied import declared
from controller.fields.base import Facts, Field, GuestView, read_all, write_all
from controller.fields.disks import SEED_DISK, effective_disks, seed_volume
from controller.fields.guest_tuning import DISK_IOTHREAD
from controller.fields.keys import match_nics
from controller.fields.xmlutil import child, remove, set_text
from controller.model.naming import volume_name
from controller.model.operations import Impact, LiveOp, SetBlockIoTune, SetInterfaceBandwidth, SetLinkState
from controller.model.records import record
from controller.model.state import DiskState, NicState
from controller.spec.models import AUTO_TAP_NAMES, Disk, GuestSpec, Interface
from controller.spec.tuning import IOTUNE_KEYS

_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "xen": "xvd"}
ALIAS_PREFIX = "ua-"  # libvirt keeps user aliases that start with "ua-"
# Drivers that change I/O limits, traffic shaping and a NIC's link on a running guest; libxl has
# no such calls, and the test driver's setBlockIoTune insists on a *_max for every limit.
LIVE_TUNING = frozenset({"kvm", "qemu"})


@record
class ItemView(GuestView):
    """What an item field's impact and live call consult: the guest's view plus the item (a spec
    Disk or Interface), its defined state and its running state (None: not running or attached)."""

    item: Any = None
    state: Any = None
    running: Any = None


_VIEW_NAMES = tuple(f.name for f in fields(GuestView))


def item_view(view: GuestView, item: Any, state: Any, running: Any) -> ItemView:
    return ItemView(**{name: getattr(view, name) for name in _VIEW_NAMES}, item=item, state=state, running=running)


def effective_bus(bus: str, virt_type: str) -> str:
    """libxl has no virtio disks: on Xen hosts virtio means Xen's own PV bus."""
    return "xen" if virt_type == "xen" and bus == "virtio" else bus


def nic_model(spec: GuestSpec, nic: Interface, virt_type: str) -> str:
    """libxl has no virtio NICs: Xen guests get netfront (PV/PVH) or e1000 (HVM) unless told."""
    if "model" in nic.model_fields_set or (spec.xen is None and virt_type != "xen"):
        return nic.model
    return "e1000" if spec.xen is not None and spec.xen.mode == "hvm" else "netfront"


def target_name(prefix: str, index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


# ---------------------------------------------------------------- reading


def read_disk(guest: str, el: etree._Element) -> DiskState:
    target = el.find("target")
    source = el.find("source")
    driver = el.find("driver")
    alias = el.find("alias")
    dev = target.get("dev", "") if target is not None else ""
    path = None
    pool = volume = described = None
    kind = el.get("type", "file")
    if source is not None:
        path = source.get("file") or source.get("dev")
        pool, volume = source.get("pool"), source.get("volume")
        if kind == "network":
            described = ":".join(v for v in (source.get("protocol"), source.get("name")) if v) or None
        elif kind == "block":
            described = source.get("dev")
        elif kind not in ("file", "volume"):
            described = source.get("dir") or source.get("path")
    name = dev
    alias_name = alias.get("name", "") if alias is not None else ""
    if alias_name.startswith(ALIAS_PREFIX):
        name = alias_name[len(ALIAS_PREFIX):]
    else:
        file = (volume or (path or "").rsplit("/", 1)[-1])
        stem = file.rsplit(".", 1)[0]
        if stem.startswith(guest + "-"):
            name = stem[len(guest) + 1:]
    return DiskState(
        name=name,
        target=dev,
        bus=target.get("bus", "") if target is not None else "",
        device=el.get("device", "disk"),
        format=driver.get("type") if driver is not None else None,
        pool=pool,
        volume=volume,
        path=path,
        type=kind,
        source=described,
        **read_all(DISK_FIELDS, el),
    )


def read_nic(el: etree._Element) -> NicState:
    mac = el.find("mac")
    source = el.find("source")
    model = el.find("model")
    target = el.find("target")
    return NicState(
        mac=(mac.get("address", "") if mac is not None else "").lower(),
        network=source.get("network") if source is not None else None,
        bridge=source.get("bridge") if source is not None else None,
        model=model.get("type") if model is not None else None,
        tap=target.get("dev") if target is not None else None,
        type=el.get("type", "network"),
        **read_all(NIC_FIELDS, el),
    )


def read_devices(guest: str, root: etree._Element) -> dict[str, Any]:
    return {"disks": tuple(read_disk(guest, d) for d in root.findall("devices/disk")),
            "interfaces": tuple(read_nic(i) for i in root.findall("devices/interface"))}


# ---------------------------------------------------------------- writing


def disk_path(name: str, disk: Disk, pool_paths: dict[str, str] | Any) -> str:
    if disk.path:
        return disk.path
    pool_dir = pool_paths.get(disk.pool or "", "")
    vol = seed_volume(name) if disk.name == SEED_DISK else volume_name(name, disk.name, disk.format)
    return f"{pool_dir.rstrip('/')}/{vol}"


def disk_source(disk: Disk, facts: Facts) -> str | None:
    """The file a spec disk is on, as the host names it; None where that is not known yet (a pool
    the host does not have) or is virtsync's own (the cloud-init seed)."""
    if disk.name == SEED_DISK:
        return None
    if disk.path:
        return disk.path
    return disk_path(facts.name, disk, facts.pool_paths) if disk.pool in facts.pool_paths else None


def observed_source(state: DiskState, facts: Facts) -> str | None:
    """The file a defined disk is on: its file, or its volume's file in a pool with a directory;
    None for what a spec cannot name (block and network disks, an empty CD-ROM drive)."""
    if state.type == "file":
        return state.path
    pool_dir = facts.pool_paths.get(state.pool or "") if state.type == "volume" and state.volume else None
    return f"{pool_dir.rstrip('/')}/{state.volume}" if pool_dir else None


def _write_source(el: etree._Element, disk: Disk, facts: Facts) -> None:
    """A changed source (the planner let it through: --prune, not held) becomes the spec's file;
    what else the <source> holds (a seclabel …) stays."""
    want = disk_source(disk, facts)
    if want is None or disk.name in facts.keep or want == observed_source(read_disk(facts.name, el), facts):
        return
    if el.get("type", "file") not in ("file", "volume"):
        return
    el.set("type", "file")
    src = child(el, "source")
    for attr in ("pool", "volume", "mode"):
        if attr in src.attrib:
            del src.attrib[attr]
    src.set("file", want)


def disk_element(disk: Disk, facts: Facts, target: str) -> etree._Element:
    el = etree.Element("disk", type="file", device=disk.device)
    if facts.virt_type != "test":
        # an ISO file is raw: a CD-ROM file given by path is read as raw unless told otherwise
        fmt = "raw" if disk.device == "cdrom" and disk.path and "format" not in disk.model_fields_set else disk.format
        etree.SubElement(el, "driver", name="qemu", type=fmt)  # libxl takes qemu too
    source = etree.SubElement(el, "source", file=disk_path(facts.name, disk, facts.pool_paths))
    if disk._luks_secret:  # a LUKS kind: Volume: QEMU opens it with the passphrase's libvirt secret
        enc = etree.SubElement(source, "encryption", format="luks")
        etree.SubElement(enc, "secret", type="passphrase", uuid=disk._luks_secret)
    etree.SubElement(el, "target", dev=target, bus=effective_bus(disk.bus, facts.virt_type))
    if disk.device == "cdrom":
        etree.SubElement(el, "readonly")
    if facts.virt_type != "xen":
        etree.SubElement(el, "alias", name=ALIAS_PREFIX + disk.name)
    return el


def disk_names(spec: GuestSpec, observed: list[DiskState], facts: Facts) -> list[str]:
    """The spec's name of each observed disk: its ua- alias or volume naming, else (drivers that
    keep no alias, like libxl) the spec disk whose file it is, else its target dev."""
    disks = effective_disks(spec)
    names = {d.name for d in disks}
    by_path = {disk_path(facts.name, d, facts.pool_paths): d.name for d in disks}
    return [st.name if st.name in names else by_path.get(st.path or "", st.name) for st in observed]


def append_device(devices: etree._Element, el: etree._Element) -> None:
    """Keep devices grouped: a new disk after the last disk, a NIC after the last NIC."""
    same = devices.findall(el.tag)
    if same:
        same[-1].addnext(el)
    else:
        devices.append(el)


def _free_target(bus: str, used: set[str | None]) -> str:
    prefix = _TARGET_PREFIX.get(bus, "vd")
    i = 0
    while target_name(prefix, i) in used:
        i += 1
    return target_name(prefix, i)


def write_disks(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    """The declared disks (and the cloud-init seed) as a keyed set: gone ones removed, new ones
    appended, a changed bus moved to a free target of the new bus; everything else kept."""
    devices = child(root, "devices")
    disks = effective_disks(spec)
    elements = devices.findall("disk")
    names = disk_names(spec, [read_disk(facts.name, d) for d in elements], facts)
    existing = dict(zip(names, elements, strict=True))
    wanted = {d.name for d in disks}
    for key, old in existing.items():
        if key not in wanted and key not in facts.keep:
            devices.remove(old)
    used = {t.get("dev") for t in devices.findall("disk/target")}
    for disk in disks:
        el = existing.get(disk.name)
        bus = effective_bus(disk.bus, facts.virt_type)
        if el is not None:
            target = el.find("target")
            if target is not None and target.get("bus") != bus:
                used.discard(target.get("dev"))
                target.set("dev", _free_target(bus, used))
                target.set("bus", bus)
                used.add(target.get("dev"))
                remove(el.find("address"))  # the old bus's address does not fit the new one
            _write_source(el, disk, facts)
        else:
            dev = _free_target(bus, used)
            used.add(dev)
            el = disk_element(disk, facts, dev)
            append_device(devices, el)
        write_all(DISK_FIELDS, el, disk, facts, declared(disk))  # only what the spec declares
    scsi = any(effective_bus(d.bus, facts.virt_type) == "scsi" for d in disks)
    if scsi and facts.virt_type in ("kvm", "qemu") and devices.find("controller[@type='scsi']") is None:
        # libvirt's default SCSI controller is an LSI one no modern guest (Windows) has drivers for
        append_device(devices, etree.Element("controller", type="scsi", model="virtio-scsi"))


# The <disk> attributes and children the disk fields own.


def _driver_attr(attr: str) -> Any:
    def read(el: etree._Element) -> dict[str, Any]:
        driver = el.find("driver")
        return {attr: driver.get(attr) if driver is not None else None}

    def write(el: etree._Element, disk: Disk, _facts: Facts) -> None:
        value = getattr(disk, attr)
        driver = el.find("driver")
        if value is not None:
            child(el, "driver").set(attr, value)
        elif driver is not None and attr in driver.attrib:
            del driver.attrib[attr]

    return read, write


_CACHE, _IO, _DISCARD = _driver_attr("cache"), _driver_attr("io"), _driver_attr("discard")


def _read_serial(el: etree._Element) -> dict[str, Any]:
    return {"serial": el.findtext("serial")}


def _write_serial(el: etree._Element, disk: Disk, _facts: Facts) -> None:
    if disk.serial:
        set_text(el, "serial", disk.serial)
    else:
        remove(el.find("serial"))


def _flag(tag: str) -> Any:
    """An empty element whose presence is the value: <readonly/>, <shareable/>."""

    def read(el: etree._Element) -> dict[str, Any]:
        return {tag: el.find(tag) is not None}

    def write(el: etree._Element, disk: Disk, _facts: Facts) -> None:
        on = bool(getattr(disk, tag)) or (tag == "readonly" and disk.device == "cdrom")
        if on:
            child(el, tag)
        else:
            remove(el.find(tag))

    return read, write


_READONLY, _SHAREABLE = _flag("readonly"), _flag("shareable")


def _read_iotune(el: etree._Element) -> dict[str, Any]:
    iotune = el.find("iotune")
    values: list[tuple[str, int]] = []
    for key in IOTUNE_KEYS:
        text = iotune.findtext(key) if iotune is not None else None
        if text and int(text) > 0:
            values.append((key, int(text)))
    return {"iotune": tuple(values)}


def _write_iotune(el: etree._Element, disk: Disk, _facts: Facts) -> None:
    """The six limits virtsync models; the rest of <iotune> (*_max, group_name …) is kept."""
    values = disk.iotune.values() if disk.iotune is not None else ()
    iotune = el.find("iotune")
    if iotune is None and not values:
        return
    iotune = iotune if iotune is not None else etree.SubElement(el, "iotune")
    for key in IOTUNE_KEYS:
        remove(iotune.find(key))
    for key, value in values:
        etree.SubElement(iotune, key).text = str(value)
    if len(iotune) == 0:
        remove(iotune)


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)


def _show_iotune(value: tuple[tuple[str, int], ...]) -> str:
    return " ".join(f"{_camel(k)}={v}" for k, v in value) or "none"


def _iotune_live(v: GuestView) -> LiveOp | None:
    assert isinstance(v, ItemView)
    if v.running is None:
        return None
    limits = dict(v.item.iotune.values()) if v.item.iotune is not None else {}
    return SetBlockIoTune(v.running.target, **limits)


def _live_tuning(v: GuestView) -> Impact:
    return Impact.LIVE if v.caps.virt_type in LIVE_TUNING else Impact.NEXT_BOOT


def nic_element(nic: Interface, model: str) -> etree._Element:
    """A new NIC: its type and source come from the source field's writer (written with the rest)."""
    el = etree.Element("interface", type=nic.kind)
    if nic.mac:
        etree.SubElement(el, "mac", address=nic.mac)
    etree.SubElement(el, "source")
    etree.SubElement(el, "model", type=model)
    return el


def _set_rom(el: etree._Element, boot_rom: bool) -> None:
    rom = el.find("rom")
    if boot_rom:
        remove(rom)
    else:
        rom = rom if rom is not None else etree.SubElement(el, "rom")
        rom.attrib.clear()
        rom.set("enabled", "no")


def write_interfaces(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    """NICs as a keyed set (MAC, else source and position): unmatched ones removed, new ones
    appended, the matched ones' declared fields set in place."""
    devices = child(root, "devices")
    current = devices.findall("interface")
    observed = [read_nic(e) for e in current]
    pairs, extra_obs = match_nics(spec.interfaces, observed)
    for i in extra_obs:
        if observed[i].mac not in facts.keep:
            devices.remove(current[i])
    for want, obs_index in pairs:
        model = nic_model(spec, want, facts.virt_type)
        names = declared(want) | {want.kind}  # the source is always written
        if obs_index is None:
            el = nic_element(want, model)
            write_all(NIC_FIELDS, el, want, facts, names)
            append_device(devices, el)
            continue
        el = current[obs_index]
        if want.mac:
            child(el, "mac", address=want.mac)
        write_all(NIC_FIELDS, el, want, facts, names)
        child(el, "model", type=model)


# The <interface> parts the NIC fields own.


def _source_writer(kind: str) -> Any:
    """Set the NIC's type and source; a source that changes is replaced whole (a network's
    portid, a bridge's name mean nothing on another source)."""

    def write(el: etree._Element, nic: Interface, _facts: Facts) -> None:
        if nic.kind != kind:
            return
        src = child(el, "source")
        want = ({"network": nic.network} if kind == "network" else {"bridge": nic.bridge} if kind == "bridge"
                else {"dev": nic.direct.dev, "mode": nic.direct.mode} if nic.direct is not None else {})
        if el.get("type") != kind or any(src.get(k) != v for k, v in want.items()):
            el.set("type", kind)
            src.attrib.clear()
            for k, v in want.items():
                src.set(k, str(v))

    return write


def _read_direct(el: etree._Element) -> dict[str, Any]:
    src = el.find("source")
    if el.get("type") != "direct" or src is None:
        return {"direct": None}
    return {"direct": (src.get("dev", ""), src.get("mode", "vepa"))}  # libvirt's default mode


def _read_rom(el: etree._Element) -> dict[str, Any]:
    rom = el.find("rom")
    return {"boot_rom": not (rom is not None and (rom.get("enabled") == "no" or rom.get("bar") == "off"))}


def _read_queues(el: etree._Element) -> dict[str, Any]:
    driver = el.find("driver")
    queues = driver.get("queues") if driver is not None else None
    return {"queues": int(queues) if queues else None}


def _write_queues(el: etree._Element, nic: Interface, _facts: Facts) -> None:
    driver = el.find("driver")
    if nic.queues is None:
        if driver is not None and "queues" in driver.attrib:
            del driver.attrib["queues"]
        return
    # No driver name forced: QEMU then takes vhost-net where the host has /dev/vhost-net and its
    # userspace backend where not (name='vhost' would refuse to start there).
    child(el, "driver", queues=str(nic.queues))


_Rate = tuple[int, int | None, int | None]
_DIRECTIONS = ("inbound", "outbound")


def _read_bandwidth(el: etree._Element) -> dict[str, Any]:
    bw = el.find("bandwidth")
    out: list[_Rate | None] = []
    for direction in _DIRECTIONS:
        d = bw.find(direction) if bw is not None else None
        average = d.get("average") if d is not None else None
        if d is None or not average or int(average) == 0:
            out.append(None)  # no limit (a floor alone is not modelled)
            continue
        peak, burst = d.get("peak"), d.get("burst")
        out.append((int(average), int(peak) if peak and int(peak) else None,
                    int(burst) if burst and int(burst) else None))
    return {"bandwidth": (out[0], out[1])}


def _want_bandwidth(nic: Interface, _facts: Facts) -> tuple[_Rate | None, _Rate | None]:
    bw = nic.bandwidth
    rates: list[_Rate | None] = []
    for direction in _DIRECTIONS:
        limit = getattr(bw, direction) if bw is not None else None
        rates.append((limit.average, limit.peak, limit.burst) if limit is not None else None)
    return rates[0], rates[1]


def _write_bandwidth(el: etree._Element, nic: Interface, facts: Facts) -> None:
    rates = _want_bandwidth(nic, facts)
    bw = el.find("bandwidth")
    if bw is None and rates == (None, None):
        return
    bw = bw if bw is not None else etree.SubElement(el, "bandwidth")
    for direction, rate in zip(_DIRECTIONS, rates, strict=True):
        d = bw.find(direction)
        if rate is None:
            remove(d)
            continue
        d = d if d is not None else etree.SubElement(bw, direction)
        for attr, value in zip(("average", "peak", "burst"), rate, strict=True):
            if value is not None:
                d.set(attr, str(value))
            elif attr in d.attrib:
                del d.attrib[attr]
    if len(bw) == 0:
        remove(bw)


def _show_bandwidth(value: tuple[_Rate | None, _Rate | None]) -> str:
    parts = []
    for direction, rate in zip(_DIRECTIONS, value, strict=True):
        if rate is not None:
            avg, peak, burst = rate
            parts.append(f"{direction} {avg}" + (f"/{peak}" if peak else "") + (f" burst {burst}" if burst else ""))
    return ", ".join(parts) or "none"


def _export_bandwidth(value: tuple[_Rate | None, _Rate | None]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for direction, rate in zip(_DIRECTIONS, value, strict=True):
        if rate is not None:
            avg, peak, burst = rate
            out[direction] = {"average": avg, **({"peak": peak} if peak else {}), **({"burst": burst} if burst else {})}
    return out or None


def _bandwidth_live(v: GuestView) -> LiveOp | None:
    assert isinstance(v, ItemView)
    if v.running is None:
        return None
    inbound, outbound = _want_bandwidth(v.item, v.facts)
    args: dict[str, int] = {}
    for direction, rate in (("inbound", inbound), ("outbound", outbound)):
        for attr, value in zip(("average", "peak", "burst"), rate or (0, 0, 0), strict=True):
            args[f"{direction}_{attr}"] = value or 0
    return SetInterfaceBandwidth(v.running.mac, **args)


def set_link(el: etree._Element, state: str) -> None:
    """<link state=…> of an <interface>: used by the writer and by the live update alike."""
    child(el, "link", state=state)


def _read_link(el: etree._Element) -> dict[str, Any]:
    link = el.find("link")
    return {"link_state": link.get("state") if link is not None else None}


def _link_live(v: GuestView) -> LiveOp | None:
    assert isinstance(v, ItemView)
    return SetLinkState(v.running.mac, v.item.link_state or "up") if v.running is not None else None


def _read_vlan(el: etree._Element) -> dict[str, Any]:
    vlan = el.find("vlan")
    tags = vlan.findall("tag") if vlan is not None else []
    single = vlan is not None and vlan.get("trunk") != "yes" and len(tags) == 1
    return {"vlan": int(tags[0].get("id", "0")) if single else None}


def _write_vlan(el: etree._Element, nic: Interface, _facts: Facts) -> None:
    vlan = el.find("vlan")
    if nic.vlan is None:
        remove(vlan)
        return
    vlan = vlan if vlan is not None else etree.SubElement(el, "vlan")
    if vlan.get("trunk") is not None:
        del vlan.attrib["trunk"]
    for tag in vlan.findall("tag"):
        vlan.remove(tag)
    etree.SubElement(vlan, "tag", id=str(nic.vlan))


def _read_portgroup(el: etree._Element) -> dict[str, Any]:
    src = el.find("source")
    return {"portgroup": src.get("portgroup") if src is not None and el.get("type") == "network" else None}


def _write_portgroup(el: etree._Element, nic: Interface, _facts: Facts) -> None:
    src = child(el, "source")
    if nic.portgroup is not None:
        src.set("portgroup", nic.portgroup)
    elif "portgroup" in src.attrib:
        del src.attrib["portgroup"]


def _read_mtu(el: etree._Element) -> dict[str, Any]:
    mtu = el.find("mtu")
    size = mtu.get("size") if mtu is not None else None
    return {"mtu": int(size) if size and size.isdigit() else None}


def _write_mtu(el: etree._Element, nic: Interface, _facts: Facts) -> None:
    if nic.mtu is None:
        remove(el.find("mtu"))
    else:
        child(el, "mtu").set("size", str(nic.mtu))


def own_tap(name: str | None) -> str | None:
    """A NIC's tap name as a spec gives it: None for libvirt's own names (vnet0, vif1.0 …), which
    a running guest shows and a definition never keeps."""
    return name if name and not re.match(AUTO_TAP_NAMES, name) else None


def _write_target_dev(el: etree._Element, nic: Interface, _facts: Facts) -> None:
    target = el.find("target")
    if nic.target_dev is not None:
        child(el, "target").set("dev", nic.target_dev)
    elif target is not None:
        if "dev" in target.attrib:
            del target.attrib["dev"]
        if not target.attrib and len(target) == 0:
            remove(target)


def nic_label(state: NicState) -> str:
    """What a NIC is on, for plans: its network, bridge or macvtap device."""
    if state.type == "direct" and state.direct is not None:
        return f"direct:{state.direct[0]}"
    if state.type == "bridge":
        return f"bridge:{state.bridge}"
    return str(state.network)


def spec_nic_label(nic: Interface) -> str:
    return nic.network if nic.network is not None else f"{nic.kind}:{nic.source}"


# ---------------------------------------------------------------- item fields

_LIVE_HOW = "; next boot where the driver has no live call (Xen/libxl, the test driver)"

# A disk's fields. Its size lands through its volume (see fields/volume.py); the rest of a
# disk (pool, path, format, from, clone) is set when it is made.
DISK_FIELDS: tuple[Field[Any], ...] = (
    Field("bus", "disk bus; the disk moves to a free target of the new bus", Impact.NEXT_BOOT,
          pointer="/spec/disks/{i}/bus",
          want=lambda disk, facts: effective_bus(disk.bus, facts.virt_type),
          have=lambda state, _obs: state.bus,
          export=lambda bus: bus or None, samples=("virtio", "sata")),
    Field("cache", "host cache mode, <driver cache>", Impact.NEXT_BOOT, pointer="/spec/disks/{i}/cache",
          needs=("driver",), read=_CACHE[0], write=_CACHE[1], want=lambda disk, _f: disk.cache,
          have=lambda st, _o: st.cache,
          export=lambda v: v, samples=("none", "writeback")),
    Field("io", "I/O backend, <driver io>", Impact.NEXT_BOOT, pointer="/spec/disks/{i}/io",
          needs=("driver",), read=_IO[0], write=_IO[1], want=lambda disk, _f: disk.io, have=lambda st, _o: st.io,
          export=lambda v: v, samples=("threads", "native")),
    Field("discard", "discard (TRIM) passing, <driver discard>", Impact.NEXT_BOOT,
          pointer="/spec/disks/{i}/discard", needs=("driver",), read=_DISCARD[0], write=_DISCARD[1],
          want=lambda disk, _f: disk.discard, have=lambda st, _o: st.discard,
          export=lambda v: v, samples=("ignore", "unmap")),
    Field("serial", "<serial> the guest sees", Impact.NEXT_BOOT, pointer="/spec/disks/{i}/serial",
          needs=("serial",), read=_read_serial, write=_write_serial, want=lambda disk, _f: disk.serial or None,
          have=lambda st, _o: st.serial, export=lambda v: v, samples=("DISK-0001", "DISK-0002")),
    Field("readonly", "<readonly/>", Impact.NEXT_BOOT, pointer="/spec/disks/{i}/readonly",
          needs=("readonly",), read=_READONLY[0], write=_READONLY[1],
          want=lambda disk, _f: bool(disk.readonly) or disk.device == "cdrom", have=lambda st, _o: st.readonly,
          export=lambda on: True if on else None, samples=(False, True)),
    Field("shareable", "<shareable/>: several guests may use it", Impact.NEXT_BOOT,
          pointer="/spec/disks/{i}/shareable", needs=("shareable",), read=_SHAREABLE[0], write=_SHAREABLE[1],
          want=lambda disk, _f: bool(disk.shareable), have=lambda st, _o: st.shareable,
          export=lambda on: True if on else None, samples=(False, True)),
    Field("iotune", "I/O limits: setBlockIoTune on the running guest, and <iotune>" + _LIVE_HOW,
          Impact.LIVE, pointer="/spec/disks/{i}/iotune", needs=("iotune",), read=_read_iotune, write=_write_iotune,
          want=lambda disk, _f: disk.iotune.values() if disk.iotune is not None else (),
          have=lambda st, _o: st.iotune, show=_show_iotune, impact_of=_live_tuning, live=_iotune_live,
          calls=(SetBlockIoTune.call,), export=lambda v: {_camel(k): n for k, n in v} or None,
          samples=({"totalBytesSec": 10485760}, {"readBytesSec": 1048576, "writeIopsSec": 200})),
    DISK_IOTHREAD,
)

# A NIC's fields; its MAC is its key (a new MAC is a new NIC: detach + attach). Exactly one of
# network, bridge and direct is given: the others are not declared, so not compared.
NIC_FIELDS: tuple[Field[Any], ...] = (
    Field("network", "NIC network (<interface type='network'>)", Impact.NEXT_BOOT,
          pointer="/spec/interfaces/{i}/network", write=_source_writer("network"),
          want=lambda nic, _facts: nic.network,
          have=lambda state, _obs: state.network if state.type == "network" else None,
          export=lambda v: v, samples=("lab", "lab2")),
    Field("bridge", "an existing host bridge (<interface type='bridge'>)", Impact.NEXT_BOOT,
          pointer="/spec/interfaces/{i}/bridge", write=_source_writer("bridge"),
          want=lambda nic, _facts: nic.bridge,
          have=lambda state, _obs: state.bridge if state.type == "bridge" else None,
          export=lambda v: v, samples=("br0", "br1")),
    Field("direct", "macvtap on a host device (<interface type='direct'>)", Impact.NEXT_BOOT,
          pointer="/spec/interfaces/{i}/direct", needs=("source",), read=_read_direct, write=_source_writer("direct"),
          want=lambda nic, _facts: (nic.direct.dev, nic.direct.mode) if nic.direct is not None else None,
          have=lambda state, _obs: state.direct, show=lambda v: f"{v[0]} ({v[1]})" if v else None,
          export=lambda v: {"dev": v[0], "mode": v[1]} if v else None,
          samples=({"dev": "eth0", "mode": "bridge"}, {"dev": "eth1", "mode": "vepa"})),
    Field("model", "NIC model", Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/model",
          want=lambda nic, _facts: nic.model, have=lambda state, _obs: state.model,
          export=lambda model: model or None, samples=("virtio", "e1000")),
    Field("bootRom", "NIC boot ROM (iPXE)", Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/bootRom",
          needs=("rom",), read=_read_rom, write=lambda el, nic, _f: _set_rom(el, nic.boot_rom),
          want=lambda nic, _facts: nic.boot_rom, have=lambda state, _obs: state.boot_rom,
          export=lambda on: None if on else False, samples=(True, False)),
    Field("queues", "virtio-net multiqueue, <driver queues>", Impact.NEXT_BOOT,
          pointer="/spec/interfaces/{i}/queues", needs=("driver",), read=_read_queues, write=_write_queues,
          want=lambda nic, _f: nic.queues, have=lambda st, _o: st.queues, export=lambda v: v, samples=(1, 4)),
    Field("bandwidth", "traffic shaping: setInterfaceParameters on the running guest, and <bandwidth>"
          + _LIVE_HOW, Impact.LIVE, pointer="/spec/interfaces/{i}/bandwidth",
          needs=("bandwidth",), read=_read_bandwidth,
          write=_write_bandwidth, want=_want_bandwidth, have=lambda st, _o: st.bandwidth, show=_show_bandwidth,
          impact_of=_live_tuning, live=_bandwidth_live, calls=(SetInterfaceBandwidth.call,), export=_export_bandwidth,
          samples=({"inbound": {"average": 1000}},
                   {"inbound": {"average": 2000, "peak": 4000, "burst": 1024}, "outbound": {"average": 500}})),
    Field("linkState", "link up or down: updateDeviceFlags on the running guest, and <link state>"
          + _LIVE_HOW, Impact.LIVE, pointer="/spec/interfaces/{i}/linkState", needs=("link",), read=_read_link,
          write=lambda el, nic, _f: set_link(el, nic.link_state or "up"),
          want=lambda nic, _f: nic.link_state or "up", have=lambda st, _o: st.link_state or "up",
          impact_of=_live_tuning, live=_link_live, calls=(SetLinkState.call,),
          export=lambda v: v if v == "down" else None,
          samples=("up", "down")),
    Field("vlan", "802.1Q tag, <vlan><tag>", Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/vlan",
          needs=("vlan",), read=_read_vlan, write=_write_vlan, want=lambda nic, _f: nic.vlan,
          have=lambda st, _o: st.vlan,
          export=lambda v: v, samples=(10, 20)),
    Field("portgroup", "portgroup of the network, <source portgroup>", Impact.NEXT_BOOT,
          pointer="/spec/interfaces/{i}/portgroup", needs=("source",), read=_read_portgroup, write=_write_portgroup,
          want=lambda nic, _f: nic.portgroup, have=lambda st, _o: st.portgroup, export=lambda v: v,
          samples=("web", "db")),
    Field("mtu", "MTU of the NIC, <mtu size>", Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/mtu",
          needs=("mtu",), read=_read_mtu, write=_write_mtu, want=lambda nic, _f: nic.mtu, have=lambda st, _o: st.mtu,
          export=lambda v: v, samples=(1500, 9000)),
    Field("targetDev", "name of the host-side tap device, <target dev> (libvirt's own names are not kept)",
          Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/targetDev", write=_write_target_dev,
          want=lambda nic, _f: nic.target_dev, have=lambda st, _o: own_tap(st.tap), export=lambda v: v,
          samples=("tap-a1", "tap-b2")),
)

# Item fields that are keys, or are set once when the disk's volume is made (fields/pool.py).
DISK_CONTROL: dict[str, str] = {
    "name": "the disk's key; names its volume (GUEST-NAME.FORMAT)",
    "pool": "the pool its volume is made in (at creation)",
    "path": "an existing file instead of a pool volume (at creation)",
    "volume": "a kind: Volume of the guest's host instead of pool/path: its file, format and LUKS secret",
    "sha256": "the digest a `from` URL image must have",
    "clone": "linked (qcow2 overlay) or full copy of `from` (at creation)",
    "device": "disk or cdrom (at creation)",
    "deletePolicy": "whether the volume is deleted with the disk or the guest",
    "size": "see Volume",
    "format": "see Volume",
    "from": "see Volume",
}
NIC_CONTROL: dict[str, str] = {
    "mac": "the NIC's key: a new MAC is a new NIC (detach + attach, hot-plugged)",
    "type": "network, bridge or direct: follows from which of them is given (checked when written)",
}
