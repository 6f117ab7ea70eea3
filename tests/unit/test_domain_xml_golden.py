"""Domain XML rendering against golden files (tests/unit/golden/*.xml).

Run `pytest --update-golden` to rewrite them after a deliberate change, then review the diff; a
missing golden file fails (it is never written on its own).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lxml import etree

from controller.hypervisor.domain_xml import WriteContext, new_guest_xml
from controller.model.state import Owner
from controller.spec.loader import load_specs
from controller.spec.models import Guest
from tests.golden import assert_golden

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OWNER = Owner(instance="default", kind="Guest", name="g", digest="sha256:0", applied={})


def _guest(spec: dict[str, object]) -> Guest:
    return Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                 "spec": {"host": "h", **spec}})


CASES = {
    "kvm-bios-disk-nic": ("kvm", {"memory": "1GiB", "vcpus": 2, "maxVcpus": 4,
                                  "disks": [{"name": "root", "pool": "p", "size": "10GiB"}],
                                  "interfaces": [{"network": "lab", "mac": "52:54:00:00:00:01"}],
                                  "graphics": {"type": "vnc"}, "agent": True}),
    "kvm-uefi": ("kvm", {"firmware": "uefi", "machine": "q35"}),
    "xen-pv": ("xen", {"xen": {"mode": "pv"}, "memory": "256MiB",
                       "boot": {"kernel": "/var/lib/libvirt/boot/vmlinuz", "initrd": "/var/lib/libvirt/boot/initrd.img",
                                "cmdline": "console=hvc0"},
                       "disks": [{"name": "root", "pool": "p", "size": "1GiB"}],
                       "interfaces": [{"network": "xennat", "mac": "00:16:3e:00:00:01", "model": "netfront"}]}),
    "xen-hvm": ("xen", {"xen": {"mode": "hvm"}, "memory": "1GiB",
                        "disks": [{"name": "root", "pool": "p", "size": "10GiB"}]}),
    "xen-pvh": ("xen", {"xen": {"mode": "pvh"}, "memory": "512MiB",
                        "boot": {"kernel": "/var/lib/libvirt/boot/vmlinuz", "cmdline": "console=hvc0"}}),
    "kvm-devices": ("kvm", {"machine": "q35", "tpm": {"model": "tpm-tis"},
                            "filesystems": [{"source": "/srv/share", "target": "share"},
                                            {"source": "/srv/ro", "target": "ro", "readonly": True}],
                            "serial": {"type": "pty"}, "console": {"target": "virtio"},
                            "watchdog": {"model": "i6300esb", "action": "poweroff"}, "rng": {"backend": "builtin"},
                            "panic": {"model": "isa"},
                            "input": [{"type": "tablet"}, {"type": "keyboard", "bus": "virtio"}],
                            "graphics": {"type": "vnc"}, "video": {"model": "vga"},
                            "sysinfo": {"system": {"manufacturer": "ACME", "product": "Lab", "serial": "42"},
                                        "baseBoard": {"manufacturer": "ACME"}}}),
    "hostdev-pci": ("kvm", {"hostdevs": [{"pci": "0000:03:00.0"}]}),
    "hostdev-usb": ("kvm", {"hostdevs": [{"usb": {"vendor": "0x046d", "product": "0xC52B"}}]}),
    "hostdev-mdev": ("kvm", {"hostdevs": [{"mdev": "4b20d080-1b54-4048-85b3-a6a62d165c01"}]}),
}


def _example(path: Path, name: str) -> Guest:
    result = load_specs([str(path)])
    assert not result.errors, result.errors
    return next(i.obj for i in result.specs.items if isinstance(i.obj, Guest) and i.obj.metadata.name == name)


def _validate_with_libvirt(xml: str, tmp_path: Path) -> None:
    """libvirt's own RNG schema accepts the document (virt-xml-validate, libvirt-clients)."""
    doc = tmp_path / "domain.xml"
    doc.write_text(xml)
    run = subprocess.run(["virt-xml-validate", str(doc), "domain"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr + run.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_matches_its_golden_file(case: str, update_golden: bool, tmp_path: Path) -> None:
    virt, spec = CASES[case]
    guest = _guest(spec)
    ctx = WriteContext(virt_type=virt, pool_paths={"p": "/var/lib/libvirt/images/p"}, owner=OWNER,
                       uuid="6c1f4b52-2d2e-4f0e-9a51-1b2c3d4e5f60")
    xml = new_guest_xml("g", guest.spec, ctx)
    assert_golden(GOLDEN / f"{case}.xml", xml, update_golden)
    if virt != "xen":  # libxl's documents carry Xen paths the schema check has no need of
        _validate_with_libvirt(xml, tmp_path)


def test_the_windows_example_matches_its_golden_file_and_libvirts_schema(update_golden: bool, tmp_path: Path) -> None:
    guest = _example(EXAMPLES / "windows", "win11")
    ctx = WriteContext(virt_type="kvm", pool_paths={"windows": "/var/lib/libvirt/images/windows"}, owner=OWNER,
                       uuid="6c1f4b52-2d2e-4f0e-9a51-1b2c3d4e5f60")
    xml = new_guest_xml("win11", guest.spec, ctx)
    assert_golden(GOLDEN / "windows-example.xml", xml, update_golden)
    _validate_with_libvirt(xml, tmp_path)
    root = etree.fromstring(xml.encode())
    # what Windows 11 needs, spelled out so a golden update cannot drop it unnoticed
    assert root.find("os/firmware/feature[@name='secure-boot']").get("enabled") == "yes"  # type: ignore[union-attr]
    assert root.find("features/smm").get("state") == "on"  # type: ignore[union-attr]
    assert root.find("devices/tpm").get("model") == "tpm-crb"  # type: ignore[union-attr]
    assert root.find("features/hyperv/spinlocks").get("retries") == "8191"  # type: ignore[union-attr]
    assert root.find("clock").get("offset") == "localtime"  # type: ignore[union-attr]
    assert {d.find("target").get("bus") for d in root.findall("devices/disk")} == {"scsi", "sata"}  # type: ignore[union-attr]
    assert root.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"  # type: ignore[union-attr]
    assert {d.find("driver").get("type") for d in root.findall("devices/disk[@device='cdrom']")} == {"raw"}  # type: ignore[union-attr]


def test_a_missing_golden_file_fails_and_is_not_written(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    with pytest.raises(pytest.fail.Exception, match="missing"):
        assert_golden(missing, "<domain/>", update=False)
    assert not missing.exists()
    assert_golden(missing, "<domain/>", update=True)
    assert_golden(missing, "<domain/>", update=False)


def test_a_machine_family_change_drops_the_old_machines_controllers_and_addresses() -> None:
    from controller.hypervisor.domain_xml import update_guest_xml

    old = _guest({"machine": "pc", "hostdevs": [{"pci": "0000:03:00.0"}]})
    ctx = WriteContext(virt_type="kvm", pool_paths={}, owner=OWNER, uuid="6c1f4b52-2d2e-4f0e-9a51-1b2c3d4e5f60")
    root = etree.fromstring(new_guest_xml("g", old.spec, ctx).encode())
    devices = root.find("devices")
    assert devices is not None
    etree.SubElement(devices, "controller", type="pci", index="0", model="pci-root")
    etree.SubElement(etree.SubElement(devices, "watchdog", model="i6300esb"), "address", type="pci", slot="0x05")
    xml = update_guest_xml(etree.tostring(root, encoding="unicode"), "g", _guest({"machine": "q35"}).spec, ctx,
                           ["machine"])
    new = etree.fromstring(xml.encode())
    assert new.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    assert new.find("devices/controller[@type='pci']") is None, "pci-root does not fit q35: libvirt adds pcie-root"
    assert new.find("devices/watchdog") is not None and new.find("devices/watchdog/address") is None
    assert new.find("devices/hostdev/source/address") is not None, "a passed-through device's host address stays"
