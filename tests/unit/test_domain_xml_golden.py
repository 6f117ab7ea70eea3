"""Domain XML rendering against golden files (tests/unit/golden/*.xml).

Run `pytest --update-golden` to rewrite them after a deliberate change, then review the diff; a
missing golden file fails (it is never written on its own).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.hypervisor.domain_xml import WriteContext, new_guest_xml
from controller.model.state import Owner
from controller.spec.models import Guest
from tests.golden import assert_golden

GOLDEN = Path(__file__).parent / "golden"
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_matches_its_golden_file(case: str, update_golden: bool) -> None:
    virt, spec = CASES[case]
    guest = _guest(spec)
    ctx = WriteContext(virt_type=virt, pool_paths={"p": "/var/lib/libvirt/images/p"}, owner=OWNER,
                       uuid="6c1f4b52-2d2e-4f0e-9a51-1b2c3d4e5f60")
    xml = new_guest_xml("g", guest.spec, ctx)
    assert_golden(GOLDEN / f"{case}.xml", xml, update_golden)


def test_a_missing_golden_file_fails_and_is_not_written(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    with pytest.raises(pytest.fail.Exception, match="missing"):
        assert_golden(missing, "<domain/>", update=False)
    assert not missing.exists()
    assert_golden(missing, "<domain/>", update=True)
    assert_golden(missing, "<domain/>", update=False)
