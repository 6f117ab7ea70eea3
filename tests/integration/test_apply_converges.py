"""apply brings a host to the specs; afterwards plan is empty and apply is a no-op."""

from __future__ import annotations

from pathlib import Path

import libvirt

from tests.integration.conftest import (
    QUICKSTART,
    VirtsyncCli,
    connection,
    snapshot,
    unmanaged_domain,
    write_host,
)


def test_quickstart_apply_then_plan_shows_no_changes(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    first = virtsync("plan", QUICKSTART, "--connect", uri)
    assert first.code == 2, first.err
    assert "+ define Guest web1" in first.out

    applied = virtsync("apply", QUICKSTART, "--connect", uri, "--yes")
    assert applied.code == 0, applied.out + applied.err
    assert "0 failed" in applied.err

    again = virtsync("plan", QUICKSTART, "--connect", uri)
    assert again.code == 0, again.out
    assert "No changes" in again.out

    conn = connection(uri)
    for name in ("web1", "web2"):
        dom = conn.lookupByName(name)
        assert dom.isActive() and dom.isPersistent()
    assert conn.lookupByName("web1").autostart() == 1
    net = conn.networkLookupByName("lab")
    assert net.isActive() and net.autostart() == 1
    assert "52:54:00:00:01:01" in net.XMLDesc(0)


def test_applying_twice_changes_nothing(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, unmanaged_domain("legacy-vm"))
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    before = snapshot(connection(uri))

    second = virtsync("apply", QUICKSTART, "--connect", uri, "--yes", "--format", "json")
    assert second.code == 0, second.err
    counts = second.json()["counts"]
    assert counts["created"] == counts["updated"] == counts["deleted"] == counts["failed"] == 0
    assert "No changes" in second.err  # the plan goes to stderr; stdout is the JSON
    assert snapshot(connection(uri)) == before


def test_quickstart_guests_get_ownership_metadata(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, unmanaged_domain("legacy-vm"))
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    conn = connection(uri)
    ns = "https://virtsync.dev/xmlns/owner/v1"
    meta = conn.lookupByName("web1").metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ns,
                                               libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    assert 'instance="default"' in meta and 'name="web1"' in meta
    legacy = conn.lookupByName("legacy-vm").XMLDesc(0)
    assert ns not in legacy


def test_guests_started_together_start_paused_and_all_end_running(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    applied = virtsync("apply", QUICKSTART, "--connect", uri, "--yes", "--format", "json")
    assert applied.code == 0, applied.err
    starts = [o for o in applied.json()["outcomes"] if o["op"] == "start"]
    assert len(starts) >= 2 and all(o["status"] == "updated" for o in starts)
    assert all(o["detail"].startswith("started (paused ") and f"all {len(starts)} starts" in o["detail"]
               for o in starts), starts
    conn = connection(uri)
    for o in starts:
        assert conn.lookupByName(o["name"]).state()[0] == libvirt.VIR_DOMAIN_RUNNING
