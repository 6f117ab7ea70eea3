"""What a connected host can do, probed once per connection."""

from __future__ import annotations

import libvirt

from controller.fields.xmlutil import parse
from controller.hypervisor.errors import libvirt_call
from controller.model.state import HostCapabilities


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
    if driver == "Test":
        return HostCapabilities(driver="Test", virt_type="test", libvirt_version=version,
                                hotplug=False, block_resize=False)
    if driver == "Xen":
        return HostCapabilities(driver="Xen", virt_type="xen", libvirt_version=version,
                                snapshots=False, block_resize=False, guest_types=guest_types,
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
    )
