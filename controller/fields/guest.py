"""The fields of kind: Guest, each declared once.

Order matters for writing: a ceiling (maxMemory, maxVcpus) is written before the value it
bounds. ``GUEST_FIELDS`` is what the planner diffs, the XML editor writes, export
reads back and docs/fields.md lists.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from controller.fields.applied import applied_fields
from controller.fields.base import Facts, Field, GuestView
from controller.fields.devices import write_disks, write_interfaces
from controller.fields.disks import boot_files
from controller.fields.guest_devices import DEVICE_FIELDS
from controller.fields.guest_tuning import TUNING_FIELDS
from controller.fields.patches import write_patches
from controller.fields.xmlutil import child, insert_after, remove, set_text, to_bytes
from controller.model.operations import Impact, LiveOp, SetAutostart, SetMemory, SetVcpus, UpdateGraphics
from controller.model.state import GuestConfig
from controller.spec.models import GuestSpec
from controller.spec.secrets import secret_digest
from controller.spec.units import format_size

AGENT_CHANNEL = "org.qemu.guest_agent.0"
# Xen guest types as libvirt's libxl driver names them: (os type, machine).
XEN_OS = {"pv": ("linux", "xenpv"), "hvm": ("hvm", "xenfv"), "pvh": ("xenpvh", "xenpvh")}
XEN_HVMLOADER = "/usr/lib/xen-4.17/boot/hvmloader"


def machine_matches(desired: str | None, observed: str | None) -> bool:
    """libvirt expands aliases: q35 → pc-q35-7.2, pc → pc-i440fx-7.2."""
    if desired is None or observed is None or observed == desired:
        return observed == desired
    base = {"pc": "i440fx"}.get(desired, desired)
    return observed.startswith(f"pc-{base}-")


def xen_mode(os_type: str) -> str:
    if os_type in ("linux", "xen"):
        return "pv"
    return "pvh" if os_type == "xenpvh" else "hvm"


def _os(root: etree._Element) -> etree._Element:
    return child(root, "os")


# ----------------------------------------------------------- memory and vCPUs


def _read_memory(root: etree._Element) -> dict[str, Any]:
    ceiling = to_bytes(root.find("memory")) or 0
    return {"memory": to_bytes(root.find("currentMemory")) or ceiling}


def _read_max_memory(root: etree._Element) -> dict[str, Any]:
    return {"max_memory": to_bytes(root.find("memory")) or 0}


def _write_max_memory(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    ceiling = spec.max_memory or spec.memory
    set_text(root, "memory", str(ceiling // 1024), unit="KiB")
    current = to_bytes(root.find("currentMemory"))
    if current is not None and current > ceiling:
        set_text(root, "currentMemory", str(ceiling // 1024), unit="KiB")


def _write_memory(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    ceiling = to_bytes(root.find("memory")) or 0
    if ceiling < spec.memory:  # the ceiling grows only as far as needed
        set_text(root, "memory", str(spec.memory // 1024), unit="KiB")
    if root.find("currentMemory") is None:
        root.find("memory").addnext(etree.Element("currentMemory"))  # type: ignore[union-attr]
    set_text(root, "currentMemory", str(spec.memory // 1024), unit="KiB")


def _memory_ceiling(v: GuestView) -> int:
    ceiling = v.persistent.max_memory
    if "max_memory" in v.spec.model_fields_set and v.spec.max_memory is not None:
        ceiling = v.spec.max_memory
    if v.live is not None:  # a running guest balloons only up to its running maximum
        ceiling = min(ceiling, v.live.max_memory)
    return int(ceiling)


def _memory_impact(v: GuestView) -> Impact:
    return Impact.LIVE if v.spec.memory <= _memory_ceiling(v) else Impact.NEXT_BOOT


def _vcpu_el(root: etree._Element) -> etree._Element:
    vcpu = root.find("vcpu")
    if vcpu is None:
        vcpu = etree.Element("vcpu", placement="static")
        anchor = root.find("currentMemory")
        anchor = anchor if anchor is not None else root.find("memory")
        if anchor is not None:
            anchor.addnext(vcpu)
        else:
            root.append(vcpu)
    return vcpu


def _read_vcpus(root: etree._Element) -> dict[str, Any]:
    vcpu = root.find("vcpu")
    ceiling = int(vcpu.text) if vcpu is not None and vcpu.text else 1
    return {"vcpus": int(vcpu.get("current", ceiling)) if vcpu is not None else 1}


def _read_max_vcpus(root: etree._Element) -> dict[str, Any]:
    vcpu = root.find("vcpu")
    return {"max_vcpus": int(vcpu.text) if vcpu is not None and vcpu.text else 1}


def _set_vcpus(vcpu: etree._Element, current: int, ceiling: int) -> None:
    vcpu.text = str(ceiling)
    if current != ceiling:
        vcpu.set("current", str(current))
    elif "current" in vcpu.attrib:
        del vcpu.attrib["current"]


def _write_max_vcpus(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    vcpu = _vcpu_el(root)
    ceiling = spec.max_vcpus or spec.vcpus
    current = int(vcpu.get("current", vcpu.text or ceiling))
    _set_vcpus(vcpu, min(current, ceiling), ceiling)


def _write_vcpus(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    vcpu = _vcpu_el(root)
    ceiling = max(int(vcpu.text) if vcpu.text else 0, spec.vcpus)
    _set_vcpus(vcpu, spec.vcpus, ceiling)


def _vcpu_ceiling(v: GuestView) -> int:
    ceiling = v.persistent.max_vcpus
    if "max_vcpus" in v.spec.model_fields_set and v.spec.max_vcpus is not None:
        ceiling = v.spec.max_vcpus
    if v.live is not None:  # hot-plug reaches only the running maximum; a new one needs a boot
        ceiling = min(ceiling, v.live.max_vcpus)
    return int(ceiling)


def _vcpus_impact(v: GuestView) -> Impact:
    fewer_live = v.live is not None and v.spec.vcpus < v.live.vcpus
    return Impact.LIVE if v.spec.vcpus <= _vcpu_ceiling(v) and not fewer_live else Impact.NEXT_BOOT


def _vcpus_running_differs(v: GuestView) -> tuple[LiveOp | None, str]:
    """The definition matches, the running guest has another count: hot-plug up to its
    maximum; an unplug is refused by most guests and machine types, so it waits for a boot."""
    assert v.live is not None
    if v.live.vcpus < v.spec.vcpus <= v.live.max_vcpus:
        return SetVcpus(v.spec.vcpus), ""
    return None, ("vCPUs are only hot-plugged, never unplugged" if v.spec.vcpus < v.live.vcpus
                  else "above the running maximum")


# ----------------------------------------------------------- CPU, machine, firmware, Xen


def _read_cpu(root: etree._Element) -> dict[str, Any]:
    cpu = root.find("cpu")
    return {"cpu_mode": cpu.get("mode") if cpu is not None else None,
            "cpu_model": cpu.findtext("model") if cpu is not None else None}


# <cpu> children other fields own (fields/guest_tuning.py): kept when the mode changes
_CPU_KEPT = ("topology", "numa")


def _write_cpu(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    assert spec.cpu is not None
    cpu = root.find("cpu")
    kept = [el for tag in _CPU_KEPT for el in (cpu.findall(tag) if cpu is not None else [])]
    if spec.cpu.mode is None and not kept:
        remove(cpu)
        return
    cpu = cpu if cpu is not None else insert_after(root, "cpu", ("features", "os"))
    cpu.clear()
    if spec.cpu.mode is not None:
        cpu.set("mode", spec.cpu.mode)
    if spec.cpu.model:
        set_text(cpu, "model", spec.cpu.model)
    for el in kept:
        cpu.append(el)


def _cpu_declared(spec: GuestSpec) -> bool:
    """The mode is compared when the spec gives it, or gives cpu without topology or pinning (cpu: {}
    is the default CPU); cpu: {topology: …} alone leaves the mode as it is."""
    if spec.cpu is None or "cpu" not in spec.model_fields_set:
        return False
    given = spec.cpu.model_fields_set
    return bool(given & {"mode", "model"}) or not (given & {"topology", "pinning"})


def _cpu_str(value: tuple[str | None, str | None]) -> str:
    mode, model = value
    return f"{mode or 'default'}{'/' + model if model else ''}"


def _read_machine(root: etree._Element) -> dict[str, Any]:
    type_el = root.find("os/type")
    return {"machine": type_el.get("machine") if type_el is not None else None,
            "os_type": (type_el.text or "hvm") if type_el is not None else "hvm"}


def _machine_family(machine: str | None) -> str:
    return "q35" if machine and "q35" in machine else "i440fx"


def _write_machine(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    if not spec.machine:
        return
    type_el = child(_os(root), "type")
    old = type_el.get("machine")
    type_el.set("machine", spec.machine)
    if old and _machine_family(old) != _machine_family(spec.machine):
        # i440fx ⇄ q35: PCI vs PCIe roots, IDE vs SATA. The old machine's controllers and device
        # addresses do not fit the new one; libvirt lays them out again (the devices stay).
        devices = root.find("devices")
        if devices is not None:
            for ctl in devices.findall("controller"):
                if ctl.get("type") in ("pci", "ide", "sata", "usb"):
                    devices.remove(ctl)
            for address in list(devices.iter("address")):
                parent = address.getparent()
                if parent is not None and parent.tag != "source":  # a passed-through device's own address stays
                    remove(address)


def _read_firmware(root: etree._Element) -> dict[str, Any]:
    os_el = root.find("os")
    loader = os_el.find("loader") if os_el is not None else None
    uefi = os_el is not None and (os_el.get("firmware") == "efi" or (
        loader is not None and loader.get("type") == "pflash"))
    return {"firmware": "uefi" if uefi else "bios",
            "nvram": os_el.findtext("nvram") if os_el is not None else None}


def _write_firmware(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    os_el = _os(root)
    if spec.firmware == "uefi":
        os_el.set("firmware", "efi")  # libvirt picks OVMF and makes the NVRAM file
    elif os_el.get("firmware") == "efi" or os_el.find("loader") is not None:
        if "firmware" in os_el.attrib:
            del os_el.attrib["firmware"]
        remove(os_el.find("loader"))
        remove(os_el.find("nvram"))
        remove(os_el.find("firmware"))  # firmware features belong to UEFI


def write_xen_os(root: etree._Element, mode: str) -> None:
    """The OS block of a Xen guest type (written into a new definition, or a recreate's)."""
    os_type, machine = XEN_OS[mode]
    os_el = _os(root)
    type_el = child(os_el, "type")
    type_el.text = os_type
    type_el.set("arch", "x86_64")
    type_el.set("machine", machine)
    loader = os_el.find("loader")
    if mode == "hvm":
        if loader is None:
            loader = etree.Element("loader")
            type_el.addnext(loader)
        loader.set("type", "rom")
        loader.text = XEN_HVMLOADER
        features = root.find("features")
        if features is not None and features.find("pae") is None:
            etree.SubElement(features, "pae")
    else:
        remove(loader)
    console = root.find("devices/console")
    if console is not None:
        target = console.find("target")
        if target is None:
            target = etree.SubElement(console, "target")
        target.set("type", "xen" if mode != "hvm" else "serial")
        target.set("port", "0")


def _write_xen(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    assert spec.xen is not None
    write_xen_os(root, spec.xen.mode)


# ----------------------------------------------------------- boot, graphics, agent


def _read_boot(root: etree._Element) -> dict[str, Any]:
    os_el = root.find("os")
    if os_el is None:
        return {"boot_order": (), "kernel": None, "initrd": None, "cmdline": None}
    # One pass over <os>'s few children instead of a path lookup per element (every guest has them).
    order: list[str] = []
    texts: dict[str, str] = {}
    for el in os_el.iterchildren("boot", "kernel", "initrd", "cmdline"):
        if el.tag == "boot":
            order.append(el.get("dev", ""))
        elif el.tag not in texts:  # the first one, as findtext reads
            texts[el.tag] = el.text or ""
    return {"boot_order": tuple(order), "kernel": texts.get("kernel"), "initrd": texts.get("initrd"),
            "cmdline": texts.get("cmdline")}


def _write_boot(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    boot = spec.boot
    assert boot is not None
    os_el = _os(root)
    kernel, initrd = boot_files(facts.name, spec, dict(facts.pool_paths))
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


def _want_boot(spec: GuestSpec, facts: Facts) -> tuple[Any, ...]:
    assert spec.boot is not None
    kernel, initrd = boot_files(facts.name, spec, dict(facts.pool_paths))
    return (tuple(spec.boot.order) or None, kernel, initrd, spec.boot.cmdline)


def _same_boot(want: tuple[Any, ...] | None, have: tuple[Any, ...] | None) -> bool:
    if want is None or have is None:
        return want == have
    # an undeclared boot order is libvirt's business
    return (want[0] is None or want[0] == have[0]) and want[1:] == have[1:]


def _boot_str(value: tuple[Any, ...] | None) -> str | None:
    if value is None:
        return None
    order, kernel, initrd, cmdline = value
    parts = []
    if order:
        parts.append("order=" + ",".join(order))
    for label, v in (("kernel", kernel), ("initrd", initrd), ("cmdline", cmdline)):
        if v:
            parts.append(f"{label}={v}")
    return " ".join(parts) or "default"


def _export_boot(value: tuple[Any, ...]) -> dict[str, Any] | None:
    order, kernel, initrd, cmdline = value
    out = {k: v for k, v in (("kernel", kernel), ("initrd", initrd), ("cmdline", cmdline)) if v}
    if order and order != ("hd",):
        out["order"] = list(order)
    return out or None


def _read_graphics(root: etree._Element) -> dict[str, Any]:
    g = root.find("devices/graphics")
    # the password only shows in XML read with VIR_DOMAIN_XML_SECURE; only its digest is kept
    return {"graphics": f"{g.get('type')}@{g.get('listen', '')}" if g is not None else None,
            "graphics_password": secret_digest(g.get("passwd")) if g is not None else None}


def _write_graphics(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    """Edit the first console in place (its ports, GL, keymap … stay); further ones go."""
    assert spec.graphics is not None
    devices = child(root, "devices")
    existing = devices.findall("graphics")
    for extra in existing[1:]:
        devices.remove(extra)
    g = existing[0] if existing else None
    if spec.graphics.type == "none":
        remove(g)
        return
    if g is None or g.get("type") != spec.graphics.type:
        remove(g)  # VNC and SPICE share few attributes: a new element
        g = etree.SubElement(devices, "graphics", type=spec.graphics.type, autoport="yes")
    g.set("listen", spec.graphics.listen)
    for listen in g.findall("listen"):
        if listen.get("type") == "address":  # libvirt's form of the listen attribute: must agree
            listen.set("address", spec.graphics.listen)
    if spec.graphics.password is not None:
        g.set("passwd", spec.graphics.password)


def _want_graphics(spec: GuestSpec, _facts: Facts) -> tuple[str | None, str | None]:
    g = spec.graphics
    if g is None or g.type == "none":
        return None, None
    return f"{g.type}@{g.listen}", secret_digest(g.password)


# A console without a listen address (virt-install's, terraform's <listen type='address'/>) listens
# where the host's qemu.conf says: vnc_listen and spice_listen default to 127.0.0.1, the spec's
# default too, so such a definition agrees with a spec that leaves listen out.
HOST_DEFAULT_LISTEN = "127.0.0.1"


def _same_console(want: str | None, have: str | None) -> bool:
    if want is None or have is None:
        return want == have
    gtype, _, listen = have.partition("@")
    return want == have or (not listen and want == f"{gtype}@{HOST_DEFAULT_LISTEN}")


def _same_graphics(want: tuple[str | None, str | None], have: tuple[str | None, str | None]) -> bool:
    # without passwordSecretRef the password is left as it is (set by hand, say)
    return _same_console(want[0], have[0]) and (want[1] is None or want[1] == have[1])


def _show_graphics(value: tuple[str | None, str | None]) -> str | None:
    console, password = value
    return f"{console} password {password}" if console and password else console


def _graphics_impact(v: GuestView) -> Impact:
    """A new password reaches the running console (updateDeviceFlags); anything else a boot."""
    want = _want_graphics(v.spec, v.facts)
    device_updates = v.live is None or v.caps.hotplug  # the test driver updates no running device
    return Impact.LIVE if _same_console(want[0], v.persistent.graphics) and device_updates else Impact.NEXT_BOOT


def _graphics_running_differs(v: GuestView) -> tuple[LiveOp | None, str]:
    assert v.live is not None
    if _same_console(_want_graphics(v.spec, v.facts)[0], v.live.graphics) and v.caps.hotplug:
        return UpdateGraphics(), ""
    return None, "the running console differs from its definition"


def _export_graphics(value: tuple[str | None, str | None]) -> dict[str, Any] | None:
    console = value[0]  # a password is never exported: the spec names a Secret for it
    if not console:
        return None
    gtype, _, listen = console.partition("@")
    if gtype not in ("vnc", "spice"):
        return None
    return {"type": gtype, **({"listen": listen} if listen else {})}


def _agent_channels(root: etree._Element) -> list[etree._Element]:
    return [c for c in root.findall("devices/channel")
            if c.find("target") is not None and c.find("target").get("name") == AGENT_CHANNEL]  # type: ignore[union-attr]


def _read_agent(root: etree._Element) -> dict[str, Any]:
    present = _agent_channels(root)
    connected = bool(present) and present[0].find("target").get("state") == "connected"  # type: ignore[union-attr]
    return {"agent": bool(present), "agent_connected": connected}


def _write_agent(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    from controller.fields.devices import append_device

    present = _agent_channels(root)
    devices = child(root, "devices")
    if spec.agent and not present:
        ch = etree.Element("channel", type="unix")
        etree.SubElement(ch, "source", mode="bind")
        etree.SubElement(ch, "target", type="virtio", name=AGENT_CHANNEL)
        append_device(devices, ch)
    if not spec.agent:
        for c in present:
            devices.remove(c)


def _cloud_init_digest(spec: GuestSpec, _facts: Facts) -> Any:
    return applied_fields(spec).get("cloudInit")


def _had_cloud_init(_config: GuestConfig, obs: Any) -> Any:
    return obs.owner.applied.get("cloudInit") if obs is not None and obs.owner is not None else None


def _read_on_crash(root: etree._Element) -> dict[str, Any]:
    return {"on_crash": root.findtext("on_crash")}


def _write_on_crash(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    if spec.on_crash is not None:
        set_text(root, "on_crash", spec.on_crash)


def _size(value: int) -> str:
    return format_size(value)


GUEST_FIELDS: tuple[Field[GuestSpec], ...] = (
    Field("maxMemory", "memory ceiling in the definition", Impact.NEXT_BOOT, xpaths=("/domain/memory",),
          read=_read_max_memory, write=_write_max_memory,
          want=lambda s, _f: s.max_memory or s.memory, have=lambda c, _o: c.max_memory, show=_size,
          export=_size, samples=("256MiB", "384MiB")),
    Field("memory", "balloon (setMemoryFlags) up to maxMemory; beyond it the ceiling grows at next boot",
          Impact.LIVE, xpaths=("/domain/currentMemory",), read=_read_memory, write=_write_memory,
          want=lambda s, _f: s.memory, have=lambda c, _o: c.memory, show=_size,
          impact_of=_memory_impact, calls=(SetMemory.call,),
          boot_why="above the running guest's memory ceiling: the new ceiling needs a boot",
          live=lambda v: SetMemory(v.spec.memory) if _memory_impact(v) == Impact.LIVE else None,
          compare_live=False,  # a guest without a balloon driver keeps its maximum: information only
          export=_size, samples=("128MiB", "192MiB")),
    Field("maxVcpus", "vCPU ceiling in the definition", Impact.NEXT_BOOT, xpaths=("/domain/vcpu",),
          read=_read_max_vcpus, write=_write_max_vcpus,
          want=lambda s, _f: s.max_vcpus or s.vcpus, have=lambda c, _o: c.max_vcpus,
          export=lambda v: v, samples=(2, 4)),
    Field("vcpus", "vCPU hot-plug (setVcpusFlags) up to maxVcpus; beyond it, or fewer, next boot",
          Impact.LIVE, xpaths=("/domain/vcpu",), read=_read_vcpus, write=_write_vcpus,
          want=lambda s, _f: s.vcpus, have=lambda c, _o: c.vcpus, impact_of=_vcpus_impact, calls=(SetVcpus.call,),
          boot_why="above the running maximum, or fewer (vCPUs are hot-plugged, never unplugged)",
          live=lambda v: SetVcpus(v.spec.vcpus) if _vcpus_impact(v) == Impact.LIVE else None,
          running_differs=_vcpus_running_differs, export=lambda v: v, samples=(1, 2)),
    Field("machine", "machine type changes device addressing", Impact.RECREATE, xpaths=("/domain/os/type/@machine",),
          read=_read_machine, write=_write_machine,
          want=lambda s, _f: s.machine, have=lambda c, _o: c.machine, same=machine_matches,
          virt_types=frozenset({"kvm", "qemu", "test"}),  # Xen's machine follows its guest type
          when=lambda s, _f: bool(s.machine), export=lambda v: v or None,
          samples=("pc", "q35")),
    Field("firmware", "BIOS ⇄ UEFI; the NVRAM is kept", Impact.RECREATE,
          xpaths=("/domain/os/@firmware", "/domain/os/loader", "/domain/os/nvram"),
          read=_read_firmware, write=_write_firmware,
          want=lambda s, _f: s.firmware, have=lambda c, _o: c.firmware,
          # the test driver has no firmware; Xen guests: PV/PVH boot a kernel, HVM hvmloader
          virt_types=frozenset({"kvm", "qemu"}), export=lambda v: v, samples=("bios", "uefi")),
    Field("xen", "Xen guest type (pv/hvm/pvh)", Impact.RECREATE, xpaths=("/domain/os/type",), write=_write_xen,
          want=lambda s, _f: s.xen.mode if s.xen else None, have=lambda c, _o: xen_mode(c.os_type),
          virt_types=frozenset({"xen", "test"}), when=lambda s, _f: s.xen is not None,
          samples=({"mode": "pv"}, {"mode": "pvh"})),
    Field("boot", "boot order, kernel, initrd, command line", Impact.NEXT_BOOT,
          xpaths=("/domain/os/boot", "/domain/os/kernel", "/domain/os/initrd", "/domain/os/cmdline"),
          needs=("boot", "kernel", "initrd", "cmdline"), read=_read_boot, write=_write_boot, want=_want_boot,
          have=lambda c, _o: (c.boot_order or None, c.kernel, c.initrd, c.cmdline),
          same=_same_boot, show=_boot_str, when=lambda s, _f: s.boot is not None,
          export=_export_boot,
          samples=({"order": ["hd"]}, {"order": ["cdrom", "hd"]})),
    Field("cpu", "CPU mode and model", Impact.NEXT_BOOT, xpaths=("/domain/cpu",),
          needs=("cpu",), read=_read_cpu, write=_write_cpu,
          want=lambda s, _f: (s.cpu.mode, s.cpu.model) if s.cpu else (None, None),
          have=lambda c, _o: (c.cpu_mode, c.cpu_model),
          same=lambda w, h: w[0] == h[0] and (w[1] is None or w[1] == h[1]),
          show=_cpu_str, compare_live=False, shows_live=False,  # the running XML expands host-model into a full CPU
          when=lambda s, _f: s.cpu is not None, is_declared=_cpu_declared,
          export=lambda v: ({"mode": v[0], **({"model": v[1]} if v[1] else {})} if v[0] else None),
          samples=({"mode": "host-model"}, {"mode": "custom", "model": "Nehalem"})),
    Field("cloudInit", "the NoCloud seed ISO is rebuilt; read by the guest at next boot", Impact.NEXT_BOOT,
          want=_cloud_init_digest, have=_had_cloud_init,
          same=lambda w, h: h is None or w == h,  # no recorded seed yet: the disks attach it
          compare_live=False, shows_live=False, note="seed ISO rebuilt"),
    Field("disks", "a keyed set by name: attach (hot-plug) after the volume is made, detach (the "
          "volume is kept unless deletePolicy: delete); a disk's bus at next boot, its size live "
          "(grown, never shrunk)", Impact.LIVE, write=write_disks, planned_by="keyed list",
          calls=("attachDeviceFlags", "detachDeviceFlags", "blockResize"),
          xpaths=("/domain/devices/disk",)),
    Field("agent", "qemu-guest-agent channel", Impact.NEXT_BOOT,
          needs=("channel",), read=_read_agent, write=_write_agent,
          xpaths=("/domain/devices/channel",),
          want=lambda s, _f: s.agent, have=lambda c, _o: c.agent, export=lambda on: True if on else None,
          samples=(False, True)),
    Field("interfaces", "a keyed set by MAC (else network and position): attach and detach "
          "hot-plugged; a new MAC is a new NIC; model, network and bootRom at next boot",
          Impact.LIVE, xpaths=("/domain/devices/interface",), write=write_interfaces, planned_by="keyed list",
          calls=("attachDeviceFlags", "detachDeviceFlags")),
    Field("graphics", "graphics console at next boot; a new password (passwordSecretRef) live through "
          "updateDeviceFlags", Impact.NEXT_BOOT, needs=("graphics",), read=_read_graphics, write=_write_graphics,
          xpaths=("/domain/devices/graphics",),
          want=_want_graphics, have=lambda c, _o: (c.graphics, c.graphics_password), same=_same_graphics,
          show=_show_graphics, impact_of=_graphics_impact, calls=(UpdateGraphics.call,),
          live=lambda v: UpdateGraphics() if _graphics_impact(v) == Impact.LIVE else None,
          running_differs=_graphics_running_differs,
          when=lambda s, _f: s.graphics is not None, export=_export_graphics,
          samples=({"type": "vnc"}, {"type": "spice"})),
    Field("onCrash", "crash action in the definition", Impact.NEXT_BOOT, needs=("on_crash",), read=_read_on_crash,
          xpaths=("/domain/on_crash",),
          write=_write_on_crash, want=lambda s, _f: s.on_crash, have=lambda c, _o: c.on_crash,
          export=lambda v: v if v and v != "destroy" else None, samples=("destroy", "restart")),
    *DEVICE_FIELDS,
    *TUNING_FIELDS,
    Field("autostart", "setAutostart", Impact.LIVE,
          want=lambda s, _f: s.autostart, have=lambda _c, o: o.autostart, export=lambda v: v,
          call=lambda s: SetAutostart(s.autostart), calls=(SetAutostart.call,), compare_live=False, shows_live=False,
          samples=(False, True)),
    Field("xmlPatches", "re-applied after the declared fields on every write of the definition (update, "
          "recreate); an unsatisfied patch is drift", Impact.NEXT_BOOT, write=write_patches,
          when=lambda s, _f: bool(s.xml_patches), planned_by="xmlPatches"),
    Field("state", "start, shutdown (destroy after shutdownTimeout), suspend, resume; always "
          "enforced", Impact.LIVE, planned_by="power state",
          calls=("create", "shutdown", "destroy", "suspend", "resume")),
)

# cloudInit is written by the disks writer (its seed CD-ROM is one of the guest's disks).
WRITTEN_WITH = {"cloudInit": "disks"}
BY_NAME = {f.name: f for f in GUEST_FIELDS}

# Fields that steer virtsync itself: nothing of them is written on the host.
CONTROL: dict[str, str] = {
    "host": "the host the guest is on; a change moves it (live migration, else a cold move)",
    "hostSelector": "instead of host: `virtsync place` chooses one and records it in placement.lock.yaml",
    "restartPolicy": "whether next-boot and recreate changes may restart the guest",
    "window": "when restartPolicy window allows restarts",
    "shutdownTimeout": "grace time of a shutdown before the guest is destroyed",
    "crashPolicy": "restart: a crashed guest (libvirt's state reason) is destroyed and started; report: shown only",
    "reconcile": "report: only show drift",
    "ignore": "JSON Pointers left alone",
    "adopt": "take over an existing guest of this name (ownership is written with its first change)",
}
