"""What the service queues when specs change: every host-placed kind's edit is seen (a Volume's too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.model.state import ResourceKey
from controller.service.desired import DesiredState
from controller.spec.loader import load_specs
from tests.integration.conftest import host_doc, write_host, write_specs


def _tree(tmp_path: Path, size: str) -> list[dict[str, Any]]:
    host = host_doc(write_host(tmp_path))
    host["spec"]["storage"] = {"allowedDirs": [str(tmp_path)]}
    pool = {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": "fast"},
            "spec": {"host": "kvm1", "path": str(tmp_path / "fast")}}
    volume = {"apiVersion": "virtsync/v1", "kind": "Volume", "metadata": {"name": "data.qcow2"},
              "spec": {"host": "kvm1", "pool": "fast", "size": size}}
    return [host, pool, volume]


def test_an_edit_of_a_volume_alone_is_a_changed_key(tmp_path: Path) -> None:
    desired = DesiredState()
    first = load_specs([write_specs(tmp_path / "a", _tree(tmp_path, "16MiB"))])
    assert not first.diagnostics, first.diagnostics
    desired.accept(first.specs, "c1")
    second = load_specs([write_specs(tmp_path / "b", _tree(tmp_path, "32MiB"))])
    changed, removed = desired.accept(second.specs, "c2")
    assert changed == {ResourceKey("kvm1", "Volume", "data.qcow2")}
    assert removed == set()
