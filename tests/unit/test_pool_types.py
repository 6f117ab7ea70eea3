"""Storage pools by type: the spec's per-type source checks (file:line:column), the XML of each
type against golden files and libvirt's own RNG schema, the host's pool capabilities parsed, and
the plan-time refusal of a type the host's libvirt has no backend for."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from controller.hypervisor.capabilities import parse_pool_types
from controller.hypervisor.export import pool_spec
from controller.hypervisor.pool_xml import pool_xml, read_pool, read_source
from controller.model.state import HostCapabilities, HostState, ObservedPool, Owner, pool_uuid
from controller.plan.context import PlanOptions
from controller.plan.storage import plan_pool
from controller.spec.loader import load_specs
from controller.spec.models import StoragePool, StoragePoolSpec
from controller.spec.secrets import libvirt_secret_uuid
from tests.golden import assert_golden

GOLDEN = Path(__file__).parent / "golden"
UUID = "0b3ff2b4-9a35-4a3c-8b8a-1d2c3e4f5a6b"

# One spec per pool type, with every source field the type takes.
CASES: dict[str, dict[str, Any]] = {
    "dir": {"path": "/var/lib/libvirt/images/d"},
    "fs": {"path": "/var/lib/libvirt/images/fs", "source": {"device": "/dev/loop0", "format": "ext4"},
           "build": True},
    "netfs": {"path": "/var/lib/libvirt/images/nfs",
              "source": {"host": "nfs.example.org", "dir": "/export/vm", "format": "nfs"}},
    "logical": {"source": {"name": "vg0", "devices": ["/dev/sdb", "/dev/sdc"], "format": "lvm2"}, "build": True},
    "iscsi": {"source": {"host": "10.0.0.5", "port": 3260, "target": "iqn.2026-01.dev.virtsync:lun",
                         "initiator": "iqn.2026-01.dev.virtsync:h1",
                         "auth": {"username": "chap-user", "secretRef": "chap"}}},
    "iscsi-direct": {"source": {"host": "127.0.0.1", "target": "iqn.2026-01.dev.virtsync:t1",
                                "initiator": "iqn.2026-01.dev.virtsync:i1",
                                "auth": {"username": "chap-user", "secretRef": "chap"}}},
    "rbd": {"source": {"name": "vms", "monitors": [{"host": "mon1.example.org", "port": 6789},
                                                   {"host": "mon2.example.org"}],
                       "auth": {"username": "libvirt", "secretRef": "ceph"}}},
    "disk": {"source": {"device": "/dev/sdd", "format": "gpt"}},
    "zfs": {"source": {"name": "tank", "devices": ["/dev/sde"]}},
}


def _spec(pool_type: str, **extra: Any) -> StoragePoolSpec:
    return StoragePoolSpec.model_validate({"host": "h1", "type": pool_type, **CASES[pool_type], **extra})


def _pool(pool_type: str) -> StoragePool:
    return StoragePool.model_validate({"apiVersion": "virtsync/v1", "kind": "StoragePool",
                                       "metadata": {"name": "p"}, "spec": {"host": "h1", "type": pool_type,
                                                                           **CASES[pool_type]}})


def test_every_type_has_a_case() -> None:
    from controller.spec.pool_sources import POOL_TYPES

    assert set(CASES) == set(POOL_TYPES)


@pytest.mark.parametrize("pool_type", sorted(CASES))
def test_pool_xml_of_each_type_matches_its_golden_file_and_libvirts_schema(
        pool_type: str, update_golden: bool, tmp_path: Path) -> None:
    xml = pool_xml("p", _spec(pool_type), uuid=UUID)
    assert_golden(GOLDEN / f"pool-{pool_type}.xml", xml, update_golden)
    doc = tmp_path / "pool.xml"
    doc.write_text(xml)
    run = subprocess.run(["virt-xml-validate", str(doc), "storagepool"], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr + run.stdout


@pytest.mark.parametrize("pool_type", sorted(CASES))
def test_the_source_written_reads_back_as_the_spec_and_exports_to_the_same_spec(pool_type: str) -> None:
    spec = _spec(pool_type)
    xml = pool_xml("p", spec, uuid=UUID)
    name, uuid, ptype, path = read_pool(xml)
    obs = ObservedPool(name, uuid, ptype, path, True, True, Owner("default", "StoragePool", "p"),
                       source=read_source(xml))
    exported = pool_spec("h1", obs, owned=True, secret_names={libvirt_secret_uuid("chap"): "chap",
                                                              libvirt_secret_uuid("ceph"): "ceph"})
    again = StoragePoolSpec.model_validate(exported)
    assert again.source == spec.source
    assert again.type == spec.type
    if spec.path is not None:
        assert again.path == spec.path
    # and the plan of the exported spec against what was written has nothing to do
    host = HostState("h1", "test:///x", HostCapabilities(driver="QEMU", virt_type="kvm"), pools={"p": obs})
    pool = StoragePool.model_validate({"apiVersion": "virtsync/v1", "kind": "StoragePool",
                                       "metadata": {"name": "p"}, "spec": exported})
    plan = plan_pool(pool, host, PlanOptions())
    assert (plan.actions, plan.problems) == ([], [])


def test_an_auth_secret_is_referenced_by_the_libvirt_uuid_of_the_kind_secret() -> None:
    xml = pool_xml("p", _spec("iscsi-direct"), uuid=UUID)
    assert f"<secret uuid=\"{libvirt_secret_uuid('chap')}\"/>" in xml
    assert 'type="chap" username="chap-user"' in xml
    rbd = pool_xml("p", _spec("rbd"), uuid=UUID)
    assert 'type="ceph" username="libvirt"' in rbd


def test_an_auth_secret_virtsync_did_not_make_is_exported_with_a_note_to_write_one() -> None:
    xml = pool_xml("p", _spec("rbd"), uuid=UUID)
    name, uuid, ptype, path = read_pool(xml)
    obs = ObservedPool(name, uuid, ptype, path, True, True, None, source=read_source(xml))
    notes: list[str] = []
    exported = pool_spec("h1", obs, owned=False, secret_names={}, notes=notes)
    assert exported["source"]["auth"]["secretRef"] == "FIXME"
    assert notes and "libvirt: {usage: ceph}" in notes[0]


# ------------------------------------------------------------------ spec errors, with their place


HOST_DOC = 'apiVersion: virtsync/v1\nkind: Host\nmetadata: {name: h1}\nspec: {uri: "test:///default"}\n---\n'


def _errors(tmp_path: Path, spec_yaml: str, monkeypatch: pytest.MonkeyPatch | None = None) -> list[str]:
    """``file:line:column: message`` of each error of the specs (a Host, then the pool)."""
    path = tmp_path / "pool.yaml"
    path.write_text(HOST_DOC + "apiVersion: virtsync/v1\nkind: StoragePool\nmetadata: {name: p}\nspec:\n"
                    "  host: h1\n" + spec_yaml)
    return [f"{Path(e.file).name}:{e.line}:{e.column}: {e.message}" for e in load_specs([str(path)]).errors]


IMG = "/var/lib/libvirt/images"


# The pool's spec starts at line 11 (the Host document and the envelope come first).
@pytest.mark.parametrize(("spec_yaml", "where", "message"), [
    (f"  type: netfs\n  path: {IMG}/nfs\n  source:\n    host: nfs1\n", "pool.yaml:14:5",
     "spec.source: a netfs pool needs source.dir"),
    ("  type: logical\n  source:\n    name: vg0\n    dir: /export\n", "pool.yaml:14:10",
     "spec.source.dir: a logical pool's source has no 'dir' (it is for netfs pools); a logical pool's "
     "source takes name, devices, format"),
    (f"  type: fs\n  path: {IMG}/fs\n", "pool.yaml:11:9", "spec.type: a fs pool needs source.device"),
    ("  type: rbd\n  path: /srv/rbd\n  source: {name: vms, monitors: [{host: m1}]}\n", "pool.yaml:12:9",
     "spec.path: a rbd pool has no path on the host"),
    (f"  type: fs\n  path: {IMG}/fs\n  source:\n    device: /dev/loop0\n    format: nfs\n", "pool.yaml:15:13",
     "spec.source.format: 'nfs' is not a fs pool format"),
    ("  type: iscsi\n  source:\n    host: h\n    target: iqn.x\n    portal: 1\n", "pool.yaml:15:5",
     "unknown field 'portal' in spec.source; did you mean 'port'?"),
    (f"  type: ceph\n  path: {IMG}/x\n", "pool.yaml:11:9", "spec.type: expected one of dir, fs, netfs, logical"),
])
def test_a_missing_or_foreign_source_field_is_named_at_its_line_and_column(
        tmp_path: Path, spec_yaml: str, where: str, message: str) -> None:
    errors = _errors(tmp_path, spec_yaml)
    assert errors, "the spec was accepted"
    assert len(errors) == 1 and errors[0].startswith(f"{where}: {message}"), errors


def test_an_auth_secret_ref_needs_a_secret_of_the_pools_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAP_PASSWORD", "pw")
    secret = "apiVersion: virtsync/v1\nkind: Secret\nmetadata: {name: chap}\nspec: {fromEnv: CHAP_PASSWORD, " \
             "libvirt: {usage: ceph}}\n---\n"
    (tmp_path / "secret.yaml").write_text(secret)
    errors = _errors(tmp_path, "  type: iscsi-direct\n  source:\n    host: 127.0.0.1\n"
                     "    target: iqn.2026-01.dev.virtsync:t1\n    initiator: iqn.2026-01.dev.virtsync:i1\n"
                     "    auth: {username: u, secretRef: chap}\n")
    assert errors == ["pool.yaml:16:36: no kind: Secret named 'chap' in the specs"], errors
    path = tmp_path / "pool.yaml"
    path.write_text(secret + path.read_text())
    got = [f"{Path(e.file).name}:{e.line}:{e.column}: {e.message}" for e in load_specs([str(path)]).errors]
    assert got == ["pool.yaml:21:36: Secret 'chap' authenticates a iscsi-direct pool: it needs libvirt: "
                   "{usage: iscsi}"], got


def test_build_defaults_to_true_only_for_dir_pools() -> None:
    assert _spec("dir").builds
    assert not StoragePoolSpec.model_validate({"host": "h", "type": "fs", "path": "/srv/x",
                                               "source": {"device": "/dev/loop0"}}).builds
    assert _spec("fs").builds  # the case says build: true
    assert not _spec("dir", build=False).builds


# ------------------------------------------------------------------ capabilities and the refusal

# The shape getStoragePoolCapabilities answers with (libvirt's storagepoolcaps.rng), trimmed.
POOL_CAPS = """<storagepoolCapabilities>
  <pool type='dir' supported='yes'><volOptions><defaultFormat type='raw'/></volOptions></pool>
  <pool type='fs' supported='yes'><poolOptions><defaultFormat type='auto'/></poolOptions></pool>
  <pool type='rbd' supported='no'/>
  <pool type='iscsi-direct' supported='no'/>
</storagepoolCapabilities>"""


def test_pool_capabilities_keep_only_the_supported_types() -> None:
    assert parse_pool_types(POOL_CAPS) == frozenset({"dir", "fs"})


def _host(pool_types: frozenset[str] | None) -> HostState:
    return HostState("h1", "qemu:///system", HostCapabilities(driver="QEMU", virt_type="kvm",
                                                              pool_types=pool_types), secrets={})


@pytest.mark.parametrize(("pool_type", "package"), [
    ("rbd", "libvirt-daemon-driver-storage-rbd"),
    ("iscsi-direct", "libvirt-daemon-driver-storage-iscsi-direct"),
    ("zfs", "libvirt-daemon-driver-storage-zfs"),
])
def test_a_type_the_host_cannot_do_is_refused_at_plan_time_naming_host_and_driver(
        pool_type: str, package: str) -> None:
    plan = plan_pool(_pool(pool_type), _host(parse_pool_types(POOL_CAPS)), PlanOptions())
    assert plan.actions == []
    assert [p.message for p in plan.problems] == [
        f"host h1 cannot make a {pool_type!r} pool: libvirt there has no {pool_type} storage driver ({package})"]


def test_a_supported_type_is_defined_and_a_host_that_does_not_say_refuses_nothing() -> None:
    assert [a.op for a in plan_pool(_pool("fs"), _host(parse_pool_types(POOL_CAPS)), PlanOptions()).actions] \
        == ["define-pool"]
    assert [a.op for a in plan_pool(_pool("rbd"), _host(None), PlanOptions()).actions] == ["define-pool"]


def test_a_changed_source_of_an_existing_pool_is_refused() -> None:
    spec = _spec("netfs")
    xml = pool_xml("p", spec, uuid=pool_uuid("default", "p"))
    name, uuid, ptype, path = read_pool(xml)
    obs = ObservedPool(name, uuid, ptype, path, True, True, Owner("default", "StoragePool", "p"),
                       source=read_source(xml))
    host = HostState("h1", "qemu:///system", HostCapabilities(driver="QEMU", virt_type="kvm"), pools={"p": obs})
    moved = StoragePool.model_validate({"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": "p"},
                                        "spec": {**spec.model_dump(by_alias=True, exclude_none=True),
                                                 "source": {"host": "nfs2.example.org", "dir": "/export/vm"}}})
    plan = plan_pool(moved, host, PlanOptions())
    assert plan.actions == []
    assert [p.message for p in plan.problems] == [
        "pool 'p' has source/host 'nfs.example.org', the spec says 'nfs2.example.org': a pool's source is set "
        "when it is made (define a new pool for other storage)"]


def test_a_block_pool_of_ours_is_known_by_its_uuid_and_never_marked() -> None:
    spec = _spec("iscsi-direct")
    xml = pool_xml("p", spec, uuid=pool_uuid("default", "p"))
    name, uuid, ptype, path = read_pool(xml)
    obs = ObservedPool(name, uuid, ptype, path, True, True, None, source=read_source(xml))
    host = HostState("h1", "qemu:///system", HostCapabilities(driver="QEMU", virt_type="kvm"), pools={"p": obs})
    plan = plan_pool(_pool("iscsi-direct"), host, PlanOptions())
    assert (plan.actions, plan.problems) == ([], [])
    # one of another UUID is not ours, and cannot be adopted (it takes no marker)
    other = ObservedPool(name, UUID, ptype, path, True, True, None, source=read_source(xml))
    adopt = StoragePool.model_validate({"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": "p"},
                                        "spec": {"host": "h1", "type": "iscsi-direct", "adopt": True,
                                                 **CASES["iscsi-direct"]}})
    refused = plan_pool(adopt, HostState("h1", "qemu:///system", host.caps, pools={"p": other}), PlanOptions())
    assert refused.actions == [] and "cannot be adopted" in refused.problems[0].message


# ------------------------------------------------------------------ the JSON Schema says the same


def _schema_errors(spec: dict[str, Any]) -> list[str]:
    import jsonschema

    from controller.spec.schema import spec_schema

    doc = {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": "p"}, "spec": spec}
    return [e.message for e in jsonschema.Draft202012Validator(spec_schema()).iter_errors(doc)]


@pytest.mark.parametrize("pool_type", sorted(CASES))
def test_each_types_case_fits_the_json_schema(pool_type: str) -> None:
    assert _schema_errors({"host": "h1", "type": pool_type, **CASES[pool_type]}) == []


@pytest.mark.parametrize("spec", [
    {"host": "h1", "type": "logical", "source": {"name": "vg0", "dir": "/export"}},  # a netfs field
    {"host": "h1", "type": "fs", "path": "/srv/fs"},  # no source.device
    {"host": "h1", "type": "rbd", "path": "/srv", "source": {"name": "v", "monitors": [{"host": "m"}]}},
    {"host": "h1", "source": {"device": "/dev/sdb"}},  # a dir pool (no type) has no source
], ids=["foreign-field", "missing-field", "path-on-rbd", "source-on-dir"])
def test_the_json_schema_refuses_what_validate_refuses(spec: dict[str, Any]) -> None:
    assert _schema_errors(spec), "the schema accepted it"
    with pytest.raises(ValueError):
        StoragePoolSpec.model_validate(spec)
