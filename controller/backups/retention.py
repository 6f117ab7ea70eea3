"""Which of a policy's backups to keep: the snapshot policies' bucket rule, applied to chains.

The rule (README, "Backups"):
1. A backup is a *point* when its chain is whole: it is a full backup, or an incremental whose
   parent is a point. Backups that are not points (their full or a link went missing) cannot be
   restored and are deleted.
2. Among the points, keep by the bucket rule of snapshot policies (snapshots/retention.py): the
   newest point, and for each bucket with a count N > 0 the newest point of each of the N most
   recent periods that have one.
3. A kept backup keeps its chain: its parent, the parent's parent, … up to its full.
4. Everything else of the policy is deleted, newest first, so that an interrupted prune never
   leaves an incremental without what it is built on.
5. Checkpoints: only the newest point's is kept (the next incremental starts from it); every
   other checkpoint this policy made is deleted. Checkpoints virtsync did not make are never
   looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.backups.model import Backup
from controller.model.records import record
from controller.snapshots.model import Snapshot
from controller.snapshots.retention import plan_retention
from controller.spec.models import BackupPolicySpec, SnapshotPolicySpec

CHAIN = "chain"  # the reason a backup is kept only because a kept one is built on it
BROKEN = "broken"


@record
class ChainRetention:
    """``keep`` newest first; ``delete`` in the order to delete (newest first); ``reasons`` per
    kept id (buckets, or ``chain``); ``broken`` the ids deleted because their chain is not whole;
    ``checkpoints_keep`` / ``checkpoints_delete`` of this policy's checkpoints on the guest."""

    keep: tuple[Backup, ...]
    delete: tuple[Backup, ...]
    reasons: Mapping[str, tuple[str, ...]]
    broken: tuple[str, ...]
    checkpoints_keep: tuple[str, ...]
    checkpoints_delete: tuple[str, ...]


def _bucket_spec(spec: BackupPolicySpec) -> SnapshotPolicySpec:
    # The snapshot rule reads retain, schedule (its timezone) and frequentPeriod (unused: no
    # frequent bucket for backups).
    return SnapshotPolicySpec(selector=spec.selector, schedule=spec.schedule, retain=spec.retain)


def chain_of(backup: Backup, by_id: Mapping[str, Backup]) -> list[Backup] | None:
    """The backup's chain from its full to itself; ``None`` when a link is missing."""
    chain = [backup]
    seen = {backup.id}
    while chain[-1].parent is not None:
        parent = by_id.get(chain[-1].parent)
        if parent is None or parent.id in seen:
            return None
        seen.add(parent.id)
        chain.append(parent)
    return chain[::-1]


def plan_chain_retention(policy: str, spec: BackupPolicySpec, backups: Iterable[Backup],
                         checkpoints: Iterable[str] = ()) -> ChainRetention:
    """``checkpoints``: the guest's checkpoints that this policy made (by virtsync's record in
    them, never by name)."""
    own = [b for b in backups if b.policy == policy]
    by_id = {b.id: b for b in own}
    chains = {b.id: chain_of(b, by_id) for b in own}
    points = [b for b in own if chains[b.id] is not None]
    marked = plan_retention(policy, _bucket_spec(spec),
                            (Snapshot(b.id, b.created, policy) for b in points))
    reasons: dict[str, list[str]] = {name: list(why) for name, why in marked.reasons.items()}
    for name in list(reasons):
        for link in chains[name] or []:
            if link.id != name:
                reasons.setdefault(link.id, []).append(CHAIN)
    newest_first = sorted(own, key=lambda b: (b.created, b.id), reverse=True)
    keep = tuple(b for b in newest_first if b.id in reasons)
    delete = tuple(b for b in newest_first if b.id not in reasons)
    newest = max(points, key=lambda b: (b.created, b.id), default=None)
    made = set(checkpoints)
    wanted = {newest.checkpoint} if newest is not None and newest.checkpoint else set()
    return ChainRetention(keep, delete, {k: tuple(dict.fromkeys(v)) for k, v in reasons.items()},
                          tuple(b.id for b in own if chains[b.id] is None),
                          tuple(sorted(made & wanted)), tuple(sorted(made - wanted)))
