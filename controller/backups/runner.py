"""One backup pass on real hosts: read manifests and checkpoints, decide (pure), take and prune.

Also the read side of the verbs: the backups of a guest (``list``), the check of every chain
(``verify``) and the chain a restore rebuilds. Hosts are reached through ``BackupOps`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.backups.manifest import Manifest
from controller.backups.model import GuestBackups
from controller.backups.monitor import freshness
from controller.backups.policies import plan_pass, policies_for
from controller.errors import HostError, VirtsyncError
from controller.hypervisor.backups import (
    BackupOps,
    LocalStore,
    Progress,
    Store,
    copy_files,
    read_manifests,
    verify_backup,
)
from controller.model.records import record
from controller.model.state import HostState
from controller.plan.actions import HostPlan
from controller.spec.models import BackupPolicy, BackupPolicySpec, Guest
from controller.spec.specset import SpecSet


@record
class BackupOutcome:
    host: str
    guest: str
    policy: str
    action: str  # took | deleted | checkpoint-deleted | copied | skipped | failed
    backup: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.host}/{self.guest} [{self.policy}] {self.action} {self.backup} {self.detail}".rstrip()


def copy_dir(spec: BackupPolicySpec, guest: str) -> LocalStore | None:
    """A policy's copyTo directory of one guest (where virtsync runs), or None without copyTo."""
    copy_to = spec.target.copy_to
    return LocalStore(Path(copy_to) / guest, compress=spec.compress == "zstd") if copy_to else None


def selected(specs: SpecSet, states: dict[str, HostState]) -> list[tuple[str, Guest, list[BackupPolicy]]]:
    """(host, guest, its backup policies) for every guest some policy selects and its host has."""
    out = []
    for g in sorted(specs.guests, key=lambda g: g.metadata.name):
        host = g.spec.host or ""
        chosen = policies_for(g.metadata.labels, specs.backup_policies)
        if chosen and host in states and g.metadata.name in states[host].guests:
            out.append((host, g, chosen))
    return out


def run_pass(specs: SpecSet, states: dict[str, HostState], ops_for: Callable[[str], BackupOps], at: datetime, *,
             full: bool = False, progress: Progress | None = None,
             report: Callable[[BackupOutcome], None] | None = None,
             only: Callable[[str, str], bool] | None = None) -> list[BackupOutcome]:
    """Take what is due (``full``: a full backup of every selected guest now) and prune what
    retention says, on every host; ``only(guest, policy)`` false leaves a pair for later (the
    service's backoff after a failure)."""
    out: list[BackupOutcome] = []

    def emit(o: BackupOutcome) -> None:
        out.append(o)
        if report is not None:
            report(o)

    unsupported: dict[str, str | None] = {}
    for host, g, chosen in selected(specs, states):
        name = g.metadata.name
        ops = ops_for(host)
        if host not in unsupported:
            try:
                unsupported[host] = ops.unsupported()
            except HostError as exc:
                unsupported[host] = str(exc)
        if unsupported[host]:
            emit(BackupOutcome(host, name, ",".join(p.metadata.name for p in chosen), "skipped", "",
                               str(unsupported[host])))
            continue
        for policy in chosen:
            if only is not None and not only(name, policy.metadata.name):
                continue
            try:
                _one(ops, host, g, policy, at, full, progress, emit)
            except VirtsyncError as exc:
                emit(BackupOutcome(host, name, policy.metadata.name, "failed", "",
                                   str(exc).removeprefix(f"{host}: ")))
    return out


def _one(ops: BackupOps, host: str, g: Guest, policy: BackupPolicy, at: datetime, full: bool,
         progress: Progress | None, emit: Callable[[BackupOutcome], None]) -> None:
    name, pname = g.metadata.name, policy.metadata.name
    with ops.store(policy.spec.target) as store:
        manifests, problems = read_manifests(store, name)
        for p in problems:
            emit(BackupOutcome(host, name, pname, "skipped", "", f"unreadable manifest left alone: {p}"))
        manifests = [m for m in manifests if m.instance == ops.instance]
        state = GuestBackups(g.metadata.labels, ops.running(name), tuple(m.backup() for m in manifests),
                             ops.checkpoints(name))
        [decision] = [d for d in plan_pass({name: state}, [policy], at, full=full) if d.policy == pname]
        by_id = {m.id: m for m in manifests}
        copies = copy_dir(policy.spec, name)
        if decision.take is not None:
            parent = by_id.get(decision.take.parent or "")
            try:
                m = ops.take(name, decision.take, parent, store, quiesce=policy.spec.quiesce, why=decision.why,
                             progress=progress)
            except VirtsyncError as exc:
                emit(BackupOutcome(host, name, pname, "failed", decision.take.id, str(exc).removeprefix(f"{host}: ")))
                return  # its deletions assumed the new backup: leave them to the next pass
            by_id[m.id] = m
            raw = "; ".join(f"{d.target}: {d.reason}" for d in m.disks if d.reason)
            emit(BackupOutcome(host, name, pname, "took", m.id,
                               f"{m.kind} ({m.method}), {m.size} bytes, quiesced={m.quiesced}; {m.why}"
                               + (f"; {raw}" if raw and raw not in m.why else "")))
            if copies is not None:
                copy_files(store, copies, m)
                emit(BackupOutcome(host, name, pname, "copied", m.id, f"to {copies.where}"))
        for b in decision.retention.delete:
            m2 = by_id.get(b.id)
            if m2 is None:
                continue
            ops.delete_backup(store, m2)
            if copies is not None:
                ops.delete_backup(copies, m2)
            why = "broken chain" if b.id in decision.retention.broken else "retention"
            emit(BackupOutcome(host, name, pname, "deleted", b.id, why))
        for cp in decision.retention.checkpoints_delete:
            if not state.running:  # libvirt 9 removes a checkpoint's bitmaps only from a running guest
                emit(BackupOutcome(host, name, pname, "skipped", cp, "checkpoint left until a pass finds the "
                                   "guest running (libvirt deletes checkpoints of running guests only)"))
                continue
            ops.delete_checkpoint(name, cp)
            emit(BackupOutcome(host, name, pname, "checkpoint-deleted", cp))


@dataclass
class GuestChains:
    host: str
    guest: str
    policy: str
    where: str
    manifests: list[Manifest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not problems: a host without the backup API


def read_chains(specs: SpecSet, states: dict[str, HostState], ops_for: Callable[[str], BackupOps], *,
                guests: set[str] | None = None, from_copy: bool = False,
                use: Callable[[Store, GuestChains], None] | None = None) -> list[GuestChains]:
    """Each selected guest's backups per policy, from the host's target or (``from_copy``) the
    policy's copyTo directory; ``use`` runs while the store is open (verify, restore)."""
    out = []
    for host, g, chosen in selected(specs, states):
        name = g.metadata.name
        if guests is not None and name not in guests:
            continue
        ops = ops_for(host)
        for policy in chosen:
            target = policy.spec.target
            if from_copy:
                local = copy_dir(policy.spec, name)
                if local is None:
                    continue
                gc = GuestChains(host, name, policy.metadata.name, local.where)
                gc.manifests, gc.problems = read_manifests(local, name)
                gc.manifests = [m for m in gc.manifests if m.policy == gc.policy]
                if use is not None:
                    use(local, gc)
                out.append(gc)
                continue
            why = ops.unsupported()
            if why:
                out.append(GuestChains(host, name, policy.metadata.name, host, notes=[why]))
                continue
            with ops.store(target) as store:
                gc = GuestChains(host, name, policy.metadata.name, store.where)
                gc.manifests, gc.problems = read_manifests(store, name)
                gc.manifests = [m for m in gc.manifests if m.policy == gc.policy and m.instance == ops.instance]
                if use is not None:
                    use(store, gc)
                out.append(gc)
    return out


def verify_all(specs: SpecSet, states: dict[str, HostState], ops_for: Callable[[str], BackupOps], *,
               from_copy: bool = False) -> tuple[list[dict[str, Any]], list[GuestChains]]:
    """Every backup of every selected guest checked (``verify_backup``): one result per backup."""
    results: list[dict[str, Any]] = []

    def check(store: Store, chains: GuestChains) -> None:
        by_id = {m.id: m for m in chains.manifests}
        for m in chains.manifests:
            results.append({"host": chains.host, "guest": m.guest, "policy": m.policy, "id": m.id,
                            "where": store.where, "problems": verify_backup(store, m, by_id)})
        # Files named like this policy's backups of the guest that no manifest names: an
        # interrupted backup (killed between its files and its manifest), or a manifest deleted.
        named = {m.file_name for m in chains.manifests} | {d.file for m in chains.manifests for d in m.disks}
        prefix = f"{chains.guest}.vs-{chains.policy}-"
        chains.problems += [f"{store.where}/{n}: no manifest names this file (an interrupted backup?)"
                            for n in store.names() if n.startswith(prefix) and n not in named]

    chains = read_chains(specs, states, ops_for, from_copy=from_copy, use=check)
    return results, chains


def annotate_freshness(specs: SpecSet, host_plans: Iterable[HostPlan], ops_for: Callable[[str], BackupOps],
                       now: datetime) -> None:
    """Each backup policy's newest-backup freshness into its guests' drift info (drift, /status)."""
    if not specs.backup_policies:
        return
    guests = {g.metadata.name: g for g in specs.guests}
    for hp in host_plans:
        if hp.error:
            continue
        ops = ops_for(hp.host)
        try:
            if ops.unsupported():
                continue  # run and list name such hosts; there is nothing to be fresh
        except HostError:
            continue
        for entry in hp.drift:
            g = guests.get(entry.key.name)
            if entry.key.kind != "Guest" or g is None or entry.status == "missing":
                continue
            rows = []
            for policy in policies_for(g.metadata.labels, specs.backup_policies):
                try:
                    with ops.store(policy.spec.target) as store:
                        manifests, _ = read_manifests(store, g.metadata.name)
                except HostError:
                    manifests = []  # a target that is not there: no backup, which is critical
                backups = [m.backup() for m in manifests if m.instance == ops.instance]
                rows.append(freshness(policy, backups, now).as_json())
            if rows:
                entry.info["backups"] = rows


def chain_for(manifests: list[Manifest], wanted: Manifest) -> list[Manifest]:
    by_id = {m.id: m for m in manifests}
    return [by_id[i] for i in wanted.chain if i in by_id]


def pick(manifests: list[Manifest], at: str) -> Manifest | None:
    """A backup by id, or the newest taken at or before a time (ISO 8601 with its zone)."""
    by_id = {m.id: m for m in manifests}
    if at in by_id:
        return by_id[at]
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    before = [m for m in manifests if m.created <= when]
    return max(before, key=lambda m: (m.created, m.id), default=None)
