"""A guest's devices beyond disks and NICs, and its firmware and Windows settings: one registry
entry each (appended to GUEST_FIELDS in fields/guest.py).

Every essence value has the YAML shape of its spec field (defaults filled in), so the same
value serves the diff, ``export`` and the plan's display. Writers edit the existing element:
attributes and children virtsync does not model (addresses, aliases) stay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lxml import etree

from controller.fields.base import Facts, Field
from controller.fields.devices import append_device
from controller.fields.xmlutil import child, remove
from controller.model.operations import Impact
from controller.model.state import HostCapabilities
from controller.spec.devices import Hostdev
from controller.spec.models import GuestSpec
from controller.spec.secrets import libvirt_secret_uuid

_KVM_LIKE = frozenset({"kvm", "qemu", "test"})
Refusal = Callable[[GuestSpec, HostCapabilities, str], "str | None"]


def _add_device(root: etree._Element, el: etree._Element) -> etree._Element:
    append_device(child(root, "devices"), el)
    return el


def _singleton(root: etree._Element, tag: str, wanted: object, **attrs: str) -> etree._Element | None:
    """The guest's one ``tag`` device: removed when the spec says none (None is returned), else
    the existing element (edited in place by the caller) or a new one."""
    el = root.find(f"devices/{tag}")
    if wanted is None:
        remove(el)
        return None
    return el if el is not None else _add_device(root, etree.Element(tag, attrs))


def _dump(model: Any) -> dict[str, Any] | None:
    return None if model is None else model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _show(value: Any) -> Any:
    if isinstance(value, dict):
        return " ".join(f"{k}={_word(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_word(v) for v in value) + "]"
    return value


def _word(value: Any) -> str:
    """A value inside shown text, spelled as in YAML (true, not Python's True)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(_show(value))


def _unsupported(what: str, host: str, caps: HostCapabilities) -> str:
    return f"host {host} ({caps.driver}) cannot provide {what}"


# ----------------------------------------------------------------- TPM


def _read_tpm(root: etree._Element) -> dict[str, Any]:
    tpm = root.find("devices/tpm")
    if tpm is None:
        return {"tpm": None}
    backend = tpm.find("backend")
    value = {"model": tpm.get("model", "tpm-tis"),
             "version": (backend.get("version") if backend is not None else None) or "2.0"}
    enc = backend.find("encryption") if backend is not None else None
    if enc is not None and enc.get("secret"):
        value["encryption"] = enc.get("secret", "")
    return {"tpm": value}


def _want_tpm(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    if spec.tpm is None:
        return None
    value: dict[str, Any] = {"model": spec.tpm.model, "version": spec.tpm.version}
    if spec.tpm.encryption_secret_ref:
        value["encryption"] = libvirt_secret_uuid(spec.tpm.encryption_secret_ref)
    return value


def _same_tpm(want: dict[str, Any] | None, have: dict[str, Any] | None) -> bool:
    if want is None or have is None or "encryption" in want:
        return want == have
    return {k: v for k, v in have.items() if k != "encryption"} == want  # no ref: its encryption is left


def _export_tpm(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # an encryption secret is named in the spec, not by its UUID: left out (and so left as it is)
    return {k: v for k, v in value.items() if k != "encryption"} if value else None


def _write_tpm(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    tpm = _singleton(root, "tpm", spec.tpm)
    if tpm is None or spec.tpm is None:
        return
    tpm.set("model", spec.tpm.model)
    backend = child(tpm, "backend")
    if backend.get("type") != "emulator":
        backend.attrib.clear()
        for c in list(backend):
            backend.remove(c)
    backend.set("type", "emulator")
    backend.set("version", spec.tpm.version)
    if spec.tpm.encryption_secret_ref:
        child(backend, "encryption").set("secret", libvirt_secret_uuid(spec.tpm.encryption_secret_ref))


def _tpm_refusal(spec: GuestSpec, caps: HostCapabilities, host: str) -> str | None:
    support = caps.devices
    if spec.tpm is None or support is None:
        return None
    if "emulator" not in support.tpm_backends or spec.tpm.model not in support.tpm_models:
        return _unsupported(f"an emulated TPM {spec.tpm.model}", host, caps) + (
            " (its domain capabilities list no swtpm emulator backend: install swtpm)"
            if "emulator" not in support.tpm_backends else
            f" (its domain capabilities list TPM models {', '.join(support.tpm_models) or 'none'})")
    return None


# ----------------------------------------------------------------- virtiofs shares


def _virtiofs(root: etree._Element) -> list[etree._Element]:
    return [f for f in root.findall("devices/filesystem")
            if f.find("driver") is not None and f.find("driver").get("type") == "virtiofs"]  # type: ignore[union-attr]


def _read_filesystems(root: etree._Element) -> dict[str, Any]:
    out = []
    for f in _virtiofs(root):
        src, tgt = f.find("source"), f.find("target")
        out.append({"source": src.get("dir", "") if src is not None else "",
                    "target": tgt.get("dir", "") if tgt is not None else "",
                    "readonly": f.find("readonly") is not None})
    return {"filesystems": tuple(sorted(out, key=lambda x: x["target"]))}


def _want_filesystems(spec: GuestSpec, _facts: Facts) -> tuple[dict[str, Any], ...]:
    return tuple(sorted((_dump(f) or {} for f in spec.filesystems), key=lambda x: x["target"]))


def _write_filesystems(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    by_target = {(f.find("target").get("dir") if f.find("target") is not None else ""): f  # type: ignore[union-attr]
                 for f in _virtiofs(root)}
    wanted = {f.target for f in spec.filesystems}
    for target, el in by_target.items():
        if target not in wanted:
            remove(el)
    for share in spec.filesystems:
        found = by_target.get(share.target)
        if found is None:
            el = _add_device(root, etree.Element("filesystem", type="mount", accessmode="passthrough"))
            etree.SubElement(el, "driver", type="virtiofs")
        else:
            el = found
        child(el, "source").set("dir", share.source)
        child(el, "target").set("dir", share.target)
        if share.readonly:
            child(el, "readonly")
        else:
            remove(el.find("readonly"))
    if spec.filesystems:
        # virtiofsd maps the guest's memory: it must be shared (memfd needs no hugepages)
        backing = root.find("memoryBacking")
        if backing is None:
            backing = etree.Element("memoryBacking")
            anchor = root.find("currentMemory")
            (anchor if anchor is not None else child(root, "memory")).addnext(backing)
        if backing.find("source") is None and backing.find("hugepages") is None:
            etree.SubElement(backing, "source", type="memfd")
        child(backing, "access").set("mode", "shared")


READONLY_VIRTIOFS = 11_000_000  # libvirt 9 and 10 refuse <readonly/> on a virtiofs share at define


def _filesystems_refusal(spec: GuestSpec, caps: HostCapabilities, host: str) -> str | None:
    if spec.filesystems and caps.devices is not None and not caps.devices.virtiofs:
        return _unsupported("virtiofs shares", host, caps) + " (no virtiofs in its domain capabilities: " \
            "install virtiofsd)"
    readonly = [f.target for f in spec.filesystems if f.readonly]
    if readonly and caps.driver == "QEMU" and 0 < caps.libvirt_version < READONLY_VIRTIOFS:
        v = caps.libvirt_version
        return (f"host {host}'s libvirt {v // 1_000_000}.{v // 1000 % 1000} cannot share read-only through "
                f"virtiofs ({', '.join(readonly)}): its QEMU driver refuses <readonly/> there; share it "
                "read-write or mount it read-only in the guest")
    return None


# ----------------------------------------------------------------- host devices


def _hostdev_key(el: etree._Element) -> str | None:
    kind = el.get("type")
    src = el.find("source")
    if src is None:
        return None
    if kind == "pci":
        a = src.find("address")
        if a is None:
            return None
        parts = [int(a.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function")]
        return "pci {:04x}:{:02x}:{:02x}.{:x}".format(*parts)
    if kind == "usb":
        v, p = src.find("vendor"), src.find("product")
        if v is None or p is None:
            return None
        return f"usb {v.get('id', '').lower()}:{p.get('id', '').lower()}"
    if kind == "mdev":
        a = src.find("address")
        return f"mdev {(a.get('uuid') or '').lower()}" if a is not None else None
    return None


def _hostdev_yaml(key: str) -> dict[str, Any]:
    kind, _, ident = key.partition(" ")
    if kind == "usb":
        vendor, _, product = ident.partition(":")
        return {"usb": {"vendor": vendor, "product": product}}
    return {kind: ident}


def hostdev_element(dev: Hostdev) -> etree._Element:
    if dev.pci is not None:
        el = etree.Element("hostdev", mode="subsystem", type="pci", managed="yes")
        dom, bus, rest = dev.pci.lower().split(":")
        slot, func = rest.split(".")
        etree.SubElement(etree.SubElement(el, "source"), "address", domain=f"0x{dom}", bus=f"0x{bus}",
                         slot=f"0x{slot}", function=f"0x{func}")
    elif dev.usb is not None:
        el = etree.Element("hostdev", mode="subsystem", type="usb", managed="yes")
        src = etree.SubElement(el, "source")
        etree.SubElement(src, "vendor", id=dev.usb.vendor.lower())
        etree.SubElement(src, "product", id=dev.usb.product.lower())
    else:
        el = etree.Element("hostdev", mode="subsystem", type="mdev", model="vfio-pci")
        etree.SubElement(etree.SubElement(el, "source"), "address", uuid=(dev.mdev or "").lower())
    return el


def _read_hostdevs(root: etree._Element) -> dict[str, Any]:
    keys = (_hostdev_key(h) for h in root.findall("devices/hostdev"))
    return {"hostdevs": tuple(sorted(k for k in keys if k))}


def _write_hostdevs(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    wanted = {d.key: d for d in spec.hostdevs}
    present = set()
    for el in root.findall("devices/hostdev"):
        key = _hostdev_key(el)
        if key is None:
            continue  # a kind virtsync does not model (scsi, net): left alone
        if key not in wanted:
            remove(el)
        present.add(key)
    for key, dev in wanted.items():
        if key not in present:
            _add_device(root, hostdev_element(dev))


def _hostdevs_refusal(spec: GuestSpec, caps: HostCapabilities, host: str) -> str | None:
    if not spec.hostdevs:
        return None
    support = caps.devices
    if support is None or not support.vfio:
        return (f"host {host} ({caps.driver}) cannot pass devices through: it has no VFIO "
                "(domain capabilities list no vfio PCI backend; load vfio-pci and enable the IOMMU)")
    missing = [d.key for d in spec.hostdevs if d.key not in support.node_devices]
    if missing:
        return f"host {host} lists no such device: {', '.join(missing)} (virsh nodedev-list)"
    return None


# ----------------------------------------------------------------- simple devices


def _same_given(want: dict[str, Any] | None, have: dict[str, Any] | None) -> bool:
    """Only what the spec gives is compared: a value it leaves out (a video's vram, an RNG's rate)
    stays as the definition has it."""
    if want is None or have is None:
        return want == have
    return all(have.get(k) == v for k, v in want.items())


def _ints(el: etree._Element, attrs: tuple[tuple[str, str], ...]) -> dict[str, int]:
    """{yaml name: int} of the integer attributes ``el`` has, e.g. (("vram", "vram"),)."""
    out = {}
    for yaml_name, attr in attrs:
        text = el.get(attr)
        if text is not None and text.lstrip("-").isdigit():
            out[yaml_name] = int(text)
    return out


_VIDEO_SIZES = (("vram", "vram"), ("heads", "heads"))


def _read_video(root: etree._Element) -> dict[str, Any]:
    model = root.find("devices/video/model")
    if model is None:
        return {"video": None}
    return {"video": {"model": model.get("type", ""), **_ints(model, _VIDEO_SIZES)}}


def _write_video(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    video = _singleton(root, "video", spec.video)
    if video is None or spec.video is None:
        return
    model = child(video, "model")
    if model.get("type") != spec.video.model:
        kept = {k: model.get(k) for k in ("heads", "primary") if model.get(k)}
        model.attrib.clear()  # vram, ram, vgamem belong to the old model
        for c in list(model):
            model.remove(c)
        model.set("type", spec.video.model)
        for k, v in kept.items():
            model.set(k, v or "")
    for attr in ("vram", "heads"):
        value = getattr(spec.video, attr)
        if value is not None:
            model.set(attr, str(value))


def _read_serial(root: etree._Element) -> dict[str, Any]:
    serial = root.find("devices/serial")
    return {"serial": {"type": serial.get("type", "")} if serial is not None else None}


def _write_serial(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    serials = root.findall("devices/serial")
    if spec.serial is None:
        for s in serials:
            remove(s)
        return
    if not serials:
        el = _add_device(root, etree.Element("serial", type=spec.serial.type))
        etree.SubElement(el, "target", port="0")
    else:
        serials[0].set("type", spec.serial.type)


def _read_console(root: etree._Element) -> dict[str, Any]:
    console = root.find("devices/console")
    if console is None:
        return {"console": None}
    target = console.find("target")
    return {"console": {"type": console.get("type", ""),
                        "target": (target.get("type") if target is not None else None) or "serial"}}


def _write_console(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    console = _singleton(root, "console", spec.console)
    if console is None or spec.console is None:
        return
    console.set("type", spec.console.type)
    target = child(console, "target")
    if target.get("type") != spec.console.target:
        target.attrib.clear()
        target.set("type", spec.console.target)
        target.set("port", "0")


def _read_watchdog(root: etree._Element) -> dict[str, Any]:
    w = root.find("devices/watchdog")
    return {"watchdog": {"model": w.get("model", ""), "action": w.get("action", "reset")} if w is not None else None}


def _write_watchdog(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    w = _singleton(root, "watchdog", spec.watchdog)
    if w is None or spec.watchdog is None:
        return
    if w.get("model") != spec.watchdog.model:
        remove(w.find("address"))  # another model sits on another bus
    w.set("model", spec.watchdog.model)
    w.set("action", spec.watchdog.action)


_RNG_FILES = ("/dev/urandom", "/dev/random", "/dev/hwrng")


def _read_rng(root: etree._Element) -> dict[str, Any]:
    backend = root.find("devices/rng/backend")
    if backend is None:
        return {"rng": None}
    value: dict[str, Any] = {
        "backend": "builtin" if backend.get("model") == "builtin" else (backend.text or "").strip()}
    rate = root.find("devices/rng/rate")
    if rate is not None:
        value["rate"] = _ints(rate, (("bytes", "bytes"), ("period", "period")))
    return {"rng": value}


def _write_rng(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    rng = _singleton(root, "rng", spec.rng, model="virtio")
    if rng is None or spec.rng is None:
        return
    backend = child(rng, "backend")
    backend.attrib.clear()
    if spec.rng.backend == "builtin":
        backend.set("model", "builtin")
        backend.text = None
    else:
        backend.set("model", "random")
        backend.text = spec.rng.backend
    if spec.rng.rate is not None:
        rate = rng.find("rate")
        if rate is None:
            rate = etree.Element("rate")
            backend.addprevious(rate)  # libvirt writes <rate> before <backend>
        rate.set("bytes", str(spec.rng.rate.bytes))
        if spec.rng.rate.period is not None:
            rate.set("period", str(spec.rng.rate.period))
        elif "period" in rate.attrib:
            del rate.attrib["period"]


def _read_panic(root: etree._Element) -> dict[str, Any]:
    p = root.find("devices/panic")
    return {"panic": {"model": p.get("model", "isa")} if p is not None else None}


def _write_panic(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    p = _singleton(root, "panic", spec.panic)
    if p is None or spec.panic is None:
        return
    if p.get("model") != spec.panic.model:
        remove(p.find("address"))
    p.set("model", spec.panic.model)


# libvirt adds a PS/2 mouse and keyboard to every x86 guest with graphics: not the spec's business.
_IMPLICIT_INPUTS = ({"type": "mouse", "bus": "ps2"}, {"type": "keyboard", "bus": "ps2"},
                    # and libxl its Xen PV mouse and keyboard to a PV guest with graphics
                    {"type": "mouse", "bus": "xen"}, {"type": "keyboard", "bus": "xen"})


def _read_inputs(root: etree._Element) -> dict[str, Any]:
    found = [{"type": i.get("type", ""), "bus": i.get("bus", "ps2")} for i in root.findall("devices/input")]
    return {"inputs": tuple(sorted((i for i in found if i not in _IMPLICIT_INPUTS),
                                   key=lambda x: (x["type"], x["bus"])))}


def _want_inputs(spec: GuestSpec, _facts: Facts) -> tuple[dict[str, Any], ...]:
    wanted = (_dump(i) or {} for i in spec.input)
    return tuple(sorted((i for i in wanted if i not in _IMPLICIT_INPUTS), key=lambda x: (x["type"], x["bus"])))


def _write_inputs(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    wanted = [_dump(i) or {} for i in spec.input]
    present = []
    for el in root.findall("devices/input"):
        item = {"type": el.get("type", ""), "bus": el.get("bus", "ps2")}
        if item not in wanted and item not in _IMPLICIT_INPUTS:
            remove(el)
        else:
            present.append(item)
    for item in wanted:
        if item not in present:
            _add_device(root, etree.Element("input", type=item["type"], bus=item["bus"]))


# ----------------------------------------------------------------- firmware


def _read_secure_boot(root: etree._Element) -> dict[str, Any]:
    os_el = root.find("os")
    if os_el is None:
        return {"secure_boot": False}
    loader = os_el.find("loader")
    feature = os_el.find("firmware/feature[@name='secure-boot']")
    on = (feature is not None and feature.get("enabled") == "yes") or (
        loader is not None and loader.get("secure") == "yes")
    return {"secure_boot": on}


def _write_secure_boot(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    os_el = child(root, "os")
    fw = os_el.find("firmware")
    loader = os_el.find("loader")
    if spec.secure_boot:
        fw = fw if fw is not None else etree.SubElement(os_el, "firmware")
        for name in ("secure-boot", "enrolled-keys"):  # Microsoft's keys: Windows and shim-signed Linux boot
            feat = fw.find(f"feature[@name='{name}']")
            feat = feat if feat is not None else etree.SubElement(fw, "feature", name=name)
            feat.set("enabled", "yes")
        child(child(root, "features"), "smm").set("state", "on")
        if loader is not None and loader.get("secure") == "no":
            loader.set("secure", "yes")
        return
    if fw is not None:
        for name in ("secure-boot", "enrolled-keys"):
            remove(fw.find(f"feature[@name='{name}']"))
        if len(fw) == 0:
            remove(fw)
    if spec.firmware == "uefi":
        # said explicitly: libvirt's firmware choice on q35 otherwise takes the enforcing build
        fw = child(os_el, "firmware")
        etree.SubElement(fw, "feature", name="secure-boot", enabled="no")
    if loader is not None and loader.get("secure") == "yes":
        remove(loader)  # libvirt picks the plain build again; the NVRAM file stays
        remove(os_el.find("nvram"))


def _secure_boot_refusal(spec: GuestSpec, caps: HostCapabilities, host: str) -> str | None:
    if spec.secure_boot and caps.devices is not None and not caps.devices.secure_boot:
        return _unsupported("UEFI Secure Boot", host, caps) + " (no secure-boot firmware in its domain " \
            "capabilities: install ovmf)"
    return None


_SYSINFO_SECTIONS = (("system", "system"), ("baseBoard", "baseBoard"))


def _smbios(root: etree._Element) -> etree._Element | None:
    return root.find("sysinfo[@type='smbios']")


def _read_sysinfo(root: etree._Element) -> dict[str, Any]:
    si = _smbios(root)
    if si is None:
        return {"sysinfo": None}
    out: dict[str, Any] = {}
    for yaml_name, tag in _SYSINFO_SECTIONS:
        section = si.find(tag)
        if section is not None:
            out[yaml_name] = {e.get("name", ""): (e.text or "") for e in section.findall("entry")}
    return {"sysinfo": out or None}


def _write_sysinfo(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    si = _smbios(root)
    want = _dump(spec.sysinfo) or {}
    if si is None and want:
        si = etree.Element("sysinfo", type="smbios")
        anchor = root.find("vcpu")
        (anchor if anchor is not None else child(root, "memory")).addnext(si)
    if si is not None:
        for yaml_name, tag in _SYSINFO_SECTIONS:  # chassis, oemStrings … (xmlPatches) stay
            remove(si.find(tag))
            entries = want.get(yaml_name) or {}
            if entries:
                section = etree.SubElement(si, tag)
                for k, v in entries.items():
                    etree.SubElement(section, "entry", name=k).text = str(v)
        if len(si) == 0:
            remove(si)
    smbios = root.find("os/smbios")
    if want:
        child(child(root, "os"), "smbios").set("mode", "sysinfo")
    elif smbios is not None and smbios.get("mode") == "sysinfo" and _smbios(root) is None:
        remove(smbios)  # it would point at strings that are gone (another mode is smbios:'s)


# ----------------------------------------------------------------- <os>: SMBIOS mode, BIOS options, boot menu


def _read_smbios(root: etree._Element) -> dict[str, Any]:
    smbios = root.find("os/smbios")
    return {"smbios": smbios.get("mode") if smbios is not None else None}


def _want_smbios(spec: GuestSpec, _facts: Facts) -> str | None:
    return spec.smbios or ("sysinfo" if spec.sysinfo is not None else None)


def _write_smbios(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    mode = _want_smbios(spec, facts)
    if mode is None:
        remove(root.find("os/smbios"))
    else:
        child(child(root, "os"), "smbios").set("mode", mode)


_BIOS_ATTRS = (("useSerial", "useserial"), ("rebootTimeout", "rebootTimeout"))


def _read_bios(root: etree._Element) -> dict[str, Any]:
    bios = root.find("os/bios")
    if bios is None:
        return {"bios": None}
    value: dict[str, Any] = _ints(bios, _BIOS_ATTRS[1:])
    if bios.get("useserial") is not None:
        value["useSerial"] = bios.get("useserial") == "yes"
    return {"bios": value}


def _write_bios(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    if spec.bios is None:
        remove(root.find("os/bios"))
        return
    bios = child(child(root, "os"), "bios")
    if spec.bios.use_serial is not None:
        bios.set("useserial", "yes" if spec.bios.use_serial else "no")
    if spec.bios.reboot_timeout is not None:
        bios.set("rebootTimeout", str(spec.bios.reboot_timeout))


def _read_boot_menu(root: etree._Element) -> dict[str, Any]:
    menu = root.find("os/bootmenu")
    if menu is None:
        return {"boot_menu": None}
    return {"boot_menu": {"enable": menu.get("enable") == "yes", **_ints(menu, (("timeout", "timeout"),))}}


def _write_boot_menu(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    if spec.boot_menu is None:
        remove(root.find("os/bootmenu"))
        return
    menu = child(child(root, "os"), "bootmenu")
    menu.set("enable", "yes" if spec.boot_menu.enable else "no")
    if spec.boot_menu.timeout is not None:
        menu.set("timeout", str(spec.boot_menu.timeout))


def _export_given(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return value or None  # an empty <bios/> says nothing


# ----------------------------------------------------------------- Windows: Hyper-V and clock

_HYPERV_FLAGS = ("relaxed", "vapic", "vpindex", "runtime", "synic", "stimer", "reset", "frequencies",
                 "reenlightenment", "tlbflush", "ipi")


def _read_features(root: etree._Element) -> dict[str, Any]:
    hv = root.find("features/hyperv")
    if hv is None:
        return {"features": None}
    out: dict[str, Any] = {}
    for flag in _HYPERV_FLAGS:
        el = hv.find(flag)
        if el is not None and el.get("state") == "on":
            out[flag] = True
    spin = hv.find("spinlocks")
    if spin is not None and spin.get("state") == "on":
        out["spinlocks"] = int(spin.get("retries", "8191"))
    vendor = hv.find("vendor_id")
    if vendor is not None and vendor.get("state") == "on":
        out["vendorId"] = vendor.get("value", "")
    return {"features": {"hyperv": out}}


def _want_features(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    if spec.features is None or spec.features.hyperv is None:
        return None
    hv = _dump(spec.features.hyperv) or {}
    return {"hyperv": {k: v for k, v in hv.items() if v is not False}}


def _write_features(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    features = child(root, "features")
    hv = features.find("hyperv")
    want = _want_features(spec, _facts)
    if want is None:
        remove(hv)
        return
    if hv is None:
        hv = etree.SubElement(features, "hyperv")
    hv.set("mode", "custom")
    for c in list(hv):
        hv.remove(c)
    values = want["hyperv"]
    for flag in _HYPERV_FLAGS:
        if values.get(flag):
            etree.SubElement(hv, flag, state="on")
    if "spinlocks" in values:
        etree.SubElement(hv, "spinlocks", state="on", retries=str(values["spinlocks"]))
    if "vendorId" in values:
        etree.SubElement(hv, "vendor_id", state="on", value=values["vendorId"])


def _read_clock(root: etree._Element) -> dict[str, Any]:
    clock = root.find("clock")
    if clock is None:
        return {"clock": None}
    timers = []
    for t in clock.findall("timer"):
        item: dict[str, Any] = {"name": t.get("name", "")}
        if t.get("tickpolicy"):
            item["tickpolicy"] = t.get("tickpolicy")
        if t.get("present"):
            item["present"] = t.get("present") == "yes"
        timers.append(item)
    return {"clock": {"offset": clock.get("offset", "utc"), "timers": sorted(timers, key=lambda x: x["name"])}}


def _want_clock(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    if spec.clock is None:
        return None
    value = _dump(spec.clock) or {}
    value["timers"] = sorted(value.get("timers", []), key=lambda x: x["name"])
    return value


def _write_clock(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    assert spec.clock is not None
    clock = child(root, "clock")
    clock.set("offset", spec.clock.offset)
    for t in clock.findall("timer"):
        clock.remove(t)
    for timer in spec.clock.timers:
        el = etree.SubElement(clock, "timer", name=timer.name)
        if timer.tickpolicy:
            el.set("tickpolicy", timer.tickpolicy)
        if timer.present is not None:
            el.set("present", "yes" if timer.present else "no")


def _export_clock(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value or (value.get("offset") == "utc" and not value.get("timers")):
        return None  # libvirt's default
    out = {"offset": value["offset"]}
    if value.get("timers"):
        out["timers"] = value["timers"]
    return out


def _given(attr: str) -> Callable[[GuestSpec, Facts], bool]:
    """Written only where the spec says something (a value, or null to remove it): a new guest
    keeps the skeleton's and libvirt's defaults (its console, its video for the graphics)."""
    return lambda s, _f: attr in s.model_fields_set


def _maybe(value: Any) -> Any:
    return value or None


def _single(name: str, how: str, read: Any, write: Any, attr: str, xpaths: tuple[str, ...],
            samples: tuple[Any, ...], virt_types: frozenset[str] | None = _KVM_LIKE,
            refuse: Refusal | None = None) -> Field[GuestSpec]:
    """A device given as one mapping in YAML: the essence is the mapping, defaults filled in.
    Its reader looks for the element its one xpath ends in (``needs``)."""
    return Field(name, how, Impact.NEXT_BOOT, xpaths=xpaths, needs=(xpaths[0].rsplit("/", 1)[1],), read=read,
                 write=write,
                 want=lambda s, _f: _dump(getattr(s, attr)), have=lambda c, _o: getattr(c, attr), show=_show,
                 virt_types=virt_types, when=_given(attr), export=_maybe, samples=samples, refuse=refuse)


DEVICE_FIELDS: tuple[Field[GuestSpec], ...] = (
    Field("tpm", "an emulated TPM (swtpm); its state is kept through redefinitions and recreates",
          Impact.NEXT_BOOT, xpaths=("/domain/devices/tpm",), when=_given("tpm"),
          needs=("tpm",), read=_read_tpm, write=_write_tpm,
          want=_want_tpm, have=lambda c, _o: c.tpm, same=_same_tpm, show=_show, virt_types=_KVM_LIKE,
          export=_export_tpm, refuse=_tpm_refusal, samples=({"model": "tpm-crb"}, {"model": "tpm-tis"})),
    Field("filesystems", "virtiofs shares, keyed by mount tag; the guest's memory becomes shared memfd",
          Impact.NEXT_BOOT, xpaths=("/domain/devices/filesystem", "/domain/memoryBacking"),
          when=_given("filesystems"),
          needs=("filesystem",), read=_read_filesystems, write=_write_filesystems, want=_want_filesystems,
          have=lambda c, _o: c.filesystems, show=_show, virt_types=_KVM_LIKE,
          export=lambda v: list(v) or None, refuse=_filesystems_refusal,
          samples=([{"source": "/srv/a", "target": "a"}], [{"source": "/srv/b", "target": "b"}])),
    Field("hostdevs", "host devices passed through (VFIO), keyed by address; the plan checks the host "
          "lists each one and has VFIO", Impact.NEXT_BOOT, xpaths=("/domain/devices/hostdev",),
          when=_given("hostdevs"), needs=("hostdev",), read=_read_hostdevs, write=_write_hostdevs,
          want=lambda s, _f: tuple(sorted(d.key for d in s.hostdevs)), have=lambda c, _o: c.hostdevs,
          show=lambda v: ", ".join(v) or "none", export=lambda v: [_hostdev_yaml(k) for k in v] or None,
          refuse=_hostdevs_refusal, samples=()),
    Field("video", "display adapter model, its vram and heads (left out: as defined)", Impact.NEXT_BOOT,
          xpaths=("/domain/devices/video",), needs=("video",), read=_read_video, write=_write_video,
          want=lambda s, _f: _dump(s.video), have=lambda c, _o: c.video, same=_same_given, show=_show,
          virt_types=_KVM_LIKE, when=_given("video"), export=_maybe,
          samples=({"model": "vga", "vram": 16384}, {"model": "virtio", "heads": 2})),
    _single("serial", "serial port", _read_serial, _write_serial, "serial", ("/domain/devices/serial",),
            (), virt_types=_KVM_LIKE),
    _single("console", "console device", _read_console, _write_console, "console", ("/domain/devices/console",),
            ({"target": "serial"}, {"target": "virtio"})),
    _single("watchdog", "watchdog device and its action", _read_watchdog, _write_watchdog, "watchdog",
            ("/domain/devices/watchdog",), ({"model": "i6300esb"}, {"model": "i6300esb", "action": "poweroff"})),
    Field("rng", "virtio-rng entropy device and its rate limit (left out: as defined)", Impact.NEXT_BOOT,
          xpaths=("/domain/devices/rng",), needs=("rng",), read=_read_rng, write=_write_rng,
          want=lambda s, _f: _dump(s.rng), have=lambda c, _o: c.rng, same=_same_given, show=_show,
          virt_types=_KVM_LIKE, when=_given("rng"), export=_maybe,
          samples=({"backend": "/dev/urandom"}, {"backend": "builtin", "rate": {"bytes": 1024, "period": 2000}})),
    _single("panic", "panic notifier device", _read_panic, _write_panic, "panic", ("/domain/devices/panic",),
            ({"model": "isa"}, {"model": "pvpanic"})),
    Field("input", "input devices (a tablet follows the VNC cursor); libvirt's PS/2 mouse and keyboard "
          "are its own", Impact.NEXT_BOOT, xpaths=("/domain/devices/input",), when=_given("input"),
          needs=("input",), read=_read_inputs,
          write=_write_inputs, want=_want_inputs, have=lambda c, _o: c.inputs, show=_show,
          export=lambda v: list(v) or None, samples=([{"type": "tablet"}], [{"type": "tablet", "bus": "virtio"}])),
    Field("secureBoot", "UEFI Secure Boot (OVMF's secure-boot build with Microsoft keys, SMM on); the NVRAM "
          "file is kept", Impact.NEXT_BOOT, xpaths=("/domain/os/firmware", "/domain/features/smm"),
          when=lambda s, _f: "secure_boot" in s.model_fields_set or s.firmware == "uefi",
          needs=("loader", "firmware"), read=_read_secure_boot, write=_write_secure_boot,
          want=lambda s, _f: s.secure_boot,
          have=lambda c, _o: c.secure_boot, virt_types=frozenset({"kvm", "qemu"}),
          export=lambda on: True if on else None, refuse=_secure_boot_refusal, samples=()),
    Field("sysinfo", "SMBIOS system and base board strings", Impact.NEXT_BOOT,
          xpaths=("/domain/sysinfo/system", "/domain/sysinfo/baseBoard", "/domain/os/smbios"),
          when=_given("sysinfo"),
          needs=("sysinfo",), read=_read_sysinfo, write=_write_sysinfo, want=lambda s, _f: _dump(s.sysinfo) or None,
          have=lambda c, _o: c.sysinfo, show=_show, virt_types=_KVM_LIKE, export=_maybe,
          samples=({"system": {"manufacturer": "ACME"}}, {"system": {"manufacturer": "ACME", "serial": "42"}})),
    Field("smbios", "where the SMBIOS tables come from, <os><smbios mode>", Impact.NEXT_BOOT,
          xpaths=("/domain/os/smbios",), when=lambda s, _f: "smbios" in s.model_fields_set,
          needs=("smbios",), read=_read_smbios, write=_write_smbios, want=_want_smbios, have=lambda c, _o: c.smbios,
          virt_types=_KVM_LIKE, export=lambda v: v, samples=("host", "emulate")),
    Field("bios", "SeaBIOS options, <os><bios useserial rebootTimeout> (left out: as defined)", Impact.NEXT_BOOT,
          xpaths=("/domain/os/bios",), when=_given("bios"), needs=("bios",), read=_read_bios, write=_write_bios,
          want=lambda s, _f: _dump(s.bios), have=lambda c, _o: c.bios, same=_same_given, show=_show,
          virt_types=_KVM_LIKE, export=_export_given,
          samples=({"useSerial": True}, {"useSerial": False, "rebootTimeout": 0})),
    Field("bootMenu", "the firmware's boot menu, <os><bootmenu enable timeout>", Impact.NEXT_BOOT,
          xpaths=("/domain/os/bootmenu",), when=_given("boot_menu"),
          needs=("bootmenu",), read=_read_boot_menu, write=_write_boot_menu,
          want=lambda s, _f: _dump(s.boot_menu), have=lambda c, _o: c.boot_menu, same=_same_given, show=_show,
          virt_types=_KVM_LIKE, export=_export_given,
          samples=({"enable": False}, {"enable": True, "timeout": 3000})),
    Field("features", "Hyper-V enlightenments (features.hyperv)", Impact.NEXT_BOOT,
          xpaths=("/domain/features/hyperv",), when=_given("features"), needs=("hyperv",), read=_read_features,
          write=_write_features, want=_want_features,
          have=lambda c, _o: c.features, show=_show, virt_types=_KVM_LIKE, export=_maybe,
          samples=({"hyperv": {"relaxed": True}}, {"hyperv": {"relaxed": True, "spinlocks": 8191}})),
    Field("clock", "clock offset and timers", Impact.NEXT_BOOT, xpaths=("/domain/clock",),
          needs=("clock",), read=_read_clock,
          write=_write_clock, want=_want_clock, have=lambda c, _o: c.clock, show=_show,
          when=_given("clock"), export=_export_clock,
          samples=({"offset": "utc"}, {"offset": "localtime", "timers": [{"name": "rtc", "tickpolicy": "catchup"}]})),
)

__all__ = ["DEVICE_FIELDS", "hostdev_element"]
