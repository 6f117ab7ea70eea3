"""A Secret export writes for a host's libvirt secret: optional, its value file still to be written.
Until the value exists the Secret has none, and no plan defines, overwrites or deletes the host's
secret from it; where the host has no such secret, using it is refused."""

from __future__ import annotations

import json
from pathlib import Path

from controller.model.state import HostCapabilities, HostState, ObservedSecret
from controller.plan.context import PlanOptions
from controller.plan.secrets import plan_secrets
from controller.spec.loader import load_specs
from controller.spec.secrets import libvirt_secret_uuid

KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)


def _load(tmp_path: Path, optional: bool = True) -> object:
    docs = [
        {"apiVersion": "virtsync/v1", "kind": "Host", "metadata": {"name": "h1"}, "spec": {"uri": "qemu:///system"}},
        {"apiVersion": "virtsync/v1", "kind": "Secret", "metadata": {"name": "tpmkey"},
         "spec": {"fromFile": "tpmkey.secret", "libvirt": {"usage": "vtpm", "id": "tpmkey"},
                  **({"optional": True} if optional else {})}},
        {"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
         "spec": {"host": "h1", "tpm": {"model": "tpm-crb", "encryptionSecretRef": "tpmkey"}}},
    ]
    path = tmp_path / "specs.yaml"
    path.write_text("".join(f"---\n{json.dumps(d)}\n" for d in docs))
    return load_specs([str(path)])


def _host(secrets: dict[str, ObservedSecret]) -> HostState:
    return HostState("h1", "qemu:///system", KVM, secrets=secrets)


def test_an_optional_secret_without_its_file_loads_without_a_value(tmp_path: Path) -> None:
    result = _load(tmp_path)
    assert not result.errors, result.errors  # type: ignore[attr-defined]
    secret = next(i.obj for i in result.specs.items if i.obj.kind == "Secret")  # type: ignore[attr-defined]
    assert secret.secret_value is None


def test_a_missing_value_file_is_still_an_error_unless_optional(tmp_path: Path) -> None:
    result = _load(tmp_path, optional=False)
    assert any("cannot read tpmkey.secret" in str(e) for e in result.errors), result.errors  # type: ignore[attr-defined]


def test_the_hosts_secret_is_left_as_it_is_while_the_secret_has_no_value(tmp_path: Path) -> None:
    specs = _load(tmp_path).specs  # type: ignore[attr-defined]
    # the host's secret, made by virtsync from this Secret, with some value's digest
    obs = ObservedSecret(libvirt_secret_uuid("tpmkey"), "vtpm", "tpmkey", "default", "tpmkey", "sha256:old")
    plan = plan_secrets(specs, _host({"vtpm:tpmkey": obs}), PlanOptions())
    assert plan.actions == [] and plan.problems == []
    assert [d.status for d in plan.drift] == ["in-sync"]


def test_a_secret_without_a_value_is_not_defined_where_the_host_lacks_it(tmp_path: Path) -> None:
    plan = plan_secrets(_load(tmp_path).specs, _host({}), PlanOptions())  # type: ignore[attr-defined]
    assert plan.actions == []
    assert [p.message for p in plan.problems] == [
        "Secret tpmkey has no value yet (optional, tpmkey.secret not there): it cannot be defined on host h1; "
        "give it its value first"]


def test_once_the_value_file_is_written_the_secret_is_set_from_it(tmp_path: Path) -> None:
    (tmp_path / "tpmkey.secret").write_text("s3cret\n")
    plan = plan_secrets(_load(tmp_path).specs, _host({}), PlanOptions())  # type: ignore[attr-defined]
    assert [a.op for a in plan.actions] == ["define-secret"], plan.actions


def test_export_writes_a_reference_per_host_secret_and_names_the_ones_virtsync_made_by_their_secret() -> None:
    from controller.hypervisor.export import secret_docs

    ours = ObservedSecret(libvirt_secret_uuid("tpmkey"), "vtpm", "tpmkey", "default", "tpmkey", "sha256:x")
    foreign = ObservedSecret("3f2e1d0c-9b8a-4766-a5b4-c3d2e1f0a9b8", "ceph", "client.nova secret")
    other = ObservedSecret("9a8b7c6d-0000-4000-8000-000000000001", "ceph", "client.nova secret", "other", "k")
    observed = {"vtpm:tpmkey": ours, "ceph:client.nova secret": foreign, "x": other}
    docs = secret_docs(observed, "h1", "default", set(), everything=True)
    names = [d["metadata"]["name"] for d, _ in docs]
    assert names == ["ceph-client.nova-secret", "ceph-client.nova-secret-2", "tpmkey"]
    doc, notes = docs[0]
    assert doc["spec"] == {"fromFile": "ceph-client.nova-secret.secret", "optional": True,
                           "libvirt": {"usage": "ceph", "id": "client.nova secret"}}
    assert any("never exported" in n for n in notes) and any("not made by virtsync" in n for n in notes)
    assert not any("not made by virtsync" in n for n in docs[2][1])
    # without --all only the Secrets the exported objects name
    assert [d["metadata"]["name"] for d, _ in secret_docs(observed, "h1", "default", {"tpmkey"}, False)] == ["tpmkey"]


def test_a_vtpm_encrypted_with_a_secret_virtsync_made_is_exported_naming_that_secret() -> None:
    from controller.hypervisor.export import guest_spec
    from controller.model.state import GuestConfig, ObservedGuest

    uuid = libvirt_secret_uuid("tpmkey")
    cfg = GuestConfig(uuid="0b7c9e4e-0000-4000-8000-000000000001", virt_type="kvm", vcpus=1, max_vcpus=1,
                      memory=64 << 20, max_memory=64 << 20,
                      tpm={"model": "tpm-crb", "version": "2.0", "encryption": uuid})
    g = ObservedGuest("g", cfg.uuid, "stopped", -1, cfg, None, False, None)
    spec = guest_spec("h1", g, True, secret_names={uuid: "tpmkey"})
    assert spec["tpm"] == {"model": "tpm-crb", "version": "2.0", "encryptionSecretRef": "tpmkey"}
    assert guest_spec("h1", g, True)["tpm"] == {"model": "tpm-crb", "version": "2.0"}  # a secret not ours
