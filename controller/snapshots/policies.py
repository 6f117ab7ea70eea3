"""One scheduling pass: for every guest and every policy that selects it, what to take and delete.

Several policies may select one guest; they do not interact. Each keeps its own series of
snapshots (named after it, recorded as its own), by its own schedule and its own retention,
which only ever looks at that policy's snapshots. So a pass takes at most one snapshot per
guest per policy, and one policy's retention never deletes another's snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from controller.model.records import record
from controller.snapshots.model import GuestSnapshots, Snapshot, require_aware
from controller.snapshots.naming import snapshot_name
from controller.snapshots.retention import RetentionPlan, plan_retention
from controller.snapshots.schedule import due_after_fire, last_fire, skew_allowance
from controller.spec.models import SnapshotPolicy


@record
class SnapshotDecision:
    """What one pass decides for one (guest, policy) pair.

    ``retention`` counts ``take`` as if it succeeded, so that a pass converges at once; if taking
    fails, skip this decision's deletions too (the next pass recomputes them).
    """

    guest: str
    policy: str
    take: Snapshot | None  # name, time and policy to record; quiesced is for the taker to fill in
    retention: RetentionPlan

    @property
    def delete(self) -> tuple[str, ...]:
        """Names to delete, oldest first."""
        return tuple(s.name for s in self.retention.delete)

    @property
    def changes(self) -> bool:
        return self.take is not None or bool(self.retention.delete)


def selects(match_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Kubernetes ``matchLabels``: every pair present; an empty selector selects every guest."""
    return all(labels.get(key) == value for key, value in match_labels.items())


def policies_for(labels: Mapping[str, str], policies: Iterable[SnapshotPolicy]) -> list[SnapshotPolicy]:
    """The policies selecting a guest with ``labels``, by policy name (a stable order)."""
    chosen = (p for p in policies if selects(p.spec.selector.match_labels, labels))
    return sorted(chosen, key=lambda p: p.metadata.name)


def plan_pass(guests: Mapping[str, GuestSnapshots], policies: Sequence[SnapshotPolicy],
              now: datetime) -> list[SnapshotDecision]:
    """Decisions for every selected (guest, policy) pair, by guest then policy name.

    A pair with nothing to do is listed too (``changes`` is false), for status output.
    Snapshots of a policy that no longer selects the guest (or no longer exists) are left alone.
    """
    now = require_aware(now, "now").replace(microsecond=0)  # names have whole seconds
    ordered = sorted(policies, key=lambda p: p.metadata.name)
    fires = {p.metadata.name: (last_fire(p.spec.schedule, now), skew_allowance(p.spec.schedule))
             for p in ordered}  # once per policy, not per guest: cron evaluation is the slow part
    decisions = []
    for guest in sorted(guests):
        state = guests[guest]
        names = {s.name for s in state.snapshots}
        for policy in policies_for(state.labels, ordered):
            name = policy.metadata.name
            taken = [s.created for s in state.snapshots if s.policy == name]
            fire, allowance = fires[name]
            take = None
            if due_after_fire(fire, max(taken, default=None), allowance):
                candidate = Snapshot(snapshot_name(name, now), now, name)
                take = None if candidate.name in names else candidate  # same second as an existing one
            current = state.snapshots if take is None else (*state.snapshots, take)
            decisions.append(SnapshotDecision(guest, name, take, plan_retention(name, policy.spec, current)))
    return decisions
