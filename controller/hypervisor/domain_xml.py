"""Domain XML ⇄ model: read a definition's essence, and write spec fields into XML.

Writing edits the XML in place (virt-manager's virtinst habit): only the
elements of the fields being set are touched, so everything virtsync does not
model — devices added by hand, addresses libvirt assigned, a <seclabel> —
survives every update. A new guest is the same edit applied to a skeleton.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from controller.hypervisor import ownership
from controller.hypervisor.xmlutil import child, parse, remove, set_text, to_bytes, tostring
from controller.model.naming import volume_name
from controller.model.state import DiskState, GuestConfig, NicState, Owner
from controller.plan.disks import SEED_DISK, boot_files, effective_disks, seed_volume
from controller.spec.models import Disk, GuestSpec

_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "xen": "xvd"}
ALIAS_PREFIX = "ua-"  # libvirt keeps user aliases that start with "ua-"


def target_name(prefix: str, index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


# ---------------------------------------------------------------- reading


def read_guest(xml: str) -> tuple[str, str, GuestConfig, Owner | None]:
    """(name, uuid, essence, owner) of a domain XML document."""
    root = parse(xml)
    return read_guest_root(root)


def read_guest_root(root: etree._Element) -> tuple[str, str, GuestConfig, Owner | None]:
    name = root.findtext("name") or ""
    uuid = root.findtext("uuid") or ""
    vcpu = root.find("vcpu")
    max_vcpus = int(vcpu.text) if vcpu is not None and vcpu.text else 1
    vcpus = int(vcpu.get("current", max_vcpus)) if vcpu is not None else 1
    max_memory = to_bytes(root.find("memory")) or 0
    memory = to_bytes(root.find("currentMemory")) or max_memory
    os_el = root.find("os")
    type_el = os_el.find("type") if os_el is not None else None
    loader = os_el.find("loader") if os_el is not None else None
    firmware = "bios"
    if os_el is not None and (os_el.get("firmware") == "efi" or (
        loader is not None and loader.get("type") == "pflash")):
        firmware = "uefi"
    cpu = root.find("cpu")
    graphics = root.find("devices/graphics")
    agent = next((t for t in root.findall("devices/channel/target") if t.get("name") == AGENT_CHANNEL), None)
    config = GuestConfig(
        uuid=uuid,
        virt_type=root.get("type", ""),
        vcpus=vcpus,
        max_vcpus=max_vcpus,
        memory=memory,
        max_memory=max_memory,
        cpu_mode=cpu.get("mode") if cpu is not None else None,
        cpu_model=cpu.findtext("model") if cpu is not None else None,
        machine=type_el.get("machine") if type_el is not None else None,
        firmware=firmware,
        os_type=(type_el.text or "hvm") if type_el is not None else "hvm",
        boot_order=tuple(b.get("dev", "") for b in os_el.findall("boot")) if os_el is not None else (),
        kernel=os_el.findtext("kernel") if os_el is not None else None,
        initrd=os_el.findtext("initrd") if os_el is not None else None,
        cmdline=os_el.findtext("cmdline") if os_el is not None else None,
        disks=tuple(_read_disk(name, d) for d in root.findall("devices/disk")),
        interfaces=tuple(_read_nic(i) for i in root.findall("devices/interface")),
        graphics=(f"{graphics.get('type')}@{graphics.get('listen', '')}"
                  if graphics is not None else None),
        nvram=os_el.findtext("nvram") if os_el is not None else None,
        agent=agent is not None,
        agent_connected=agent is not None and agent.get("state") == "connected",
    )
    return name, uuid, config, ownership.find_owner(root)


def _read_disk(guest: str, el: etree._Element) -> DiskState:
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


def _read_nic(el: etree._Element) -> NicState:
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


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class WriteContext:
    """What the XML needs beyond the spec: host facts and resolved paths."""

    virt_type: str  # kvm | qemu | xen | test
    pool_paths: dict[str, str]  # pool name → directory on the host
    owner: Owner
    uuid: str | None = None


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
        _xen_os(root, spec.xen.mode if spec.xen is not None else "pv")
    edit_guest(root, name, spec, ctx, fields=None)
    return tostring(root)


# Xen guest types as libvirt's libxl driver names them: (os type, machine).
XEN_OS = {"pv": ("linux", "xenpv"), "hvm": ("hvm", "xenfv"), "pvh": ("xenpvh", "xenpvh")}
XEN_HVMLOADER = "/usr/lib/xen-4.17/boot/hvmloader"


def _xen_os(root: etree._Element, mode: str) -> None:
    os_type, machine = XEN_OS[mode]
    type_el = root.find("os/type")
    assert type_el is not None
    type_el.text = os_type
    type_el.set("arch", "x86_64")
    type_el.set("machine", machine)
    console = root.find("devices/console")
    if console is not None:
        console.clear()
        console.set("type", "pty")
        etree.SubElement(console, "target", type="xen" if mode != "hvm" else "serial", port="0")
    if mode == "hvm":
        os_el = root.find("os")
        assert os_el is not None
        loader = etree.Element("loader", type="rom")
        loader.text = XEN_HVMLOADER
        type_el.addnext(loader)
        features = root.find("features")
        if features is not None and features.find("pae") is None:
            etree.SubElement(features, "pae")


def update_guest_xml(xml: str, name: str, spec: GuestSpec, ctx: WriteContext,
                     fields: Iterable[str]) -> str:
    """The persistent definition with ``fields`` (spec names) set as the spec says."""
    root = parse(xml)
    edit_guest(root, name, spec, ctx, fields=set(fields))
    return tostring(root)


def edit_guest(root: etree._Element, name: str, spec: GuestSpec, ctx: WriteContext,
               fields: set[str] | None) -> None:
    """Write spec fields into a domain XML tree; ``fields=None`` writes all of them."""

    def want(f: str) -> bool:
        return fields is None or f in fields

    ownership.set_owner(root, ctx.owner)
    if want("memory") or want("maxMemory"):
        max_mem = spec.max_memory or spec.memory
        current_max = to_bytes(root.find("memory")) or 0
        if fields is not None and not want("maxMemory"):
            max_mem = max(current_max, spec.memory)  # grow the ceiling only as far as needed
        set_text(root, "memory", str(max_mem // 1024), unit="KiB")
        cur = root.find("memory").addnext  # type: ignore[union-attr]
        if root.find("currentMemory") is None:
            cur(etree.Element("currentMemory"))
        set_text(root, "currentMemory", str(min(spec.memory, max_mem) // 1024), unit="KiB")
    if want("vcpus") or want("maxVcpus"):
        vcpu = root.find("vcpu")
        if vcpu is None:
            vcpu = etree.Element("vcpu", placement="static")
            anchor = root.find("currentMemory")
            anchor = anchor if anchor is not None else root.find("memory")
            if anchor is not None:
                anchor.addnext(vcpu)
            else:
                root.append(vcpu)
        current_max = int(vcpu.text) if vcpu.text else 0
        max_vcpus = spec.max_vcpus or spec.vcpus
        if fields is not None and not want("maxVcpus"):
            max_vcpus = max(current_max, spec.vcpus)
        vcpu.text = str(max_vcpus)
        if spec.vcpus != max_vcpus:
            vcpu.set("current", str(spec.vcpus))
        elif "current" in vcpu.attrib:
            del vcpu.attrib["current"]
    os_el = child(root, "os")
    type_el = child(os_el, "type")
    if want("machine") and spec.machine:
        type_el.set("machine", spec.machine)
    if want("firmware"):
        _set_firmware(root, os_el, spec.firmware, ctx)
    if want("boot") and spec.boot is not None:
        _set_boot(os_el, name, spec, ctx)
    if want("cpu") and spec.cpu is not None:
        cpu = root.find("cpu")
        if spec.cpu.mode is None:
            remove(cpu)
        else:
            cpu = cpu if cpu is not None else _insert_after(root, "cpu", ("features", "os"))
            cpu.clear()
            cpu.set("mode", spec.cpu.mode)
            if spec.cpu.model:
                set_text(cpu, "model", spec.cpu.model)
    devices = child(root, "devices")
    if want("disks") or want("cloudInit"):
        _set_disks(devices, name, spec, ctx)
    if want("agent"):
        _set_agent(devices, spec.agent)
    if want("interfaces"):
        _set_interfaces(devices, spec)
    if want("graphics") and spec.graphics is not None:
        for g in devices.findall("graphics"):
            devices.remove(g)
        if spec.graphics.type != "none":
            etree.SubElement(devices, "graphics", type=spec.graphics.type, autoport="yes",
                             listen=spec.graphics.listen)


def _insert_after(root: etree._Element, tag: str, after: tuple[str, ...]) -> etree._Element:
    el = etree.Element(tag)
    for a in after:
        anchor = root.find(a)
        if anchor is not None:
            anchor.addnext(el)
            return el
    root.append(el)
    return el


def _set_firmware(root: etree._Element, os_el: etree._Element, firmware: str,
                  ctx: WriteContext) -> None:
    if ctx.virt_type in ("test", "xen"):
        return  # the test driver has no firmware; Xen guests: PV/PVH boot a kernel, HVM hvmloader
    if firmware == "uefi":
        os_el.set("firmware", "efi")  # libvirt picks OVMF and makes the NVRAM file
    elif os_el.get("firmware") == "efi" or os_el.find("loader") is not None:
        if "firmware" in os_el.attrib:
            del os_el.attrib["firmware"]
        remove(os_el.find("loader"))
        remove(os_el.find("nvram"))


def _set_boot(os_el: etree._Element, name: str, spec: GuestSpec, ctx: WriteContext) -> None:
    boot = spec.boot
    assert boot is not None
    kernel, initrd = boot_files(name, spec, ctx.pool_paths)
    for tag, value in (("kernel", kernel), ("initrd", initrd), ("cmdline", boot.cmdline)):
        if value:
            set_text(os_el, tag, value)
        else:
            remove(os_el.find(tag))
    if boot.order:
        for b in os_el.findall("boot"):
            os_el.remove(b)
        for dev in boot.order:
            etree.SubElement(os_el, "boot", dev=dev)


def disk_path(name: str, disk: Disk, ctx: WriteContext) -> str:
    if disk.path:
        return disk.path
    pool_dir = ctx.pool_paths.get(disk.pool or "", "")
    vol = seed_volume(name) if disk.name == SEED_DISK else volume_name(name, disk.name, disk.format)
    return f"{pool_dir.rstrip('/')}/{vol}"


AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _set_agent(devices: etree._Element, on: bool) -> None:
    present = [c for c in devices.findall("channel")
               if c.find("target") is not None and c.find("target").get("name") == AGENT_CHANNEL]  # type: ignore[union-attr]
    if on and not present:
        ch = etree.Element("channel", type="unix")
        etree.SubElement(ch, "source", mode="bind")
        etree.SubElement(ch, "target", type="virtio", name=AGENT_CHANNEL)
        _append_device(devices, ch)
    if not on:
        for c in present:
            devices.remove(c)


def disk_element(name: str, disk: Disk, ctx: WriteContext, target: str) -> etree._Element:
    el = etree.Element("disk", type="file", device=disk.device)
    if ctx.virt_type != "test":
        etree.SubElement(el, "driver", name="qemu", type=disk.format)  # libxl takes qemu too
    etree.SubElement(el, "source", file=disk_path(name, disk, ctx))
    bus = "xen" if ctx.virt_type == "xen" and disk.bus == "virtio" else disk.bus
    etree.SubElement(el, "target", dev=target, bus=bus)
    if disk.device == "cdrom":
        etree.SubElement(el, "readonly")
    if ctx.virt_type != "xen":
        etree.SubElement(el, "alias", name=ALIAS_PREFIX + disk.name)
    return el


def _disk_key(guest: str, el: etree._Element) -> str:
    return _read_disk(guest, el).name


def _set_disks(devices: etree._Element, name: str, spec: GuestSpec, ctx: WriteContext) -> None:
    disks = effective_disks(spec)
    existing = {_disk_key(name, d): d for d in devices.findall("disk")}
    wanted = {d.name for d in disks}
    for key, old in existing.items():
        if key not in wanted:
            devices.remove(old)
    used = {t.get("dev") for t in devices.findall("disk/target")}
    for disk in disks:
        el = existing.get(disk.name)
        bus = "xen" if ctx.virt_type == "xen" and disk.bus == "virtio" else disk.bus
        if el is not None:
            target = el.find("target")
            if target is not None and target.get("bus") != bus:
                used.discard(target.get("dev"))
                target.set("dev", _free_target(bus, used))
                target.set("bus", bus)
                used.add(target.get("dev"))
                addr = el.find("address")
                remove(addr)  # the old bus's address does not fit the new one
            continue
        dev = _free_target(bus, used)
        used.add(dev)
        _append_device(devices, disk_element(name, disk, ctx, dev))


def _free_target(bus: str, used: set[str | None]) -> str:
    prefix = _TARGET_PREFIX.get(bus, "vd")
    i = 0
    while target_name(prefix, i) in used:
        i += 1
    return target_name(prefix, i)


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


def _nic_model(spec: GuestSpec, want_model: str, declared: bool) -> str:
    """libxl has no virtio NICs: Xen guests get netfront (PV/PVH) or e1000 (HVM) unless told."""
    if spec.xen is None or declared:
        return want_model
    return "e1000" if spec.xen.mode == "hvm" else "netfront"


def _set_interfaces(devices: etree._Element, spec: GuestSpec) -> None:
    from controller.plan.keys import match_nics

    current = devices.findall("interface")
    observed = [_read_nic(e) for e in current]
    pairs, extra_obs = match_nics(spec.interfaces, observed)
    for i in extra_obs:
        devices.remove(current[i])
    for want, obs_index in pairs:
        if obs_index is None:
            model = _nic_model(spec, want.model, "model" in want.model_fields_set)
            _append_device(devices, nic_element(want.network, want.mac, model, want.boot_rom))
            continue
        el = current[obs_index]
        if want.mac:
            child(el, "mac", address=want.mac)
        src = child(el, "source")
        if el.get("type") != "network" or src.get("network") != want.network:
            el.set("type", "network")
            src.attrib.clear()
            src.set("network", want.network)
        child(el, "model", type=_nic_model(spec, want.model, "model" in want.model_fields_set))
        if "boot_rom" in want.model_fields_set:
            _set_rom(el, want.boot_rom)


def _append_device(devices: etree._Element, el: etree._Element) -> None:
    """Keep devices grouped: a new disk after the last disk, a NIC after the last NIC."""
    same = devices.findall(el.tag)
    if same:
        same[-1].addnext(el)
    else:
        devices.append(el)


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


def disk_xml_by_target(xml: str, target: str) -> str | None:
    for el in parse(xml).findall("devices/disk"):
        t = el.find("target")
        if t is not None and t.get("dev") == target:
            return etree.tostring(el, encoding="unicode")
    return None


def disk_xml_by_name(xml: str, guest: str, disk_name: str) -> str | None:
    """The <disk> a spec names (by its ua- alias, or the volume naming), for a hot-plug."""
    for el in parse(xml).findall("devices/disk"):
        if _read_disk(guest, el).name == disk_name:
            return etree.tostring(el, encoding="unicode")
    return None
