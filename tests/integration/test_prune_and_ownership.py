"""Prune deletes only what this instance owns; guards stop mass deletions; names never clash."""

from __future__ import annotations

from pathlib import Path

import libvirt

from tests.integration.conftest import (
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    snapshot,
    unmanaged_domain,
    write_host,
    write_specs,
)


def _guests(tmp_path: Path, uri: str, names: list[str], **spec: object) -> Path:
    docs = [host_doc(uri)] + [guest_doc(n, memory="64MiB", **spec) for n in names]
    return write_specs(tmp_path / "specs", docs)


def _names(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains(0)}


def test_prune_deletes_a_managed_guest_gone_from_the_specs(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, unmanaged_domain("legacy"))
    specs = _guests(tmp_path, uri, ["a", "b", "c"])
    assert virtsync("apply", specs, "--yes").code == 0
    conn = connection(uri)
    assert _names(conn) == {"legacy", "a", "b", "c"}

    specs = _guests(tmp_path, uri, ["a", "b"])
    without = virtsync("apply", specs, "--yes")
    assert without.code == 0 and "No changes" in without.out, "no pruning without --prune"
    assert "c" in _names(conn)
    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 2
    extra = [o for o in drift.json()["hosts"][0]["objects"] if o["status"] == "extra"]
    assert [o["name"] for o in extra] == ["c"]

    plan = virtsync("plan", specs, "--prune")
    assert plan.code == 2 and "- delete Guest c" in plan.out
    pruned = virtsync("apply", specs, "--prune", "--yes")
    assert pruned.code == 0, pruned.out + pruned.err
    assert _names(conn) == {"legacy", "a", "b"}, "the unmanaged guest survives"
    assert conn.lookupByName("legacy").isActive()
    assert virtsync("plan", specs, "--prune").code == 0


def test_prune_never_deletes_an_unmanaged_guest(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, unmanaged_domain("legacy") + unmanaged_domain("old", running=False))
    specs = _guests(tmp_path, uri, ["a"])
    assert virtsync("apply", specs, "--prune", "--yes").code == 0
    conn = connection(uri)
    before = snapshot(conn)
    again = virtsync("apply", specs, "--prune", "--yes", "--force")
    assert again.code == 0 and "No changes" in again.out
    assert "unmanaged (left alone): Guest legacy, Guest old" in again.out
    assert snapshot(conn) == before


def test_prune_never_deletes_a_guest_of_another_instance(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    theirs = write_specs(tmp_path / "other", [host_doc(uri), guest_doc("theirs", memory="64MiB")])
    assert virtsync("apply", theirs, "--instance", "other", "--yes").code == 0
    ours = _guests(tmp_path, uri, ["mine"])
    applied = virtsync("apply", ours, "--prune", "--yes", "--force")
    assert applied.code == 0, applied.out + applied.err
    conn = connection(uri)
    assert _names(conn) == {"theirs", "mine"}
    assert conn.lookupByName("theirs").isActive()
    assert "unmanaged (left alone): Guest theirs" in applied.out

    # Declaring it from this instance is refused, not a takeover.
    clash = _guests(tmp_path, uri, ["mine", "theirs"])
    plan = virtsync("plan", clash)
    assert plan.code == 1
    assert "managed by virtsync instance 'other'" in plan.out


def test_mass_deletion_guard_refuses_more_than_half_the_managed_guests(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", _guests(tmp_path, uri, ["a", "b", "c", "d"]), "--yes").code == 0
    conn = connection(uri)
    before = snapshot(conn)

    specs = _guests(tmp_path, uri, ["a"])
    refused = virtsync("apply", specs, "--prune", "--yes")
    assert refused.code == 1
    assert "refusing to delete 3 of 4 managed guests" in refused.err
    assert snapshot(conn) == before, "nothing changed"

    forced = virtsync("apply", specs, "--prune", "--yes", "--force")
    assert forced.code == 0, forced.err
    assert _names(conn) == {"a"}


def test_mass_deletion_guard_refuses_more_than_max_deletions(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", _guests(tmp_path, uri, list("abcdef")), "--yes").code == 0
    conn = connection(uri)
    before = snapshot(conn)

    specs = _guests(tmp_path, uri, list("abcd"))  # 2 of 6: not more than half
    refused = virtsync("apply", specs, "--prune", "--yes", "--max-deletions", "1")
    assert refused.code == 1
    assert "more than --max-deletions 1" in refused.err
    assert snapshot(conn) == before, "nothing changed"

    allowed = virtsync("apply", specs, "--prune", "--yes", "--max-deletions", "2")
    assert allowed.code == 0, allowed.err
    assert _names(conn) == set("abcd")


def test_guest_named_like_an_unmanaged_guest_is_a_plan_error(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, unmanaged_domain("legacy", memory_mib=64))
    specs = _guests(tmp_path, uri, ["legacy"], vcpus=2)
    plan = virtsync("plan", specs)
    assert plan.code == 1
    assert "not managed by virtsync; set adopt: true" in plan.out
    conn = connection(uri)
    before = snapshot(conn)
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 1
    assert snapshot(conn) == before, "nothing changed"
    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 1
    (obj,) = drift.json()["hosts"][0]["objects"]
    assert obj["status"] == "error"


def test_adopt_takes_over_an_existing_unmanaged_guest(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, unmanaged_domain("legacy", memory_mib=64))
    matching = _guests(tmp_path, uri, ["legacy"], adopt=True)
    plan = virtsync("plan", matching)
    assert plan.code == 0, plan.out  # no error, nothing to change
    assert "error" not in plan.out

    specs = _guests(tmp_path, uri, ["legacy"], adopt=True, vcpus=2)
    plan = virtsync("plan", specs)
    assert plan.code == 2 and "adopting it" in plan.out
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    conn = connection(uri)
    assert "virtsync.dev/xmlns/owner" in conn.lookupByName("legacy").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert virtsync("plan", specs).code == 0
    # Once adopted it is managed: gone from the specs, prune deletes it.
    empty = write_specs(tmp_path / "specs", [host_doc(uri)])
    assert virtsync("apply", empty, "--prune", "--yes", "--force").code == 0
    assert "legacy" not in _names(conn)
