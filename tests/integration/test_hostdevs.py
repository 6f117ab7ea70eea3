"""Host device passthrough is refused at plan time, naming the host and the reason, where the
host has no VFIO or does not list the device; nothing reaches the host then."""

from __future__ import annotations

from pathlib import Path

from controller.model.state import DeviceSupport, HostCapabilities, HostState
from controller.plan.context import PlanOptions
from controller.plan.guests import plan_guest
from controller.spec.models import Guest
from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs

KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)


def _guest(*hostdevs: dict[str, object]) -> Guest:
    return Guest.model_validate(guest_doc("g", host="h1", hostdevs=list(hostdevs)))


def _problems(guest: Guest, caps: HostCapabilities) -> list[str]:
    out = plan_guest(guest, HostState("h1", "qemu:///system", caps), PlanOptions())
    return [p.message for p in out.problems if p.severity == "error"]


def test_the_test_driver_has_no_vfio_and_the_plan_says_so(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("g", hostdevs=[{"pci": "0000:03:00.0"}])])
    run = virtsync("plan", specs)
    assert run.code == 1
    assert "host kvm1 (Test) cannot pass devices through: it has no VFIO" in run.out + run.err
    assert virtsync("apply", specs, "--yes").code == 1
    assert connection(uri).listAllDomains(0) == [], "nothing was defined"


def test_a_host_without_vfio_is_refused_even_when_it_lists_the_device() -> None:
    caps = HostCapabilities("QEMU", "kvm", 9_000_000, devices=DeviceSupport(
        vfio=False, node_devices=frozenset({"pci 0000:03:00.0"})))
    [why] = _problems(_guest({"pci": "0000:03:00.0"}), caps)
    assert "host h1 (QEMU) cannot pass devices through: it has no VFIO" in why


def test_a_device_the_host_does_not_list_is_refused_by_its_address() -> None:
    caps = HostCapabilities("QEMU", "kvm", 9_000_000, devices=DeviceSupport(
        vfio=True, node_devices=frozenset({"pci 0000:03:00.0", "usb 0x046d:0xc52b"})))
    [why] = _problems(_guest({"pci": "0000:03:00.0"}, {"pci": "0000:04:00.0"}), caps)
    assert why == "host h1 lists no such device: pci 0000:04:00.0 (virsh nodedev-list)"


def test_listed_devices_on_a_vfio_host_are_planned_with_the_guest() -> None:
    caps = HostCapabilities("QEMU", "kvm", 9_000_000, devices=DeviceSupport(
        vfio=True, node_devices=frozenset({"pci 0000:03:00.0", "usb 0x046d:0xc52b"})))
    guest = _guest({"pci": "0000:03:00.0"}, {"usb": {"vendor": "0x046D", "product": "0xC52B"}})
    out = plan_guest(guest, HostState("h1", "qemu:///system", caps), PlanOptions())
    assert out.problems == [] and [a.op for a in out.actions][:1] == ["define"]
