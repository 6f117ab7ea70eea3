"""What a connected host can do, probed once per connection."""

from __future__ import annotations

from typing import Any

import libvirt
from lxml import etree

from controller.fields.xmlutil import parse
from controller.hypervisor.errors import libvirt_call
from controller.model.state import DeviceSupport, HostCapabilities


def host_memory(conn: libvirt.virConnect, host: str) -> int:
    """Physical memory of the host, in bytes (getInfo reports MiB)."""
    with libvirt_call(host, "read host info"):
        return int(conn.getInfo()[1]) * 2**20


def probe(conn: libvirt.virConnect, host: str, configured: str | None) -> HostCapabilities:
    """Capabilities of ``conn``; ``configured`` is the Host spec's ``hypervisor`` (or None)."""
    with libvirt_call(host, "probe capabilities"):
        driver = conn.getType()
        driver = {"TEST": "Test", "XEN": "Xen"}.get(driver.upper(), driver)
        version = conn.getLibVersion()
        caps_xml = conn.getCapabilities()
    notes: list[str] = []
    root = parse(caps_xml)
    domain_types = {d.get("type") for d in root.iterfind("guest/arch/domain")}
    guest_types = tuple(sorted({t.text or "" for t in root.iterfind("guest/os_type")}))
    topology = host_topology(root) or _node_info_topology(conn, host)
    if driver == "Test":
        return HostCapabilities(driver="Test", virt_type="test", libvirt_version=version,
                                hotplug=False, block_resize=False, pool_types=pool_types(conn), **topology)
    if driver == "Xen":
        return HostCapabilities(driver="Xen", virt_type="xen", libvirt_version=version,
                                snapshots=False, block_resize=False, guest_types=guest_types,
                                devices=device_support(conn, "xen"), pool_types=pool_types(conn), **topology,
                                notes=("libvirt's Xen (libxl) driver has no snapshot API",))
    virt_type = configured if configured in ("kvm", "qemu") else None
    if virt_type is None:
        virt_type = "kvm" if "kvm" in domain_types else "qemu"
        if virt_type == "qemu":
            notes.append(f"{host}: no KVM on this host; guests run under QEMU's TCG emulation")
    elif virt_type == "kvm" and "kvm" not in domain_types:
        notes.append(f"{host}: hypervisor kvm is configured but the host offers no KVM")
    return HostCapabilities(
        driver=driver,
        virt_type=virt_type,
        libvirt_version=version,
        notes=tuple(notes),
        devices=device_support(conn, virt_type),
        pool_types=pool_types(conn),
        **topology,
    )


def pool_types(conn: libvirt.virConnect) -> frozenset[str] | None:
    """The storage pool types the host's libvirt has a backend for (getStoragePoolCapabilities);
    None where the driver does not answer (the test driver), and then no type is refused."""
    try:
        xml = conn.getStoragePoolCapabilities(0)
    except libvirt.libvirtError:
        return None
    return parse_pool_types(xml)


def parse_pool_types(xml: str) -> frozenset[str]:
    """<storagepoolCapabilities><pool type='dir' supported='yes'>…: the supported types."""
    return frozenset(p.get("type", "") for p in parse(xml).iterfind("pool") if p.get("supported") == "yes")


def host_topology(caps: etree._Element) -> dict[str, Any]:
    """Host CPUs, NUMA nodes and huge pages (size, pages) from getCapabilities' <host><topology>:
    what guest pinning, NUMA bindings and memory backing are checked against. Empty where the
    driver lists no topology (nothing is refused then)."""
    cells = caps.findall("host/topology/cells/cell")
    if not cells:
        return {}
    cpus = frozenset(int(c.get("id", "0")) for c in caps.iterfind("host/topology/cells/cell/cpus/cpu"))
    pages: dict[int, int] = {}
    for cell in cells:
        for p in cell.findall("pages"):
            size = int(p.get("size", "0")) * _UNIT.get(p.get("unit", "KiB"), 1024)
            pages[size] = pages.get(size, 0) + int(p.text or 0)
    return {"host_cpus": cpus or None, "numa_nodes": frozenset(int(c.get("id", "0")) for c in cells),
            "hugepages": tuple(sorted((size, n) for size, n in pages.items() if size >= 64 * 1024))}


def _node_info_topology(conn: libvirt.virConnect, host: str) -> dict[str, Any]:
    """Where the capabilities list no NUMA cells (libvirt's test driver on a host file): the CPU and
    node counts of getInfo, numbered from 0; huge pages are then unknown."""
    with libvirt_call(host, "read host info"):
        info = conn.getInfo()
    cpus, nodes = int(info[2]), int(info[4])
    if cpus <= 0:
        return {}
    return {"host_cpus": frozenset(range(cpus)), "numa_nodes": frozenset(range(max(nodes, 1)))}


_UNIT = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "b": 1, "bytes": 1}


def _values(root: etree._Element, path: str) -> tuple[str, ...]:
    return tuple(v.text or "" for v in root.iterfind(path))


def device_support(conn: libvirt.virConnect, virt_type: str) -> DeviceSupport | None:
    """TPM, virtiofs, VFIO and Secure Boot from the domain capabilities; passthrough candidates from
    the node devices. None where the driver has no domain capabilities (nothing is then refused but
    passthrough)."""
    try:
        root = parse(conn.getDomainCapabilities(None, None, None, virt_type, 0))
    except libvirt.libvirtError:
        return None
    devices = root.find("devices")
    if devices is None:
        return None

    def supported(tag: str) -> etree._Element | None:
        el = devices.find(tag)
        return el if el is not None and el.get("supported") == "yes" else None

    tpm = supported("tpm")
    fs = supported("filesystem")
    hostdev = supported("hostdev")
    return DeviceSupport(
        tpm_models=_values(tpm, "enum[@name='model']/value") if tpm is not None else (),
        tpm_backends=_values(tpm, "enum[@name='backendModel']/value") if tpm is not None else (),
        virtiofs=fs is not None and "virtiofs" in _values(fs, "enum[@name='driverType']/value"),
        vfio=hostdev is not None and "vfio" in _values(hostdev, "enum[@name='pciBackend']/value"),
        secure_boot=_secure_boot(conn, virt_type, root),
        node_devices=_node_devices(conn),
    )


def _secure_boot(conn: libvirt.virConnect, virt_type: str, default: etree._Element) -> bool:
    """Secure Boot needs SMM, which only q35 has: the default machine (i440fx) lists no secure
    firmware, so q35's capabilities are asked too."""
    if "yes" in _values(default, "os/loader/enum[@name='secure']/value"):
        return True
    if virt_type not in ("kvm", "qemu"):
        return False
    try:
        q35 = parse(conn.getDomainCapabilities(None, None, "q35", virt_type, 0))
    except libvirt.libvirtError:
        return False
    return "yes" in _values(q35, "os/loader/enum[@name='secure']/value")


def _node_devices(conn: libvirt.virConnect) -> frozenset[str]:
    """Keys of the host's PCI, USB and mediated devices, as hostdev specs name them."""
    out: set[str] = set()
    try:
        devices = conn.listAllDevices(0)
    except libvirt.libvirtError:
        return frozenset()
    for dev in devices:
        name = dev.name()
        try:
            if name.startswith("pci_"):
                _, dom, bus, slot, func = name.split("_")
                out.add(f"pci {dom}:{bus}:{slot}.{func}")
            elif name.startswith("usb_") or name.startswith("mdev_"):
                cap = parse(dev.XMLDesc(0)).find("capability")
                if cap is None:
                    continue
                if cap.get("type") == "usb_device":
                    vendor, product = cap.find("vendor"), cap.find("product")
                    if vendor is not None and product is not None:
                        out.add(f"usb {vendor.get('id', '').lower()}:{product.get('id', '').lower()}")
                elif cap.get("type") == "mdev" and cap.findtext("uuid"):
                    out.add(f"mdev {(cap.findtext('uuid') or '').lower()}")
        except (libvirt.libvirtError, ValueError):
            continue  # a device that went away meanwhile, or a name of another form
    return frozenset(out)
