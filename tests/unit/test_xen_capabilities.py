"""Plan-time errors for Xen guest types a host cannot run (pure: capabilities given)."""

from __future__ import annotations

from controller.model.state import HostCapabilities, HostState
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
    assert any(a.op == "define" and a.key.name == "g" for a in hp.actions)


def test_plan_refuses_pvh_guests_where_the_host_lists_no_pvh() -> None:
    hp = plan_host(_specs("pvh"), _state(("xen",)), PlanOptions())
    assert any("cannot run Xen PVH guests" in p.message for p in hp.errors)
