"""One scheduling pass on real hosts: list snapshots, decide (pure), take and prune."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from controller.errors import HostError, VirtsyncError
from controller.hypervisor.snapshots import SnapshotOps, SnapshotRecord
from controller.model.records import record
from controller.model.state import HostState
from controller.plan.actions import HostPlan
from controller.snapshots.model import GuestSnapshots, Snapshot
from controller.snapshots.monitor import freshness
from controller.snapshots.policies import plan_pass, policies_for
from controller.spec.specset import SpecSet


@record
class PassOutcome:
    host: str
    guest: str
    policy: str
    action: str  # took | deleted | skipped | failed
    snapshot: str
    detail: str = ""


def to_snapshot(r: SnapshotRecord) -> Snapshot:
    return Snapshot(r.name, r.created, r.policy, r.quiesced)


def run_pass(specs: SpecSet, states: dict[str, HostState], ops_for: Callable[[str], SnapshotOps],
             at: datetime) -> list[PassOutcome]:
    """Take what is due and prune what retention says, on every host, for every guest."""
    out: list[PassOutcome] = []
    policies = specs.policies
    if not policies:
        return out
    for host_name, state in sorted(states.items()):
        guests = [g for g in specs.guests if g.spec.host == host_name and g.metadata.name in state.guests]
        if not guests:
            continue
        if not state.caps.snapshots:
            out.extend(PassOutcome(host_name, g.metadata.name, "-", "skipped", "",
                                   f"snapshots are not supported on {host_name} ({state.caps.driver})")
                       for g in guests)
            continue
        ops = ops_for(host_name)
        existing: dict[str, GuestSnapshots] = {}
        for g in guests:
            try:
                existing[g.metadata.name] = GuestSnapshots(
                    g.metadata.labels, tuple(to_snapshot(r) for r in ops.list(g.metadata.name)))
            except HostError as exc:
                out.append(PassOutcome(host_name, g.metadata.name, "-", "failed", "", str(exc)))
        by_name = {p.metadata.name: p for p in policies}
        for d in plan_pass(existing, policies, at):
            if not d.changes:
                continue
            policy = by_name[d.policy].spec
            if d.take is not None:
                try:
                    if ops.block_job_running(d.guest):
                        out.append(PassOutcome(host_name, d.guest, d.policy, "skipped", d.take.name,
                                               "a block job runs on the guest"))
                        continue
                    quiesced, external = ops.take(d.guest, d.take.name, d.policy, d.take.created,
                                                  quiesce=policy.quiesce, memory=policy.memory)
                    out.append(PassOutcome(host_name, d.guest, d.policy, "took", d.take.name,
                                           f"{'external' if external else 'internal'}, quiesced={quiesced}"))
                except VirtsyncError as exc:
                    out.append(PassOutcome(host_name, d.guest, d.policy, "failed", d.take.name,
                                           str(exc).removeprefix(f"{host_name}: ")))
                    continue  # its deletions assumed the new snapshot: leave them to the next pass
            for name in d.delete:
                try:
                    ops.delete(d.guest, name)
                    out.append(PassOutcome(host_name, d.guest, d.policy, "deleted", name))
                except VirtsyncError as exc:
                    out.append(PassOutcome(host_name, d.guest, d.policy, "failed", name,
                                           str(exc).removeprefix(f"{host_name}: ")))
    return out


def annotate_freshness(specs: SpecSet, host_plans: Iterable[HostPlan], ops_for: Callable[[str], SnapshotOps],
                       now: datetime) -> None:
    """Put each policy's newest-snapshot freshness into the guests' drift info (for drift and /status)."""
    if not specs.policies:
        return
    guests = {g.metadata.name: g for g in specs.guests}
    for hp in host_plans:
        if hp.error:
            continue
        ops = ops_for(hp.host)
        for entry in hp.drift:
            g = guests.get(entry.key.name)
            if entry.key.kind != "Guest" or g is None or entry.status == "missing":
                continue
            chosen = policies_for(g.metadata.labels, specs.policies)
            if not chosen:
                continue
            try:
                snaps = [to_snapshot(r) for r in ops.list(g.metadata.name)]
            except HostError:
                continue  # a driver without snapshots: the plan already warns
            entry.info["snapshots"] = [freshness(p.metadata.name, p.spec.schedule, snaps, now).as_json()
                                       for p in chosen]
