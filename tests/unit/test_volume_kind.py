"""kind: Volume, pure parts: its spec's rules, its registry entries, and plan_volumes on
observed states built by hand (grow live under the guest that has it, never shrink, markers)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.fields import volume as volume_fields
from controller.fields.docs import render_fields_md
from controller.fields.volume import VOLUME_OBJECT_FIELDS, foreign_owner, owned_volumes, volume_marker
from controller.model.state import (
    DiskState,
    GuestConfig,
    HostCapabilities,
    HostState,
    ObservedGuest,
    ObservedPool,
    ObservedVolume,
)
from controller.plan.actions import CloneVolume, DefineVolume, DeleteVolume, MarkVolume, ResizeVolume
from controller.plan.context import PlanOptions
from controller.plan.volumes import plan_volumes
from controller.spec.models import Volume
from controller.spec.specset import Located, SpecSet
from controller.spec.volume import VolumeSpec

KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)
MIB = 1 << 20


def _vol(name: str, **spec: Any) -> Volume:
    return Volume.model_validate({"apiVersion": "virtsync/v1", "kind": "Volume", "metadata": {"name": name},
                                  "spec": {"host": "h1", "pool": "p", **spec}})


def _specs(*vols: Volume) -> SpecSet:
    return SpecSet(tuple(Located(v, "specs.yaml", None) for v in vols))  # type: ignore[arg-type]


def _pool(*vols: tuple[str, int], markers: tuple[str, ...] = ()) -> ObservedPool:
    volumes = {n: ObservedVolume("p", n, f"/pool/{n}", cap) for n, cap in vols}
    volumes |= {m: ObservedVolume("p", m, f"/pool/{m}", 0) for m in markers}
    return ObservedPool("p", "uuid", "dir", "/pool", True, True, None, volumes)


def _running_with(path: str) -> ObservedGuest:
    cfg = GuestConfig(uuid="u", virt_type="kvm", vcpus=1, max_vcpus=1, memory=64 * MIB, max_memory=64 * MIB,
                      disks=(DiskState(name="data", target="vdb", bus="virtio", path=path),))
    return ObservedGuest("g1", "u", "running", 3, cfg, cfg, False, None)


def _host(pool: ObservedPool, guests: dict[str, ObservedGuest] | None = None) -> HostState:
    return HostState("h1", "qemu:///system", KVM, guests or {}, pools={"p": pool}, secrets={})


def test_every_volume_spec_field_is_in_the_registry_or_steers_virtsync() -> None:
    names = {f.alias or n for n, f in VolumeSpec.model_fields.items()}
    declared = {f.name for f in VOLUME_OBJECT_FIELDS} | set(volume_fields.CONTROL)
    assert names == declared
    listed = render_fields_md()
    assert "## Volume (`kind: Volume`)" in listed
    for name in names:
        assert f"`/spec/{name}`" in listed, name


def test_from_a_name_is_a_kind_volume_and_needs_no_size() -> None:
    v = _vol("copy", **{"from": "base"})
    assert v.spec.from_ is not None and v.spec.from_.volume == "base" and v.spec.from_.pool is None


@pytest.mark.parametrize(("spec", "message"), [
    ({}, "a Volume needs a 'size' or a 'from' volume to copy"),
    ({"from": "base", "encryption": {"secretRef": "k"}}, "cannot be encrypted on the way"),
    ({"from": {"volume": "v", "host": "h2"}}, "give from.pool too"),
    ({"size": "1GiB", "format": "vmdk"}, "format"),
])
def test_volume_spec_refusals(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _vol("v", **spec)


def test_markers_name_instance_policy_and_volume() -> None:
    names = [volume_marker("lab", "a.img", "keep"), volume_marker("lab", "b--x.img", "delete"),
             volume_marker("other", "c.img", "keep"), "plain.img"]
    assert owned_volumes("lab", names) == {"a.img": "keep", "b--x.img": "delete"}
    assert foreign_owner("lab", "c.img", names) == "other"
    assert foreign_owner("lab", "a.img", names) is None


def test_a_missing_volume_is_defined_and_a_copy_waits_for_its_source_in_a_later_phase() -> None:
    host = _host(_pool())
    plan = plan_volumes(_specs(_vol("base", size="8MiB"), _vol("copy", **{"from": "base"})), host, PlanOptions())
    made = {type(a): a for a in plan.actions}
    define, clone = made[DefineVolume], made[CloneVolume]
    assert (define.capacity, define.format, define.marker) == (8 * MIB, "qcow2", ".virtsync-vol-default-keep--base")
    assert (clone.from_host, clone.from_pool, clone.from_volume) == ("h1", "p", "base")
    assert "Volume/base" in clone.needs and clone.phase > define.phase


def test_growing_a_volume_a_running_guest_has_attached_is_a_live_block_resize() -> None:
    marker = volume_marker("default", "data", "keep")
    host = _host(_pool(("data", 16 * MIB), markers=(marker,)), {"g1": _running_with("/pool/data")})
    plan = plan_volumes(_specs(_vol("data", size="48MiB")), host, PlanOptions())
    [grow] = plan.actions
    assert isinstance(grow, ResizeVolume)
    assert (grow.capacity, grow.guest, grow.disk) == (48 * MIB, "g1", "data")
    assert grow.changes[0].note == "blockResize of g1's vdb (live)"


def test_a_smaller_size_is_refused_naming_the_volume_and_both_sizes() -> None:
    marker = volume_marker("default", "data", "keep")
    plan = plan_volumes(_specs(_vol("data", size="8MiB")), _host(_pool(("data", 16 * MIB), markers=(marker,))),
                        PlanOptions())
    assert plan.actions == []
    assert [p.message for p in plan.problems] == [
        "volume data: size 8MiB is smaller than the volume (16MiB); volumes are never shrunk"]


def test_a_volume_of_no_marker_or_another_instance_is_never_touched() -> None:
    unowned = plan_volumes(_specs(_vol("data", size="32MiB")), _host(_pool(("data", 16 * MIB))), PlanOptions())
    assert unowned.actions == [] and "set adopt: true" in unowned.problems[0].message
    theirs = _host(_pool(("data", 16 * MIB), markers=(volume_marker("other", "data", "delete"),)))
    foreign = plan_volumes(_specs(_vol("data", size="32MiB", adopt=True)), theirs, PlanOptions(prune=True))
    assert foreign.actions == [] and "managed by virtsync instance 'other'" in foreign.problems[0].message


def test_a_changed_delete_policy_renames_the_marker() -> None:
    marker = volume_marker("default", "data", "keep")
    plan = plan_volumes(_specs(_vol("data", size="16MiB", deletePolicy="delete")),
                        _host(_pool(("data", 16 * MIB), markers=(marker,))), PlanOptions())
    [mark] = plan.actions
    assert isinstance(mark, MarkVolume)
    assert (mark.marker, mark.old_marker) == (".virtsync-vol-default-delete--data", marker)


def test_pruning_deletes_delete_policy_volumes_and_lets_go_of_kept_ones() -> None:
    pool = _pool(("gone", MIB), ("kept", MIB), markers=(volume_marker("default", "gone", "delete"),
                                                         volume_marker("default", "kept", "keep")))
    assert plan_volumes(_specs(), _host(pool), PlanOptions()).actions == []
    plan = plan_volumes(_specs(), _host(pool), PlanOptions(prune=True))
    by_name = {a.key.name: a for a in plan.actions}
    assert isinstance(by_name["gone"], DeleteVolume) and by_name["gone"].marker.endswith("delete--gone")
    assert not by_name["gone"].guest, "a kind: Volume counts for the mass-deletion guard"
    assert isinstance(by_name["kept"], MarkVolume) and by_name["kept"].marker == ""
