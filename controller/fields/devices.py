"""A guest's keyed lists: disks (by name) and NICs (by MAC, else network and position).

The list readers and writers edit ``<devices>`` in place; the item fields (a disk's bus,
a NIC's model, network, boot ROM) are declared once here and used by the planner's
diff, the writer and export alike.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from controller.fields.base import Facts, Field
from controller.fields.disks import SEED_DISK, effective_disks, seed_volume
from controller.fields.keys import match_nics
from controller.fields.xmlutil import child, remove
from controller.model.naming import volume_name
from controller.model.operations import Impact
from controller.model.state import DiskState, NicState
from controller.spec.models import Disk, GuestSpec, Interface

_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "xen": "xvd"}
ALIAS_PREFIX = "ua-"  # libvirt keeps user aliases that start with "ua-"


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
    pool = volume = None
    if source is not None:
        path = source.get("file") or source.get("dev")
        pool, volume = source.get("pool"), source.get("volume")
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
    )


def read_nic(el: etree._Element) -> NicState:
    mac = el.find("mac")
    source = el.find("source")
    model = el.find("model")
    target = el.find("target")
    rom = el.find("rom")
    return NicState(
        mac=(mac.get("address", "") if mac is not None else "").lower(),
        network=source.get("network") if source is not None else None,
        bridge=source.get("bridge") if source is not None else None,
        model=model.get("type") if model is not None else None,
        tap=target.get("dev") if target is not None else None,
        boot_rom=not (rom is not None and (rom.get("enabled") == "no" or rom.get("bar") == "off")),
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


def disk_element(disk: Disk, facts: Facts, target: str) -> etree._Element:
    el = etree.Element("disk", type="file", device=disk.device)
    if facts.virt_type != "test":
        etree.SubElement(el, "driver", name="qemu", type=disk.format)  # libxl takes qemu too
    etree.SubElement(el, "source", file=disk_path(facts.name, disk, facts.pool_paths))
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
            continue
        dev = _free_target(bus, used)
        used.add(dev)
        append_device(devices, disk_element(disk, facts, dev))


def nic_element(nic_network: str, mac: str | None, model: str, boot_rom: bool = True) -> etree._Element:
    el = etree.Element("interface", type="network")
    if mac:
        etree.SubElement(el, "mac", address=mac)
    etree.SubElement(el, "source", network=nic_network)
    etree.SubElement(el, "model", type=model)
    _set_rom(el, boot_rom)
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
    """NICs as a keyed set (MAC, else network and position): unmatched ones removed, new ones
    appended, the matched ones' declared attributes set."""
    devices = child(root, "devices")
    current = devices.findall("interface")
    observed = [read_nic(e) for e in current]
    pairs, extra_obs = match_nics(spec.interfaces, observed)
    for i in extra_obs:
        if observed[i].mac not in facts.keep:
            devices.remove(current[i])
    for want, obs_index in pairs:
        model = nic_model(spec, want, facts.virt_type)
        if obs_index is None:
            append_device(devices, nic_element(want.network, want.mac, model, want.boot_rom))
            continue
        el = current[obs_index]
        if want.mac:
            child(el, "mac", address=want.mac)
        src = child(el, "source")
        if el.get("type") != "network" or src.get("network") != want.network:
            el.set("type", "network")
            src.attrib.clear()
            src.set("network", want.network)
        child(el, "model", type=model)
        if "boot_rom" in want.model_fields_set:
            _set_rom(el, want.boot_rom)


# ---------------------------------------------------------------- item fields

# A disk's fields. Its size lands through its volume (see fields/volume.py); the rest of a
# disk (pool, path, format, from, clone) is set when it is made.
DISK_FIELDS: tuple[Field[Any], ...] = (
    Field("bus", "disk bus; the disk moves to a free target of the new bus", Impact.NEXT_BOOT,
          pointer="/spec/disks/{i}/bus",
          want=lambda disk, facts: effective_bus(disk.bus, facts.virt_type),
          have=lambda state, _obs: state.bus,
          export=lambda bus: bus or None, samples=("virtio", "sata")),
)

# A NIC's fields; its MAC is its key (a new MAC is a new NIC: detach + attach).
NIC_FIELDS: tuple[Field[Any], ...] = (
    Field("network", "NIC network", Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/network",
          want=lambda nic, _facts: nic.network, have=lambda state, _obs: state.network,
          samples=("lab", "lab2")),
    Field("model", "NIC model", Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/model",
          want=lambda nic, _facts: nic.model, have=lambda state, _obs: state.model,
          export=lambda model: model or None, samples=("virtio", "e1000")),
    Field("bootRom", "NIC boot ROM (iPXE)", Impact.NEXT_BOOT, pointer="/spec/interfaces/{i}/bootRom",
          want=lambda nic, _facts: nic.boot_rom, have=lambda state, _obs: state.boot_rom,
          export=lambda on: None if on else False, samples=(True, False)),
)

# Item fields that are keys, or are set once when the disk's volume is made (fields/pool.py).
DISK_CONTROL: dict[str, str] = {
    "name": "the disk's key; names its volume (GUEST-NAME.FORMAT)",
    "pool": "the pool its volume is made in (at creation)",
    "path": "an existing file instead of a pool volume (at creation)",
    "sha256": "the digest a `from` URL image must have",
    "clone": "linked (qcow2 overlay) or full copy of `from` (at creation)",
    "device": "disk or cdrom (at creation)",
    "deletePolicy": "whether the volume is deleted with the disk or the guest",
    "size": "see Volume",
    "format": "see Volume",
    "from": "see Volume",
}
NIC_CONTROL: dict[str, str] = {"mac": "the NIC's key: a new MAC is a new NIC (detach + attach, hot-plugged)"}
