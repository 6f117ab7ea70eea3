"""Backup policies on a host without libvirt's backup API (the test driver): every verb says
so per host and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import (
    HOST,
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    write_host,
    write_specs,
)

pytestmark = pytest.mark.timeout(60)


def _specs(tmp_path: Path, uri: str) -> Path:
    policy = {"apiVersion": "virtsync/v1", "kind": "BackupPolicy", "metadata": {"name": "nightly"},
              "spec": {"selector": {"matchLabels": {"backup": "nightly"}}, "schedule": "0 3 * * *",
                       "target": {"path": str(tmp_path / "backups")}, "fullEvery": 7}}
    return write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("db", labels={"backup": "nightly"},
                                                                     memory="64MiB"), policy])


def test_a_host_without_the_backup_api_is_named_by_run_list_and_verify(tmp_path: Path,
                                                                        virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri)
    assert virtsync("apply", specs, "--yes").code == 0
    pools_before = connection(uri).listStoragePools()
    run = virtsync("backups", "run", specs, "--at", "2026-03-01T03:00:00Z")
    assert run.code == 0, run.err
    assert f"{HOST}/db [nightly] skipped" in run.out
    assert "TEST driver on kvm1 has no backup API" in run.out
    assert "took" not in run.out
    assert not (tmp_path / "backups").exists()  # nothing was made on the host or here
    assert connection(uri).listStoragePools() == pools_before
    listed = virtsync("backups", "list", "db", specs, "--format", "json")
    assert listed.code == 0 and listed.json() == {"backups": [], "problems": []}
    assert "has no backup API" in listed.err
    verify = virtsync("backups", "verify", specs, "--format", "json")
    assert verify.code == 0 and verify.json()["backups"] == [] and "has no backup API" in verify.err
    plan = virtsync("plan", specs)  # the plan says so too, as a warning of the policy on that host
    assert "backups are not supported on host kvm1 (Test: no backup API); policy nightly will not back up db" in \
        plan.out + plan.err


def test_bad_backup_commands_are_usage_errors(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs = _specs(tmp_path, write_host(tmp_path))
    assert virtsync("backups", "run", specs, "--at", "yesterday").code == 64
    assert virtsync("backups", "restore", "db", specs).code == 64  # --at is required
    missing = virtsync("backups", "list", "nosuch", specs)
    assert missing.code == 64 and "'nosuch' is not in the specs" in missing.err
