"""Backup policies, pure core: chain-aware retention, full/incremental choice, manifests.

The 40-day simulation compares the pure core with the rule of the README's "Backups" section
worked out by hand for that calendar: a daily policy, fullEvery 7, retain {daily: 7, weekly: 4}.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.backups import Backup, GuestBackups, Manifest, ManifestError, plan_chain_retention, plan_pass
from controller.backups.manifest import DiskEntry
from controller.backups.retention import chain_of
from controller.spec.models import BackupPolicy

pytestmark = pytest.mark.timeout(60)

START = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)  # a Monday


def policy(name: str = "nightly", full_every: int = 7, **retain: int) -> BackupPolicy:
    return BackupPolicy.model_validate({
        "apiVersion": "virtsync/v1", "kind": "BackupPolicy", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"backup": "yes"}}, "schedule": "0 3 * * *",
                 "target": {"pool": "backups"}, "fullEvery": full_every, "retain": retain},
    })


def simulate(days: int, pol: BackupPolicy, running: bool = True) -> tuple[list[Backup], dict[str, str], list[str]]:
    """``days`` daily passes; returns the backups left, the checkpoints left, and every decision's why."""
    backups: list[Backup] = []
    checkpoints: dict[str, str] = {"someone-elses": "other"}  # not this policy's: never touched
    whys: list[str] = []
    for day in range(days):
        at = START + timedelta(days=day, seconds=5)
        state = GuestBackups({"backup": "yes"}, True, tuple(backups), dict(checkpoints))
        [d] = plan_pass({"db": state}, [pol], at)
        assert d.take is not None, f"day {day}: nothing due"
        whys.append(d.why)
        backups.append(d.take)
        if d.take.checkpoint:
            checkpoints[d.take.checkpoint] = pol.metadata.name
        gone = {b.id for b in d.retention.delete}
        backups = [b for b in backups if b.id not in gone]
        for c in d.retention.checkpoints_delete:
            del checkpoints[c]
        by_id = {b.id: b for b in backups}
        orphans = [b.id for b in backups if chain_of(b, by_id) is None]
        assert not orphans, f"day {day}: incrementals left without their full: {orphans}"
    return backups, checkpoints, whys


def day_of(b: Backup) -> int:
    return (b.created - START).days


def test_forty_daily_passes_keep_exactly_the_chains_the_rule_names() -> None:
    pol = policy(daily=7, weekly=4)
    backups, checkpoints, whys = simulate(40, pol)
    # Days 0..39 are 2026-01-05 (Mon) .. 2026-02-13 (Fri); fulls on days 0, 7, 14, 21, 28, 35 (Mondays).
    # daily 7 keeps days 33..39; weekly 4 keeps each ISO week's newest: 39, 34, 27, 20. Their chains
    # (full first): 35..39, 28..34, 21..27, 14..20. So days 14..39 stay and 0..13 are gone.
    assert sorted(day_of(b) for b in backups) == list(range(14, 40))
    fulls = sorted(day_of(b) for b in backups if b.kind == "full")
    assert fulls == [14, 21, 28, 35]
    assert [w.split(":")[0] for w in whys] == (["full"] + ["incremental"] * 6) * 5 + ["full"] + ["incremental"] * 4
    assert "fullEvery (7)" in whys[7]
    by_id = {b.id: b for b in backups}
    for b in backups:
        chain = chain_of(b, by_id)
        assert chain is not None and chain[0].kind == "full" and len(chain) <= 7
    # Only the newest backup's checkpoint (the next incremental starts from it), and the foreign one.
    newest = max(backups, key=lambda b: b.created)
    assert checkpoints == {newest.checkpoint: "nightly", "someone-elses": "other"}


def test_a_kept_incremental_keeps_its_whole_chain_and_its_reasons_say_so() -> None:
    pol = policy(full_every=4)  # retain nothing but the newest
    backups, _, _ = simulate(6, pol)  # full 0, inc 1 2 3, full 4, inc 5
    assert sorted(day_of(b) for b in backups) == [4, 5]
    kept = plan_chain_retention("nightly", pol.spec, backups)
    assert kept.reasons[backups[-1].id] == ("latest",)
    assert kept.reasons[backups[0].id] == ("chain",)


def test_an_incremental_whose_full_is_gone_is_deleted_as_broken_and_the_next_backup_is_full() -> None:
    pol = policy(daily=7)
    full = Backup("vs-nightly-20260105T030005Z", START, "nightly", "full", None, "vs-nightly-20260105T030005Z")
    inc = Backup("vs-nightly-20260106T030005Z", START + timedelta(days=1), "nightly", "incremental",
                 "vs-nightly-20260104T030005Z", "vs-nightly-20260106T030005Z")  # its parent is not there
    kept = plan_chain_retention("nightly", pol.spec, [full, inc], ["vs-nightly-20260106T030005Z"])
    assert kept.broken == (inc.id,) and [b.id for b in kept.delete] == [inc.id]
    assert kept.checkpoints_delete == ("vs-nightly-20260106T030005Z",)
    state = GuestBackups({"backup": "yes"}, True, (full,), {})
    [d] = plan_pass({"db": state}, [pol], START + timedelta(days=2))
    assert d.take is not None and d.take.kind == "full"
    assert d.why == f"full: the guest no longer has checkpoint {full.checkpoint}"


def test_a_stopped_guest_gets_a_full_copy_without_a_checkpoint_and_the_next_backup_is_full_too() -> None:
    pol = policy(daily=7)
    full = Backup("vs-nightly-20260105T030005Z", START, "nightly", "full", None, "vs-nightly-20260105T030005Z")
    stopped = GuestBackups({"backup": "yes"}, False, (full,), {full.id: "nightly"})
    [d] = plan_pass({"db": stopped}, [pol], START + timedelta(days=1))
    assert d.take is not None and d.take.kind == "full" and d.take.checkpoint is None
    assert "stopped" in d.why
    # The newest point now has no checkpoint: the old one is pruned, and the next backup is full.
    assert d.retention.checkpoints_delete == (full.id,)
    running = GuestBackups({"backup": "yes"}, True, (full, d.take), {})
    [d2] = plan_pass({"db": running}, [pol], START + timedelta(days=2))
    assert d2.take is not None and d2.take.kind == "full" and "has no checkpoint" in d2.why


def test_full_every_one_means_full_backups_only_and_full_flag_forces_one() -> None:
    _, _, whys = simulate(3, policy(full_every=1))
    assert all(w.startswith("full") for w in whys)
    pol = policy()
    full = Backup("vs-nightly-20260105T030005Z", START, "nightly", "full", None, "vs-nightly-20260105T030005Z")
    state = GuestBackups({"backup": "yes"}, True, (full,), {full.id: "nightly"})
    [d] = plan_pass({"db": state}, [pol], START + timedelta(hours=1))  # not due
    assert d.take is None and not d.changes
    [d] = plan_pass({"db": state}, [pol], START + timedelta(hours=1), full=True)
    assert d.take is not None and d.take.kind == "full" and d.why == "full: asked for (--full)"


def test_a_policy_never_prunes_another_policys_backups() -> None:
    a = policy("a", full_every=2)
    theirs = Backup("vs-b-20250101T000000Z", START - timedelta(days=400), "b", "full", None, None)
    backups, _, _ = simulate(5, a)
    kept = plan_chain_retention("a", a.spec, [*backups, theirs])
    assert theirs not in kept.delete and theirs not in kept.keep


def test_a_manifest_round_trips_and_a_foreign_json_is_refused() -> None:
    m = Manifest(id="vs-nightly-20260105T030005Z", guest="db", uuid="u", host="kvm1", instance="default",
                 policy="nightly", created=START, kind="incremental", method="push",
                 parent="vs-nightly-20260104T030005Z",
                 chain=("vs-nightly-20260104T030005Z", "vs-nightly-20260105T030005Z"),
                 checkpoint="vs-nightly-20260105T030005Z",
                 checkpoints=("vs-nightly-20260104T030005Z", "vs-nightly-20260105T030005Z"), quiesced=True,
                 disks=(DiskEntry("vdb", "db.x.vdb.qcow2", "qcow2", "incremental", 1 << 30, 4096, "ab" * 32,
                                  "db.w.vdb.qcow2", "/pool/db-data.qcow2", "qcow2", "pool"),),
                 definition="<domain/>", why="incremental: from vs-nightly-20260104T030005Z")
    again = Manifest.from_json(m.to_json())
    assert again == m and again.size == 4096 and again.backup().parent == m.parent
    with pytest.raises(ManifestError, match="not a virtsync backup manifest"):
        Manifest.from_json('{"id": 1}', "x.json")
    with pytest.raises(ManifestError, match="incomplete"):
        Manifest.from_json('{"virtsync": {"manifestVersion": 1}, "id": "x"}', "x.json")


def test_compress_needs_a_copy_to_compress() -> None:
    from pydantic import ValidationError

    doc = policy().model_dump(by_alias=True)
    doc["spec"]["compress"] = "zstd"
    with pytest.raises(ValidationError, match=r"compress: zstd compresses the copies: set target\.copyTo"):
        BackupPolicy.model_validate(doc)
    doc["spec"]["target"]["copyTo"] = "/srv/copies"
    assert BackupPolicy.model_validate(doc).spec.compress == "zstd"
