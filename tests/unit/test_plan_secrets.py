"""Planning libvirt secret objects from kind: Secret: made where referenced, a new value by
digest, foreign ones refused, unused owned ones pruned; never a value in an action."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.model.state import HostCapabilities, HostState, ObservedSecret
from controller.plan.actions import DefineSecret, DeleteSecret
from controller.plan.context import PlanOptions
from controller.plan.secrets import plan_secrets
from controller.spec.loader import load_specs
from controller.spec.secrets import libvirt_secret_uuid, secret_digest
from controller.spec.specset import SpecSet

KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)
VALUE = "tpm-key-0123456789"


def _specs(tmp_path: Path, referenced: bool = True, usage: str = "vtpm") -> SpecSet:
    tpm: dict[str, Any] = {"model": "tpm-crb"}
    if referenced:
        tpm["encryptionSecretRef"] = "tpmkey"
    docs = [
        {"apiVersion": "virtsync/v1", "kind": "Host", "metadata": {"name": "h1"}, "spec": {"uri": "qemu:///system"}},
        {"apiVersion": "virtsync/v1", "kind": "Secret", "metadata": {"name": "tpmkey"},
         "spec": {"fromFile": "key.txt", "libvirt": {"usage": usage}}},
        {"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"}, "spec": {"host": "h1", "tpm": tpm}},
    ]
    (tmp_path / "key.txt").write_text(VALUE + "\n")
    path = tmp_path / "specs.yaml"
    path.write_text("".join(f"---\n{json.dumps(d)}\n" for d in docs))
    result = load_specs([str(path)])
    assert not result.errors, result.errors
    return result.specs


def _host(secrets: dict[str, ObservedSecret] | None) -> HostState:
    return HostState("h1", "qemu:///system", KVM, secrets=secrets)


def test_a_referenced_secret_is_defined_before_anything_with_its_digest_only(tmp_path: Path) -> None:
    plan = plan_secrets(_specs(tmp_path), _host({}), PlanOptions())
    assert [type(a) for a in plan.actions] == [DefineSecret]
    action = plan.actions[0]
    assert isinstance(action, DefineSecret)
    assert action.uuid == libvirt_secret_uuid("tpmkey") and action.usage_id == "virtsync-tpmkey"
    assert action.digest == secret_digest(VALUE)
    assert VALUE not in json.dumps(action.as_json())


def test_an_unreferenced_secret_is_not_defined(tmp_path: Path) -> None:
    assert plan_secrets(_specs(tmp_path, referenced=False), _host({}), PlanOptions()).actions == []


def test_the_same_digest_is_in_sync_and_a_new_value_is_a_live_update(tmp_path: Path) -> None:
    uuid = libvirt_secret_uuid("tpmkey")
    same = ObservedSecret(uuid, "vtpm", "virtsync-tpmkey", "default", "tpmkey", secret_digest(VALUE))
    assert plan_secrets(_specs(tmp_path), _host({"vtpm:virtsync-tpmkey": same}), PlanOptions()).actions == []
    old = ObservedSecret(uuid, "vtpm", "virtsync-tpmkey", "default", "tpmkey", secret_digest("old"))
    plan = plan_secrets(_specs(tmp_path), _host({"vtpm:virtsync-tpmkey": old}), PlanOptions())
    assert len(plan.actions) == 1 and isinstance(plan.actions[0], DefineSecret) and plan.actions[0].exists


def test_a_secret_of_that_usage_virtsync_does_not_own_is_refused(tmp_path: Path) -> None:
    foreign = ObservedSecret("0b7c9e4e-0000-4000-8000-000000000009", "vtpm", "virtsync-tpmkey")
    plan = plan_secrets(_specs(tmp_path), _host({"vtpm:virtsync-tpmkey": foreign}), PlanOptions())
    assert plan.actions == [] and "not virtsync's" in plan.problems[0].message


def test_a_host_without_a_secret_driver_is_refused_by_name(tmp_path: Path) -> None:
    plan = plan_secrets(_specs(tmp_path), _host(None), PlanOptions())
    assert plan.actions == [] and "has no libvirt secret driver" in plan.problems[0].message


def test_an_owned_secret_nothing_uses_is_deleted_only_with_prune(tmp_path: Path) -> None:
    gone = ObservedSecret(libvirt_secret_uuid("old"), "vtpm", "virtsync-old", "default", "old", "sha256:x")
    host = _host({"vtpm:virtsync-old": gone})
    assert [d.status for d in plan_secrets(_specs(tmp_path, referenced=False), host, PlanOptions()).drift] == ["extra"]
    assert plan_secrets(_specs(tmp_path, referenced=False), host, PlanOptions()).actions == []
    pruned = plan_secrets(_specs(tmp_path, referenced=False), host, PlanOptions(prune=True)).actions
    assert [type(a) for a in pruned] == [DeleteSecret]


def test_an_encrypted_tpm_needs_a_vtpm_secret(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"needs libvirt: \{usage: vtpm\}"):
        _specs(tmp_path, usage="ceph")
