"""Storage pools by type on libvirt's test driver: every type it can define (all of them; it has
no secret driver, so auth is left to the real-host tests) is defined from the spec with its
<source>, started, planned as nothing to do afterwards, and exported to specs that plan nothing.
The test driver answers no getStoragePoolCapabilities: no type is refused there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from controller.hypervisor.capabilities import pool_types
from tests.integration.conftest import VirtsyncCli, connection, host_doc, write_host, write_specs
from tests.unit.test_pool_types import CASES

# The test driver has no libvirt secrets: the cases without auth.
NO_AUTH: dict[str, dict[str, Any]] = {}
for _t, _c in CASES.items():
    src = {k: v for k, v in _c.get("source", {}).items() if k != "auth"}
    NO_AUTH[_t] = {**_c, **({"source": src} if src else {})}


def _pool_doc(pool_type: str) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": f"p-{pool_type}"},
            "spec": {"host": "kvm1", "type": pool_type, **NO_AUTH[pool_type]}}


def test_the_test_driver_answers_no_pool_capabilities(tmp_path: Path) -> None:
    assert pool_types(connection(write_host(tmp_path))) is None


def test_every_pool_type_is_defined_started_in_sync_and_exported_to_specs_that_plan_nothing(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    host = host_doc(uri)
    host["spec"]["storage"] = {"allowedDirs": ["/var/lib/libvirt/images"]}
    specs = write_specs(tmp_path / "specs", [host, *(_pool_doc(t) for t in sorted(NO_AUTH))])
    done = virtsync("apply", specs, "--yes")
    assert done.code == 0, done.out + done.err
    conn = connection(uri)
    for pool_type, case in NO_AUTH.items():
        pool = conn.storagePoolLookupByName(f"p-{pool_type}")
        assert pool.isActive(), pool_type
        root = etree.fromstring(pool.XMLDesc(0).encode())
        assert root.get("type") == pool_type
        src = case.get("source", {})
        if "device" in src:
            assert root.find("source/device").get("path") == src["device"]
        if "target" in src:
            assert root.find("source/device").get("path") == src["target"]
        if "name" in src:
            assert root.findtext("source/name") == src["name"]
        if "host" in src:
            assert root.find("source/host").get("name") == src["host"]
        if "path" in case:
            assert root.findtext("target/path") == case["path"]
    again = virtsync("plan", specs)
    assert again.code == 0, again.out + again.err

    out = tmp_path / "exported.yaml"
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "--all", "-o", out)
    assert exported.code == 0, exported.err
    text = out.read_text()
    for pool_type in NO_AUTH:
        assert f"name: p-{pool_type}\n" in text and f"type: {pool_type}\n" in text, pool_type
    plan = virtsync("plan", out, "--connect", uri)
    assert plan.code == 0, plan.out + plan.err


@pytest.mark.parametrize("pool_type", ["iscsi-direct", "rbd"])
def test_a_pool_with_auth_on_a_host_without_secrets_is_refused_before_anything_is_defined(
        tmp_path: Path, virtsync: VirtsyncCli, pool_type: str) -> None:
    uri = write_host(tmp_path)
    secret = {"apiVersion": "virtsync/v1", "kind": "Secret", "metadata": {"name": "chap" if pool_type != "rbd"
                                                                          else "ceph"},
              "spec": {"value": "pw", "allowInline": True,
                       "libvirt": {"usage": "iscsi" if pool_type != "rbd" else "ceph"}}}
    pool = {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": "p"},
            "spec": {"host": "kvm1", "type": pool_type, **CASES[pool_type]}}
    specs = write_specs(tmp_path / "specs", [host_doc(uri), secret, pool])
    done = virtsync("apply", specs, "--yes")
    assert done.code == 1
    said = done.out + done.err
    assert f"pool p's auth secret {secret['metadata']['name']} cannot be defined there" in said, said
    assert connection(uri).listAllStoragePools(0) == []
