"""Planning for guests that crashed, that QEMU paused on an internal error, or that are paused
on a full disk (pure: libvirt's state reason comes in the observed guest)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.hypervisor.domain_xml import WriteContext, new_guest_xml, read_guest
from controller.model.state import (
    GuestFault,
    HostCapabilities,
    HostState,
    ObservedGuest,
    ObservedPool,
    ObservedVolume,
    Owner,
)
from controller.plan.actions import Recover, Restart, Resume, Start, UpdateGuest
from controller.plan.context import PlanOptions
from controller.plan.guests import MIN_HEADROOM, plan_guest
from controller.spec.models import Guest

KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)
OWNER = Owner("default", "Guest", "g")
MiB = 1024**2
DISK_PATH = "/pools/small/g-root.qcow2"


def _guest(**spec: Any) -> Guest:
    return Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                 "spec": {"host": "h1", "memory": "128MiB", **spec}})


def _observed(guest: Guest, state: str, reason: str, fault: GuestFault | None,
              disk_errors: tuple[tuple[str, str, str], ...] = ()) -> ObservedGuest:
    xml = new_guest_xml("g", guest.spec, WriteContext("kvm", {}, OWNER, None))
    name, uuid, cfg, owner = read_guest(xml)
    active = state in ("running", "paused", "other")
    return ObservedGuest(name, uuid, state, 3 if active else -1, cfg, cfg if active else None,  # type: ignore[arg-type]
                         False, owner, xml, reason=reason, fault=fault, disk_errors=disk_errors)


def _host(obs: ObservedGuest, available: int | None = None, capacity: int = 64 * MiB,
          allocation: int = 8 * MiB) -> HostState:
    vol = ObservedVolume("small", "g-root.qcow2", DISK_PATH, capacity, "qcow2", allocation)
    pool = ObservedPool("small", "u", "dir", "/pools/small", True, False, None, {vol.name: vol},
                        available=available)
    return HostState("h1", "qemu:///system", KVM, {"g": obs}, pools={"small": pool})


CRASHES = [
    ("other", "crashed (the guest panicked)"),
    ("paused", "paused (the guest crashed)"),
]
UNKNOWN = "paused by QEMU for a reason libvirt does not know (an internal error, or a stop sent past libvirt)"


@pytest.mark.parametrize(("state", "reason"), CRASHES)
def test_a_crashed_guest_is_destroyed_and_started_not_resumed(state: str, reason: str) -> None:
    guest = _guest()
    out = plan_guest(guest, _host(_observed(guest, state, reason, "crashed")), PlanOptions())
    assert [type(a) for a in out.actions] == [Recover], [a.as_json() for a in out.actions]
    recover = out.actions[0]
    assert isinstance(recover, Recover) and not recover.paused
    assert reason in recover.reason and "crashPolicy: restart" in recover.reason
    assert recover.fault == reason
    state_drift = [c for c in out.drift if c.path == "/spec/state"]
    assert state_drift and state_drift[0].note == reason and state_drift[0].desired == "running"
    assert not out.problems


def test_a_guest_qemu_paused_for_an_unknown_reason_is_resumed_else_destroyed_and_started() -> None:
    guest = _guest()
    out = plan_guest(guest, _host(_observed(guest, "paused", UNKNOWN, "unknown-pause")), PlanOptions())
    assert [type(a) for a in out.actions] == [Recover]
    recover = out.actions[0]
    assert isinstance(recover, Recover) and recover.resume_first
    assert UNKNOWN in recover.reason and "resume it, else destroy and start it" in recover.reason
    report = plan_guest(_guest(crashPolicy="report"), _host(_observed(guest, "paused", UNKNOWN, "unknown-pause")),
                        PlanOptions())
    assert report.actions == [] and UNKNOWN in report.problems[0].message
    paused = plan_guest(_guest(state="paused"), _host(_observed(guest, "paused", UNKNOWN, "unknown-pause")),
                        PlanOptions())
    assert paused.actions == [] and not paused.problems


def test_a_guest_shut_off_by_its_crash_is_started_with_the_reason_said() -> None:
    guest = _guest()
    out = plan_guest(guest, _host(_observed(guest, "stopped", "shut off (it crashed)", "crashed")), PlanOptions())
    assert [type(a) for a in out.actions] == [Recover]
    assert "shut off (it crashed)" in out.actions[0].reason


def test_a_crashed_guest_wanted_paused_comes_back_paused() -> None:
    guest = _guest(state="paused")
    out = plan_guest(guest, _host(_observed(guest, "other", "crashed", "crashed")), PlanOptions())
    assert [type(a) for a in out.actions] == [Recover]
    assert isinstance(out.actions[0], Recover) and out.actions[0].paused


def test_crash_policy_report_only_reports_the_crash() -> None:
    guest = _guest(crashPolicy="report")
    out = plan_guest(guest, _host(_observed(guest, "paused", "paused (the guest crashed)", "crashed")),
                     PlanOptions())
    assert out.actions == []
    assert [p.severity for p in out.problems] == ["warning"]
    assert "paused (the guest crashed)" in out.problems[0].message
    assert "crashPolicy report" in out.problems[0].message
    assert any(c.path == "/spec/state" for c in out.drift)


def test_a_guest_the_spec_stops_is_not_recovered() -> None:
    guest = _guest(state="stopped")
    out = plan_guest(guest, _host(_observed(guest, "stopped", "shut off (it crashed)", "crashed")), PlanOptions())
    assert out.actions == [] and not out.drift


def test_a_user_pause_is_still_resumed() -> None:
    guest = _guest()
    out = plan_guest(guest, _host(_observed(guest, "paused", "paused (by a user)", None)), PlanOptions())
    assert [type(a) for a in out.actions] == [Resume]


def test_a_crashed_guest_gets_no_live_call_and_its_recovery_boots_the_new_definition() -> None:
    before, after = _guest(), _guest(memory="96MiB", restartPolicy="onChange")
    out = plan_guest(after, _host(_observed(before, "paused", "paused (the guest crashed)", "crashed")),
                     PlanOptions())
    kinds = [type(a) for a in out.actions]
    assert Recover in kinds and Restart not in kinds and Resume not in kinds, kinds
    update = next(a for a in out.actions if isinstance(a, UpdateGuest))
    assert update.live == (), update.live  # a broken QEMU takes no balloon call


# ------------------------------------------------------------------ paused on a full disk

FULL = (("vda", DISK_PATH, "no-space"),)


def test_a_guest_paused_on_a_full_pool_stays_paused_and_says_what_it_needs() -> None:
    guest = _guest()
    obs = _observed(guest, "paused", "paused (a disk I/O error)", "io-error", FULL)
    out = plan_guest(guest, _host(obs, available=1 * MiB), PlanOptions())
    assert out.actions == []
    assert [p.severity for p in out.problems] == ["warning"]
    msg = out.problems[0].message
    assert "paused (a disk I/O error)" in msg and "pool small" in msg
    assert f"{56 * MiB} bytes" in msg and f"{1 * MiB} bytes" in msg, msg  # needed, free


def test_a_guest_paused_on_a_full_pool_is_resumed_once_the_pool_has_room() -> None:
    guest = _guest()
    obs = _observed(guest, "paused", "paused (a disk I/O error)", "io-error", FULL)
    out = plan_guest(guest, _host(obs, available=56 * MiB), PlanOptions())
    assert [type(a) for a in out.actions] == [Resume]
    assert "space is back" in out.actions[0].reason and "pool small" in out.actions[0].reason
    assert not out.problems


def test_a_fully_allocated_disk_still_wants_some_headroom() -> None:
    guest = _guest()
    obs = _observed(guest, "paused", "paused (a disk I/O error)", "io-error", FULL)
    short = plan_guest(guest, _host(obs, available=MIN_HEADROOM - 1, allocation=64 * MiB), PlanOptions())
    assert short.actions == []
    room = plan_guest(guest, _host(obs, available=MIN_HEADROOM, allocation=64 * MiB), PlanOptions())
    assert [type(a) for a in room.actions] == [Resume]


@pytest.mark.parametrize(("errors", "words"), [
    ((("vda", DISK_PATH, "error"),), "not a full disk"),
    ((("vdb", "/elsewhere/x.img", "no-space"),), "in no pool"),
    ((), "names no disk"),
])
def test_other_io_errors_are_left_to_the_operator(errors: tuple[tuple[str, str, str], ...], words: str) -> None:
    guest = _guest()
    obs = _observed(guest, "paused", "paused (a disk I/O error)", "io-error", errors)
    out = plan_guest(guest, _host(obs, available=10**12), PlanOptions())
    assert out.actions == []
    assert words in out.problems[0].message


def test_an_io_error_pause_of_a_guest_wanted_paused_is_left_alone() -> None:
    guest = _guest(state="paused")
    obs = _observed(guest, "paused", "paused (a disk I/O error)", "io-error", FULL)
    out = plan_guest(guest, _host(obs, available=1), PlanOptions())
    assert out.actions == [] and not out.problems


def test_reconcile_report_shows_the_crash_as_drift_only() -> None:
    guest = _guest(reconcile="report")
    out = plan_guest(guest, _host(_observed(guest, "other", "crashed", "crashed")), PlanOptions())
    assert out.actions == []
    assert any(c.path == "/spec/state" and c.note == "crashed" for c in out.drift)


def test_ignoring_the_state_ignores_the_fault_too() -> None:
    guest = _guest(ignore=["/spec/state"])
    out = plan_guest(guest, _host(_observed(guest, "other", "crashed", "crashed")), PlanOptions())
    assert not any(isinstance(a, Recover | Start) for a in out.actions)


def test_the_recovery_is_a_typed_plan_action_in_json() -> None:
    guest = _guest()
    out = plan_guest(guest, _host(_observed(guest, "other", "crashed (the guest panicked)", "crashed")),
                     PlanOptions())
    doc = out.actions[0].as_json()
    assert doc["op"] == "recover"
    assert doc["args"] == {"fault": "crashed (the guest panicked)", "paused": False, "resume_first": False}
