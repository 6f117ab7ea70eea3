"""One backup pass: for every guest and every backup policy selecting it, what to take and prune.

Each policy keeps its own chains, by its own schedule and retention. A backup is due like a
snapshot (snapshots/schedule.py: one per fire time passed, however many were missed). It is
*incremental* from the policy's newest backup when all of these hold, else *full*, and the
decision says why:
- ``--full`` was not asked for;
- the guest runs (a stopped guest is copied whole);
- the newest backup's chain has fewer than ``fullEvery`` backups;
- the newest backup has a checkpoint and the guest still has it (its dirty bitmaps).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from controller.backups.model import Backup, GuestBackups
from controller.backups.retention import ChainRetention, chain_of, plan_chain_retention
from controller.model.records import record
from controller.snapshots.model import require_aware
from controller.snapshots.naming import snapshot_name
from controller.snapshots.policies import selects
from controller.snapshots.schedule import due_after_fire, last_fire, skew_allowance
from controller.spec.models import BackupPolicy


@record
class BackupDecision:
    """What one pass decides for one (guest, policy) pair.

    ``retention`` counts ``take`` as if it succeeded (so a pass converges at once); when taking
    fails, skip the decision's deletions too: the next pass recomputes them."""

    guest: str
    policy: str
    take: Backup | None
    why: str  # why full or incremental (empty without take)
    retention: ChainRetention

    @property
    def changes(self) -> bool:
        return self.take is not None or bool(self.retention.delete) or bool(self.retention.checkpoints_delete)


def policies_for(labels: Mapping[str, str], policies: Iterable[BackupPolicy]) -> list[BackupPolicy]:
    chosen = (p for p in policies if selects(p.spec.selector.match_labels, labels))
    return sorted(chosen, key=lambda p: p.metadata.name)


def next_backup(policy: BackupPolicy, state: GuestBackups, at: datetime, *, full: bool = False) -> tuple[Backup, str]:
    """The backup to take now, full or incremental, and why."""
    name = policy.metadata.name
    own = [b for b in state.backups if b.policy == name]
    by_id = {b.id: b for b in own}
    points = [b for b in own if chain_of(b, by_id) is not None]
    newest = max(points, key=lambda b: (b.created, b.id), default=None)
    bid = snapshot_name(name, at)  # also the checkpoint's name
    checkpoint = bid if state.running else None
    why = ""
    if full:
        why = "full: asked for (--full)"
    elif not state.running:
        why = "full: the guest is stopped, its disks are copied whole"
    elif newest is None:
        why = "full: the policy has no backup of the guest yet"
    elif len(chain_of(newest, by_id) or []) >= policy.spec.full_every:
        why = f"full: the chain of {newest.id} has fullEvery ({policy.spec.full_every}) backups"
    elif newest.checkpoint is None:
        why = f"full: {newest.id} has no checkpoint (the guest was stopped, or no disk of it carries dirty bitmaps)"
    elif newest.checkpoint not in state.checkpoints:
        why = f"full: the guest no longer has checkpoint {newest.checkpoint}"
    if why:
        return Backup(bid, at, name, "full", None, checkpoint), why
    assert newest is not None
    return Backup(bid, at, name, "incremental", newest.id, checkpoint), f"incremental: from {newest.id}"


def plan_pass(guests: Mapping[str, GuestBackups], policies: Sequence[BackupPolicy], now: datetime, *,
              full: bool = False) -> list[BackupDecision]:
    """Decisions for every selected (guest, policy) pair, by guest then policy name (pairs with
    nothing to do too: ``changes`` is false)."""
    now = require_aware(now, "now").replace(microsecond=0)  # ids have whole seconds
    ordered = sorted(policies, key=lambda p: p.metadata.name)
    fires = {p.metadata.name: (last_fire(p.spec.schedule, now), skew_allowance(p.spec.schedule)) for p in ordered}
    out: list[BackupDecision] = []
    for guest in sorted(guests):
        state = guests[guest]
        ids = {b.id for b in state.backups}
        for policy in policies_for(state.labels, ordered):
            name = policy.metadata.name
            taken = [b.created for b in state.backups if b.policy == name]
            fire, allowance = fires[name]
            take, why = None, ""
            if full or due_after_fire(fire, max(taken, default=None), allowance):
                candidate, why = next_backup(policy, state, now, full=full)
                take = None if candidate.id in ids else candidate  # the same second as an existing one
                why = why if take is not None else ""
            current = state.backups if take is None else (*state.backups, take)
            mine = [c for c, p in state.checkpoints.items() if p == name]
            if take is not None and take.checkpoint:
                mine.append(take.checkpoint)
            out.append(BackupDecision(guest, name, take, why,
                                      plan_chain_retention(name, policy.spec, current, mine)))
    return out
