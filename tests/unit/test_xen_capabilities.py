"""Plan-time errors for Xen guest types a host cannot run (pure: capabilities given)."""

from __future__ import annotations

from controller.model.state import HostCapabilities, HostState
from controller.plan.actions import DefineGuest, UploadFile
from controller.plan.context import PlanOptions
from controller.plan.planner import plan_host
from controller.spec.models import Guest, Host
from controller.spec.specset import Located, SpecSet
from controller.spec.yaml_reader import Document


def _specs(mode: str) -> SpecSet:
    host = Host.model_validate({"apiVersion": "virtsync/v1", "kind": "Host", "metadata": {"name": "xen1"},
                                "spec": {"uri": "xen+tcp://127.0.0.1:1/system"}})
    guest = Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                  "spec": {"host": "xen1", "xen": {"mode": mode}, "memory": "256MiB"}})
    doc = Document(None, (1, 1))
    return SpecSet((Located(host, "x.yaml", doc), Located(guest, "x.yaml", doc)))


def _state(types: tuple[str, ...]) -> HostState:
    caps = HostCapabilities(driver="Xen", virt_type="xen", snapshots=False, guest_types=types)
    return HostState("xen1", "xen+tcp://127.0.0.1:1/system", caps)


def test_plan_refuses_hvm_guests_on_a_xen_host_without_hvm() -> None:
    hp = plan_host(_specs("hvm"), _state(("xen", "xenpvh")), PlanOptions())
    assert [a for a in hp.actions if a.key.name == "g"] == []
    assert any("cannot run Xen HVM guests" in p.message and "xen1" in p.message for p in hp.errors)


def test_plan_creates_pv_guests_on_a_xen_host_with_pv() -> None:
    hp = plan_host(_specs("pv"), _state(("xen", "xenpvh")), PlanOptions())
    assert not hp.errors
    assert any(isinstance(a, DefineGuest) and a.key.name == "g" for a in hp.actions)


def test_plan_refuses_pvh_guests_where_the_host_lists_no_pvh() -> None:
    hp = plan_host(_specs("pvh"), _state(("xen",)), PlanOptions())
    assert any("cannot run Xen PVH guests" in p.message for p in hp.errors)


def test_boot_files_with_a_pool_are_uploaded_before_the_guest_is_defined() -> None:
    from controller.hypervisor.domain_xml import WriteContext, new_guest_xml
    from controller.model.state import ObservedPool, Owner
    from controller.spec.models import StoragePool

    host = Host.model_validate({"apiVersion": "virtsync/v1", "kind": "Host", "metadata": {"name": "xen1"},
                                "spec": {"uri": "xen+tcp://127.0.0.1:1/system"}})
    pool = StoragePool.model_validate({"apiVersion": "virtsync/v1", "kind": "StoragePool",
                                       "metadata": {"name": "boot"},
                                       "spec": {"host": "xen1", "path": "/var/lib/libvirt/images/boot"}})
    guest = Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                  "spec": {"host": "xen1", "xen": {"mode": "pv"}, "memory": "256MiB",
                                           "boot": {"pool": "boot", "kernel": "/srv/k/vmlinuz",
                                                    "initrd": "/srv/k/initrd.img", "cmdline": "console=hvc0"}}})
    doc = Document(None, (1, 1))
    specs = SpecSet(tuple(Located(o, "x.yaml", doc) for o in (host, pool, guest)))
    state = HostState("xen1", "u", HostCapabilities(driver="Xen", virt_type="xen", snapshots=False,
                                                    guest_types=("xen",)),
                      pools={"boot": ObservedPool("boot", "u", "dir", "/var/lib/libvirt/images/boot", True, True,
                                                  Owner("default", "StoragePool", "boot"))})
    hp = plan_host(specs, state, PlanOptions())
    uploads = [a for a in hp.actions if isinstance(a, UploadFile)]
    assert {a.volume for a in uploads} == {"boot-g-vmlinuz", "boot-g-initrd.img"}
    define = next(a for a in hp.actions if isinstance(a, DefineGuest))
    assert all(a.phase < define.phase for a in uploads)
    assert sorted(define.needs) == sorted(f"Volume/{a.key.name}" for a in uploads)
    xml = new_guest_xml("g", guest.spec, WriteContext("xen", {"boot": "/var/lib/libvirt/images/boot"},
                                                      Owner("default", "Guest", "g")))
    assert "<kernel>/var/lib/libvirt/images/boot/boot-g-vmlinuz</kernel>" in xml
