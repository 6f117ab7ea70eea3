"""`virtsync serve`: the continuous reconciliation loop.

Sources (spec files, a followed git branch, libvirt lifecycle events, a
jittered resync) feed one de-duplicating queue keyed by (host, kind, name);
workers run the same observe → plan → execute path as `virtsync apply`.
A key of kind Host reconciles a host's whole slice (the only place pruning
happens, from a complete validated spec set, under the mass-deletion guard);
other keys reconcile one object.
"""

from __future__ import annotations

import contextlib
import random
import signal
import ssl
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.audit import AuditLog, CommitInfo, audit_to, snapshot_entry, stdout_event
from controller.commit_trust import CommitTrust, UntrustedCommit, verify_commit, working_tree_commit
from controller.coordination import DEFAULT_LOCK_TIMEOUT, HostBusy
from controller.engine import Engine, Observation, Reconciled, Scope, guard_problems, select_hosts
from controller.errors import HostError, UsageError, VirtsyncError
from controller.gitinfo import git_commit
from controller.hypervisor.events import HostEvents, start_event_loop
from controller.logging import get_logger
from controller.model.state import ResourceKey
from controller.plan.actions import Impact, Migrate, Move, ObjectDrift, Plan, Recover, Restart, Start
from controller.report.drift import DriftReport, render_json
from controller.report.status_page import StatusView, render_status_page
from controller.service.crash_backoff import CrashBackoff, hold_recoveries
from controller.service.desired import DesiredState
from controller.service.git import GitFollower, GitSource
from controller.service.host_locks import SharedHostLocks
from controller.service.http import DEFAULT_HOOK_RATE, Routes, serve_http
from controller.service.metrics import Metrics
from controller.service.notify import Notifier
from controller.service.queue import WorkQueue
from controller.service.replicas import Replicas
from controller.service.resync import LightResync
from controller.service.starts import StartSlots, Ticket
from controller.service.status import StatusStore
from controller.service.watch import SpecWatcher
from controller.spec.loader import load_specs
from controller.spec.specset import SpecSet
from controller.spec.yaml_reader import Limits

log = get_logger("virtsync.service")

LIGHT_LANE = -1  # the light resync's connection: a host's last lane (modulo its lanes)


@dataclass
class ServiceOptions:
    paths: list[str] = field(default_factory=list)
    git: GitSource | None = None
    git_interval: float = 30.0
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    instance: str = "default"
    prune: bool = False
    force: bool = False
    max_deletions: int = 10
    resync: float = 300.0
    light_resync: float = 4.0  # --light-resync: fingerprint pass interval (service/resync.py), 0: off
    workers: int = 16  # --workers: reconciles at once, of one host's guests too (service/host_locks.py)
    notify: str | None = None
    hook_secret: str | None = None
    token: str | None = None  # --token-file: every endpoint but /healthz wants it as a bearer token
    tls: ssl.SSLContext | None = None  # --tls-cert/--tls-key: the endpoints speak HTTPS
    hook_rate: int = DEFAULT_HOOK_RATE  # accepted POST /hooks/git per minute
    suspended: bool = False
    thrash_limit: int = 5  # repairs of one object …
    thrash_window: float = 600.0  # … within this many seconds count as thrashing
    shutdown_timeout: float = 60.0
    snapshot_interval: float = 60.0  # how often the snapshot scheduler looks; policies decide
    hosts: list[str] = field(default_factory=list)
    host_selector: list[str] = field(default_factory=list)  # Host labels key=value, all must match
    limits: Limits = field(default_factory=Limits)
    policy: str | None = None  # --policy: the tenancy policy file the specs must keep to
    trust: CommitTrust | None = None  # --verify-commits: only commits signed by an allowed key
    audit_log: str | None = None  # --audit-log: one JSON line per change, also an `audit` event on stdout
    coordination: str | None = None  # --coordination: tooz URL of the host write locks (default file://)
    replica_id: str | None = None  # --replica-id: share the hosts with other replicas (service/replicas.py)
    pins: list[str] = field(default_factory=list)  # --pin-host: hosts this replica always takes
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT  # --lock-timeout: how long a reconcile waits for a host's lock


class Service:
    def __init__(self, opts: ServiceOptions):
        self.opts = opts
        self.queue: WorkQueue[ResourceKey] = WorkQueue()
        holder = f"virtsync serve replica {opts.replica_id}" if opts.replica_id else "virtsync serve"
        # A host's object reconciles run at once under one hold of its lock (service/host_locks.py).
        self.locks = SharedHostLocks(opts.coordination, holder=holder, timeout=opts.lock_timeout,
                                     member=opts.replica_id)
        self.replicas = (Replicas(self.locks, opts.instance, opts.replica_id, opts.pins)
                         if opts.replica_id else None)
        self.engine = Engine(instance=opts.instance, locks=self.locks,
                             fence=self._fence if self.replicas is not None else None)
        self.desired = DesiredState()
        self.status = StatusStore(instance=opts.instance)
        self.metrics = Metrics()
        self.metrics.before_render(self._thrashing_metric)
        self.notifier = Notifier(opts.notify)
        self.stopping = threading.Event()
        self.suspended = opts.suspended
        self.git = GitFollower(opts.git) if opts.git else None
        self._events: dict[str, HostEvents] = {}
        self._repairs: dict[ResourceKey, deque[float]] = defaultdict(deque)
        self._thrashing: dict[ResourceKey, float] = {}
        self._repair_target: dict[ResourceKey, str | None] = {}
        self.crash_backoff = CrashBackoff()  # crashPolicy restart: recoveries of a guest back off
        self.starts = StartSlots(self.queue.add)  # guest starts under way per host (service/starts.py)
        # A pass is one long call (service/resync.py): on the host's last lane, never in the way of
        # the reconciles' calls on lane 0, which take turns (the test driver's one lane is lane 0).
        self.light = LightResync(lambda h: self.engine.connection(h).get(lane=LIGHT_LANE), self._changed_unannounced,
                                 interval=opts.light_resync)
        self._reload_lock = threading.Lock()
        self._lanes = Lanes()
        self._workers: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._first_sync: set[str] = set()
        self.http: Any = None
        self._rejected_commit = ""  # the last commit refused for its signature
        self.audit: AuditLog | None = None
        if opts.audit_log:
            # Authors from the followed repository's mirror, or the checkout holding the spec files.
            base = Path(opts.paths[0]).resolve() if opts.paths else Path.cwd()
            where = (CommitInfo(git_dir=str(self.git.mirror)) if self.git is not None
                     else CommitInfo(cwd=str(base if base.is_dir() else base.parent)))
            self.audit = AuditLog(opts.audit_log, opts.instance, where, echo=stdout_event)

    # ----------------------------------------------------------- sources

    def _verify(self, commit: str, paths: list[str]) -> None:
        assert self.opts.trust is not None
        if self.git is not None:
            signer = verify_commit(self.opts.trust, commit, git_dir=str(self.git.mirror))
        else:
            commit, signer = working_tree_commit(paths, self.opts.trust)
        log.info("commit verified", commit=commit, signer=signer)
        if self.audit is not None:
            self.audit.commits.signers[commit] = signer  # the audit lines of its changes name the signer

    def _untrusted(self, commit: str, exc: UntrustedCommit) -> None:
        """Like invalid specs: nothing of the commit is applied, the last good one stays in force;
        told once per commit (the branch is polled again and again)."""
        head = f"{exc}; nothing from it is applied, the last good specs stay in force"
        self.status.record("error", head)
        if commit and commit == self._rejected_commit:
            return
        self._rejected_commit = commit
        self.metrics.spec_errors.inc()
        log.error("untrusted commit", commit=commit, error=str(exc))
        self.notifier.send("untrusted-commit", head, commit=commit)

    def reload(self, reason: str = "files changed") -> None:
        """Load the specs (from the files, or the followed branch) and queue what changed."""
        with self._reload_lock:
            commit = ""
            try:
                if self.git is not None:
                    commit = self.git.fetch()
                    if commit == self.desired.commit and self.desired.specs is not None:
                        return
                    paths = [str(self.git.snapshot(commit))]
                else:
                    paths = self.opts.paths
                    commit = git_commit(paths)
                if self.opts.trust is not None:
                    self._verify(commit, paths)
            except UntrustedCommit as exc:
                self._untrusted(commit, exc)
                return
            except VirtsyncError as exc:
                self.status.record("error", f"cannot read specs: {exc}")
                log.error("spec source failed", error=str(exc))
                return
            result = load_specs(paths, self.opts.limits, policy=self.opts.policy)
            if result.errors:
                shown = [d.render().replace(paths[0].rstrip("/") + "/", "") for d in result.errors]
                self.desired.reject(commit, result.errors)
                self.metrics.spec_errors.inc()
                head = f"specs at {commit[:12] or 'the working tree'} are invalid; nothing from " \
                       "them is applied, the last good specs stay in force"
                self.status.record("error", f"{head}: {shown[0]}")
                log.error("invalid specs", commit=commit, errors=shown[:20])
                self.notifier.send("invalid-specs", f"{head}: {shown[0]}", commit=commit, errors=shown)
                return
            try:
                specs = (select_hosts(result.specs, self.opts.hosts, selector=self.opts.host_selector)
                         if self.opts.hosts or self.opts.host_selector else result.specs)
            except UsageError as exc:  # --host/--host-selector match nothing in these specs
                self.status.record("error", f"specs at {commit[:12] or 'the working tree'}: {exc}; the last "
                                   "good specs stay in force")
                log.error("no host of the specs is selected", commit=commit, error=str(exc))
                return
            changed, removed = self.desired.accept(specs, commit, complete=result.specs)
            self.status.forget_hosts({h.metadata.name for h in specs.hosts})
            self.status.record("info", f"specs loaded ({reason}): commit {commit[:12] or '-'}, "
                               f"{len(changed)} changed, {len(removed)} removed")
            log.info("specs loaded", commit=commit, changed=len(changed), removed=len(removed),
                     reason=reason)
            # Guests changed alone are reconciled one by one; anything else on a host (a new
            # host, a network or pool, a removal to prune) takes that host's whole slice,
            # where ordering and pruning live.
            whole = {k.host for k in removed} | {k.host for k in changed if k.kind != "Guest"}
            for host in sorted(whole):
                self.queue.add(ResourceKey(host, "Host", host))
            for key in sorted(changed):
                if key.host not in whole:
                    self.queue.add(key)

    def resync(self) -> None:
        specs, _ = self.desired.snapshot()
        if specs is None:
            return
        for host in specs.hosts:  # periodic: behind what events and spec changes queued
            self.queue.add(ResourceKey(host.metadata.name, "Host", host.metadata.name), background=True)

    def _on_event(self, host: str, kind: str, name: str) -> None:
        if kind == "Guest":
            self.engine.forget_names(host)  # a domain came or went: lookups there list it again
        self.queue.add(ResourceKey(host, kind, name))

    def _mine(self, host: str) -> bool:
        return self.replicas is None or self.replicas.owns(host)

    def _fence(self, host: str) -> str | None:
        """Before each action: a replica changes only hosts it still holds."""
        if self._mine(host):
            return None
        assert self.replicas is not None
        owner = self.replicas.view()["owners"].get(host)
        return f"replica {self.replicas.id} no longer holds host {host}" + (f" ({owner} does)" if owner else "")

    def _rebalance(self, specs: SpecSet | None) -> None:
        """Replicas: who holds which host now; a host gained is reconciled whole at once."""
        if self.replicas is None or specs is None:
            return
        try:
            gained, lost = self.replicas.refresh(h.metadata.name for h in specs.hosts)
        except Exception as exc:  # the backend did not answer: keep the last assignment
            log.warning("replica membership not refreshed", error=str(exc))
            return
        view = self.replicas.view()
        self.metrics.replica_hosts.labels(self.replicas.id).set(len(view["holds"]))
        for name in sorted(gained):
            self.status.record("info", f"replica {self.replicas.id} now holds host {name}")
            self.queue.add(ResourceKey(name, "Host", name))
        for name in sorted(lost):
            self.status.record("info", f"replica {self.replicas.id} handed host {name} to "
                               f"{view['owners'].get(name, 'another replica')}")
            self._first_sync.discard(name)
        if lost:
            self.status.forget_hosts(set(view["holds"]))

    def _watch_hosts(self) -> None:
        """Keep event callbacks registered; a reconnect queues the whole host."""
        while not self.stopping.is_set():
            specs, _ = self.desired.snapshot()
            self._rebalance(specs)
            for host in specs.hosts if specs else []:
                name = host.metadata.name
                if not self._mine(name):
                    continue
                conn = self.engine.connection(host)
                events = self._events.get(name)
                if events is None or events.conn is not conn:
                    events = self._events[name] = HostEvents(conn, self._on_event)
                try:
                    if events.ensure():
                        log.info("watching host", host=name)
                        self.queue.add(ResourceKey(name, "Host", name))
                        self.metrics.up.labels(name).set(1)
                except HostError as exc:
                    self.metrics.up.labels(name).set(0)
                    self.status.set_host(name, host.spec.uri, error=str(exc).removeprefix(f"{name}: "))
            self.stopping.wait(1.0)

    def _resync_loop(self) -> None:
        while not self.stopping.wait(self.opts.resync * random.uniform(0.9, 1.1)):
            self.resync()

    def _light_resync_loop(self) -> None:
        """Changes without an event: a fingerprint pass every --light-resync (service/resync.py)."""
        while not self.stopping.wait(self.opts.light_resync):
            specs, _ = self.desired.snapshot()
            if specs is None or self.suspended:
                continue
            try:
                self.light.run_pass(specs, self._mine)
            except Exception as exc:  # a bug must not stop the loop
                log.exception("light resync crashed", error=repr(exc))

    def _changed_unannounced(self, key: ResourceKey) -> None:
        log.info("changed without an event", host=key.host, kind=key.kind, name=key.name)
        # Behind announced work: most of what a pass finds is the service's own last repairs.
        self.queue.add(key, background=True)

    def _snapshot_loop(self) -> None:
        """Snapshot policies: a scheduling pass every snapshot_interval (the schedule decides)."""
        from controller.hypervisor.snapshots import SnapshotOps
        from controller.snapshots.runner import run_pass

        while not self.stopping.wait(self.opts.snapshot_interval):
            specs, _ = self.desired.snapshot()
            if specs is None or not specs.policies or self.suspended:
                continue
            hosts = {h.metadata.name: h for h in specs.hosts if self._mine(h.metadata.name)}
            for name, host in hosts.items():
                with self.locks.holding({name: host.spec.uri}):  # never beside another writer
                    obs = self.engine.observe(specs.for_host(name))
                    if name in obs.failed:
                        continue
                    conn = self.engine.connection(host)
                    ops = SnapshotOps(conn, self.opts.instance)

                    def ops_for(_host: str, ops: SnapshotOps = ops) -> SnapshotOps:
                        return ops

                    for o in run_pass(specs.for_host(name), obs.states, ops_for, datetime.now(UTC)):
                        level = "error" if o.action == "failed" else "info"
                        self.status.record(level, f"snapshot {o.action}: {o.host}/{o.guest} {o.snapshot} {o.detail}")
                        log.info("snapshot", host=o.host, guest=o.guest, policy=o.policy, outcome=o.action,
                                 snapshot=o.snapshot, detail=o.detail)
                        entry = snapshot_entry(o, self.desired.commit) if self.audit is not None else None
                        if entry is not None and self.audit is not None:
                            self.audit.write(entry)
                        if o.action == "failed":
                            self.notifier.send("snapshot-failed", f"snapshot of {o.guest} on {o.host} failed: "
                                               f"{o.detail}", host=o.host, name=o.guest)

    def _backup_loop(self) -> None:
        """Backup policies: a pass every snapshot_interval (the schedules decide what is due); a
        failed backup is retried with backoff (1 min, doubling, at most 1 h) and each failure alerts."""
        from controller.backups.runner import run_pass as backup_pass

        backoff: dict[tuple[str, str, str], tuple[int, float]] = {}  # (host, guest, policy) → failures, until
        while not self.stopping.wait(self.opts.snapshot_interval):
            specs, _ = self.desired.snapshot()
            if specs is None or not specs.backup_policies or self.suspended:
                continue
            for name, host in {h.metadata.name: h for h in specs.hosts if self._mine(h.metadata.name)}.items():
                now = time.monotonic()
                with self.locks.holding({name: host.spec.uri}):  # never beside another writer
                    obs = self.engine.observe(specs.for_host(name))
                    if name in obs.failed:
                        continue
                    ops = self.engine.backup_ops(host)

                    def progress(guest: str, done: int, total: int, host_name: str = name) -> None:
                        log.info("backup progress", host=host_name, guest=guest, bytes_done=done, bytes_total=total)

                    def ops_for(_host: str, ops: Any = ops) -> Any:
                        return ops

                    def ready(guest: str, policy: str, host_name: str = name, at: float = now) -> bool:
                        return backoff.get((host_name, guest, policy), (0, 0.0))[1] <= at

                    outcomes = backup_pass(specs.for_host(name), obs.states, ops_for, datetime.now(UTC),
                                           progress=progress, only=ready)
                for o in outcomes:
                    level = "error" if o.action == "failed" else "info"
                    self.status.record(level, f"backup {o.action}: {o.host}/{o.guest} {o.backup} {o.detail}")
                    log.info("backup", host=o.host, guest=o.guest, policy=o.policy, outcome=o.action,
                             backup=o.backup, detail=o.detail)
                    key = (o.host, o.guest, o.policy)
                    if o.action == "took":
                        backoff.pop(key, None)
                    elif o.action == "failed":
                        n = backoff.get(key, (0, 0.0))[0] + 1
                        delay = min(60.0 * 2 ** (n - 1), 3600.0)
                        backoff[key] = (n, time.monotonic() + delay)
                        self.metrics.backup_failures.labels(o.host, o.guest, o.policy).inc()
                        self.notifier.send("backup-failed", f"backup of {o.guest} on {o.host} failed "
                                           f"(attempt {n}, next in {delay:.0f}s): {o.detail}", host=o.host,
                                           name=o.guest)
                self._backup_status(name, specs.for_host(name), host)

    def _git_loop(self) -> None:
        while not self.stopping.wait(self.opts.git_interval):
            self.reload("git poll")

    # --------------------------------------------------------- reconcile

    def _worker(self) -> None:
        while not self.stopping.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            with self._busy_lock:
                self._busy += 1
            seen: float | None = None
            ticket = Ticket()
            try:
                seen = self.reconcile(key, ticket)
                self.queue.forget(key)
            except HostBusy as exc:  # another writer holds a host it needs: later, not an error
                delay = self.queue.add_rate_limited(key, exc.delay)
                log.info("reconcile deferred", host=key.host, kind=key.kind, name=key.name,
                         reason=str(exc), retry_in=round(delay, 1))
            except VirtsyncError as exc:
                self.metrics.errors.labels(key.host, key.kind).inc()
                if exc.retryable:
                    delay = self.queue.add_rate_limited(key, exc.delay)
                    self.status.record("error", f"{key}: {exc} (retry in {delay:.1f}s)")
                    log.error("reconcile failed", host=key.host, kind=key.kind, name=key.name,
                              error=str(exc), retry_in=round(delay, 1))
                else:
                    # Terminal (controller-runtime's TerminalError): a retry cannot help. The next
                    # spec change, event or resync tries again; until then it is reported.
                    self.queue.forget(key)
                    self.status.record("error", f"{key}: {exc} (not retried: a retry cannot help)")
                    log.error("reconcile failed", host=key.host, kind=key.kind, name=key.name,
                              error=str(exc), retry_in=None)
            except Exception as exc:  # a bug must not kill the worker
                delay = self.queue.add_rate_limited(key)
                self.metrics.errors.labels(key.host, key.kind).inc()
                log.exception("reconcile crashed", key=str(key), error=repr(exc))
            finally:
                self.starts.done(key, took=ticket.took)
                self.queue.done(key, seen_at=seen)
                self.metrics.queue_depth.set(self.queue.depth())
                with self._busy_lock:
                    self._busy -= 1

    def reconcile(self, key: ResourceKey, ticket: Ticket | None = None) -> float | None:
        """Reconcile one key. Returns, when its object ended in sync, a time from before its last
        observation of it: what was queued for it earlier (an event of its own repair) was seen.
        With a ticket (a worker's), a guest's start waits for a start slot of its host."""
        specs, commit = self.desired.snapshot()
        if specs is None:
            return None
        host = specs.host(key.host)
        if host is None:
            return None
        until = self._thrashing.get(key)
        if until is not None and time.monotonic() < until:
            return None
        if not self._mine(key.host):  # another replica holds it
            return None
        started = time.monotonic()
        rid = f"{random.getrandbits(32):08x}"
        # One writer per host (the engine holds the host's lock, see coordination.py): a whole-host
        # pass and an object pass, or this service and a manual apply, must not act on the same
        # guest from two observations. Guests of one host are reconciled at once, under one hold
        # of the lock (service/host_locks.py), each over its worker's lane (a connection's calls
        # take turns: a start would hold up the others' reads); a Host key holds the host alone.
        one_guest = key.kind == "Guest" and (key.host, key.name) in specs.memo("service-guests", _placed_guests)
        conn = self.engine.connection(host)
        ok = False
        try:
            with self._lanes.take(key.host, conn.lanes) as k, conn.lane(k), \
                    self.locks.shared(key.host, host.spec.uri) if one_guest else contextlib.nullcontext():
                seen = self._reconcile_locked(key, specs, commit, rid, one_guest, ticket)
            if self.desired.snapshot()[0] is not specs:
                seen = None  # specs loaded meanwhile: what they queued is not what was compared
            ok = True
        finally:
            seconds = time.monotonic() - started
            self.status.record_reconcile(key, seconds, ok)  # the page's latency chart
            log.info("reconciled", host=key.host, kind=key.kind, name=key.name, ok=ok, seconds=round(seconds, 3),
                     queued=round(self.queue.waited(key), 3), reconcile_id=rid)
        self.metrics.reconcile_seconds.labels(key.host, key.kind).observe(time.monotonic() - started)
        return seen

    def _reconcile_locked(self, key: ResourceKey, specs: SpecSet, commit: str, rid: str,
                          one_guest: bool, ticket: Ticket | None = None) -> float | None:
        """One key through the engine's reconcile, like `virtsync apply` of that scope: a Host key
        takes the host's whole slice (the only place pruning happens), a Guest key that guest.
        Returns what reconcile() does."""
        locked_at = time.monotonic()  # the object's observation starts after this
        last_action = [0.0]  # when the last action returned: observing it again starts after

        def progress(_outcome: Any, _n: int, _total: int) -> None:
            last_action[0] = time.monotonic()

        scope = Scope.of_object(key) if one_guest else Scope.of_hosts(key.host)
        host = specs.host(key.host)
        assert host is not None
        # An agent (--this-host) plans from the whole tree, its scope kept to its own hosts: a
        # guest whose host: moved here is looked up on (and moved from) the peer it left, whose
        # lock the engine takes. A peer is reached only at a URI none of our hosts has: an
        # agent-style tree of qemu:///system URIs must not take our own daemon for the peer.
        complete = self.desired.complete or specs
        reach = specs.memo(f"reach-in:{id(complete)}", lambda s: _reach(s, complete))
        with audit_to(self.audit):
            result = self.engine.reconcile(
                complete, scope, prune=self.opts.prune, commit=commit,
                gate=lambda plan, obs: self._gate(plan, obs, key, ticket if one_guest else None),
                elsewhere=self.desired.elsewhere(), reach=reach, progress=progress)
        if key.host in result.obs.failed:
            self.metrics.up.labels(key.host).set(0)
            self.status.set_host(key.host, host.spec.uri, error=result.obs.failed[key.host])
            raise HostError(result.obs.failed[key.host], host=key.host, retryable=True)
        self.metrics.up.labels(key.host).set(1)
        if result.outside:
            # A network or pool needs work too: that takes the whole host (NIC re-plugs
            # reach every guest on a restarted network).
            self.queue.add(ResourceKey(key.host, "Host", key.host))
        self._record(result, commit, rid, full=scope.key is None)
        if scope.key is None:
            hp = next((h for h in result.plan.hosts if h.host == key.host), None)
            if hp is not None and specs.policies and result.obs.states[key.host].caps.snapshots:
                self._snapshot_status(key.host, specs.for_host(key.host), host)
            if hp is not None and specs.backup_policies:
                self._backup_status(key.host, specs.for_host(key.host), host)
        if result.busy:
            other, holder = next(iter(result.busy.items()))
            raise HostBusy(f"host {other}, which this reconcile must change too, is locked by "
                           f"{holder}; retrying", host=key.host, delay=1.0)
        return _seen_in_sync(key, result, locked_at, last_action[0]) if one_guest else None

    def _gate(self, plan: Plan, obs: Observation, key: ResourceKey, ticket: Ticket | None = None) -> Plan | None:
        """What the service carries out of a plan: nothing while suspended; no deletions the
        mass-deletion guard refuses; nothing for objects backing off from thrashing; nothing on
        a host outside this service's slice (an agent moves a guest *to* its host; the source's
        agent leaves that to it). (The engine leaves out another host's part when another writer
        holds it; that is retried.)"""
        if self.suspended:
            return None
        mine, _ = self.desired.snapshot()
        own = {h.metadata.name for h in mine.hosts} if mine is not None else set()
        hosts = []
        now = time.monotonic()
        backed_off = {k for k, until in self._thrashing.items() if until > now}
        refusals = guard_problems(plan, obs.states, self.opts.max_deletions, self.opts.force) \
            if plan.prune else []
        if refusals:
            self.status.record("error", f"{key.host}: prune refused: {'; '.join(refusals)}")
            self.notifier.send("prune-refused", f"{key.host}: {'; '.join(refusals)}", host=key.host)
        for hp in plan.hosts:
            actions = [a for a in hp.actions if hp.host in own and a.key not in backed_off
                       and ResourceKey(hp.host, "Guest", a.serves or "") not in backed_off
                       and not (refusals and a.impact == Impact.DELETE)]
            actions = hold_recoveries(actions, self.crash_backoff, self._recovery_held)
            hosts.append(replace(hp, actions=tuple(actions)))
        if ticket is not None and any(isinstance(a, Start | Restart | Recover) for hp in hosts for a in hp.actions):
            ticket.took = self.starts.take(key)
            if not ticket.took:  # in line for a start slot: queued again when one is free
                log.info("start waits its turn", host=key.host, kind=key.kind, name=key.name,
                         waiting=self.starts.waiting(key.host))
                return None
        return Plan(tuple(hosts), plan.instance, plan.spec_digest, plan.prune)

    def _recovery_held(self, action: Recover, wait: float, count: int) -> None:
        self.status.record("warning", f"{action.key}: {action.fault}: recovered {count} time(s) in a row; the next "
                           f"destroy and start backs off {wait:.0f}s")
        self.queue.add_after(action.key, wait)

    def _record(self, result: Reconciled, commit: str, rid: str, *, full: bool) -> None:
        """Status, metrics, logs and notifications of one reconcile. What was touched shows what
        observing it again found, never an assumed success."""
        outcomes = result.changes.outcomes if result.changes is not None else []
        for o in outcomes:
            self.metrics.actions.labels(o.key.host, o.key.kind, o.op, o.status).inc()
            log.info("action", host=o.key.host, kind=o.key.kind, name=o.key.name, op=o.op,
                     outcome=o.status, detail=o.detail, seconds=round(o.seconds, 3),
                     reconcile_id=rid, commit=commit)
            self.status.record_action(o.key, o.op, o.status, detail=o.detail, seconds=o.seconds, commit=commit)
        failed = {(o.key.host, o.key.kind, o.key.name): o for o in outcomes if o.status == "failed"}
        touched = {(o.key.host, o.key.kind, o.key.name) for o in outcomes}
        after = {(d.key.host, d.key.kind, d.key.name): (d, hp) for hp in (result.after.hosts if result.after else ())
                 for d in hp.drift}
        for hp in result.plan.hosts:
            if hp.host in result.obs.partial:
                continue  # looked at for a move only: its own reconcile reports it
            if hp.host in result.obs.states:
                self.status.note_owners(result.obs.states[hp.host])  # the page's "last change" commits
            pending = {p.key: p for p in hp.pending}
            keep: set[ResourceKey] = set()
            for entry in hp.drift:
                k = entry.key
                keep.add(k)
                ident = (k.host, k.kind, k.name)
                new = entry
                if ident in failed:
                    new = ObjectDrift(k, "error", entry.changes, entry.reconcile, failed[ident].detail, entry.info)
                elif ident in touched and ident in after:
                    new, hp_after = after[ident]
                    pending = {**pending, **{p.key: p for p in hp_after.pending if p.key == k}}
                    if new.status in ("in-sync", "pending-restart"):
                        self._note_repair(k, entry)
                before = self.status.set_object(new, pending.get(k))
                self._notify_transition(before, new, commit)
            if full:
                self.status.drop_host_objects(hp.host, keep)
                self.status.set_host(hp.host, hp.uri, synced=True, unmanaged=hp.unmanaged, notes=hp.notes)
                self.metrics.last_sync.labels(hp.host).set(time.time())
                self._first_sync.add(hp.host)
            else:
                self.status.set_host(hp.host, hp.uri)
            self.metrics.drift.labels(hp.host).set(self.status.drift_count(hp.host))
            for p in hp.problems:
                self.status.record(p.severity, f"{p.key}: {p.message}")
        # A moved guest is gone from its source: no stale entry stays there.
        for o in outcomes:
            if o.status != "failed" and o.op in (Move.op, Migrate.op):
                for hp in result.plan.hosts:
                    if hp.host != o.key.host:
                        self.status.forget_object(ResourceKey(hp.host, "Guest", o.key.name))
        if failed:
            first = next(iter(failed.values()))
            raise HostError(f"{len(failed)} action(s) failed, first: {first.op} {first.key.name}: "
                            f"{first.detail}", host=first.key.host,
                            retryable=any(o.retryable for o in failed.values()),
                            delay=max(o.delay for o in failed.values()))

    def _snapshot_status(self, name: str, specs: SpecSet, host: Any) -> None:
        """Newest-snapshot freshness per guest into /status (read after the host's reconcile)."""
        from controller.hypervisor.snapshots import SnapshotOps
        from controller.snapshots.monitor import period_seconds
        from controller.snapshots.runner import annotate_freshness

        conn = self.engine.connection(host)
        plan = self.status.as_plan()
        mine = [hp for hp in plan.hosts if hp.host == name]
        now = datetime.now(UTC)
        annotate_freshness(specs, mine, lambda _h: SnapshotOps(conn, self.opts.instance), now)
        periods = {p.metadata.name: period_seconds(p.spec.schedule, now) for p in specs.policies}
        rows = []
        for hp in mine:
            for entry in hp.drift:
                if "snapshots" in entry.info:
                    self.status.set_object(entry, self.status.pending.get(entry.key))
                    rows += [(entry.key.name, f["policy"], datetime.fromisoformat(f["newest"]).timestamp()
                              if f["newest"] else 0.0, periods[f["policy"]]) for f in entry.info["snapshots"]]
        self.metrics.set_snapshot_freshness(name, rows)

    def _backup_status(self, name: str, specs: SpecSet, host: Any) -> None:
        """Newest-backup freshness per guest into /status and the metrics (like snapshots')."""
        from controller.backups.runner import annotate_freshness
        from controller.snapshots.monitor import period_seconds

        ops = self.engine.backup_ops(host)
        plan = self.status.as_plan()
        mine = [hp for hp in plan.hosts if hp.host == name]
        now = datetime.now(UTC)
        try:
            annotate_freshness(specs, mine, lambda _h: ops, now)
        except HostError as exc:
            log.warning("backup freshness", host=name, error=str(exc))
            return
        periods = {p.metadata.name: period_seconds(p.spec.schedule, now) for p in specs.backup_policies}
        rows = []
        for hp in mine:
            for entry in hp.drift:
                if "backups" in entry.info:
                    self.status.set_object(entry, self.status.pending.get(entry.key))
                    rows += [(entry.key.name, f["policy"], datetime.fromisoformat(f["newest"]).timestamp()
                              if f["newest"] else 0.0, periods[f["policy"]]) for f in entry.info["backups"]]
        self.metrics.set_backup_freshness(name, rows)

    def _thrashing_metric(self) -> None:
        now = time.monotonic()
        counts = dict.fromkeys({k.host for k in self._thrashing}, 0)
        for key, until in list(self._thrashing.items()):
            counts[key.host] += until > now
        for host, n in counts.items():
            self.metrics.thrashing.labels(host).set(n)

    def _note_repair(self, key: ResourceKey, entry: ObjectDrift) -> None:
        """Thrash detection: an object changed back out of band again and again."""
        if entry.status != "drift":  # creating a missing object is not a repair of one
            return
        # A change of the spec is not thrashing: count only repairs toward the same desired state.
        wanted = self.desired.digest_of(key)
        if self._repair_target.get(key) != wanted:
            self._repair_target[key] = wanted
            self._repairs[key].clear()
        now = time.monotonic()
        times = self._repairs[key]
        times.append(now)
        while times and times[0] < now - self.opts.thrash_window:
            times.popleft()
        if len(times) > self.opts.thrash_limit:
            self._thrashing[key] = now + self.opts.thrash_window
            times.clear()
            msg = (f"{key} was changed back out of band more than {self.opts.thrash_limit} times in "
                   f"{self.opts.thrash_window / 60:g} min: backing off for as long")
            self.status.record("warning", msg)
            self.notifier.send("thrashing", msg, host=key.host, kind=key.kind, name=key.name)
            self.queue.add_after(key, self.opts.thrash_window)

    def _notify_transition(self, before: ObjectDrift | None, after: ObjectDrift, commit: str) -> None:
        bad = ("drift", "missing", "extra", "error")
        was_bad = before is not None and before.status in bad
        k = after.key
        if after.status in bad and not was_bad:
            event = "apply-failed" if after.status == "error" else "drift"
            text = f"{k.kind} {k.name} on {k.host}: {after.status}" + (
                f" ({after.message})" if after.message else "")
            self.status.record("warning" if event == "drift" else "error", text)
            self.notifier.send(event, text, host=k.host, kind=k.kind, name=k.name, commit=commit,
                               changes=[c.as_json() for c in after.changes])
        elif was_bad and after.status in ("in-sync", "pending-restart"):
            text = f"{k.kind} {k.name} on {k.host} recovered"
            self.status.record("info", text)
            self.notifier.send("recovered", text, host=k.host, kind=k.kind, name=k.name, commit=commit)

    # ------------------------------------------------------------- views

    def status_json(self) -> dict[str, Any]:
        report = DriftReport(self.status.as_plan(), datetime.now(UTC), self.desired.commit)
        doc = render_json(report)
        err = self.desired.error
        doc["service"] = {
            "suspended": self.suspended,
            "queueDepth": self.queue.depth(),
            "specsLoadedAt": self.desired.loaded_at.isoformat() if self.desired.loaded_at else None,
            "specError": None if err is None else {
                "commit": err.commit or None,
                "at": err.at.isoformat(),
                "diagnostics": [d.as_json() for d in err.diagnostics],
            },
            "recentEvents": [{"at": ev.at.isoformat(), "level": ev.level, "message": ev.message}
                             for ev in self.status.recent()],
            "recentActions": [{"at": a.at.isoformat(), "host": a.key.host, "kind": a.key.kind,
                               "name": a.key.name, "op": a.op, "outcome": a.outcome, "detail": a.detail,
                               "seconds": round(a.seconds, 3), "commit": a.commit or None}
                              for a in self.status.recent_actions()[:20]],
            "replica": self.replicas.view() if self.replicas is not None else None,
            "lightResync": self.light.status() if self.opts.light_resync > 0 else None,
            "objects": self._compared(),
        }
        return doc

    def _compared(self) -> list[dict[str, Any]]:
        """When each object was last compared in full (a reconcile) and last fingerprinted."""
        compared, checked = self.status.compared_at(), self.light.checked()
        return [{"host": k.host, "kind": k.kind, "name": k.name, "lastCompared": at.isoformat(),
                 "lastChecked": checked[k].isoformat() if k in checked else None}
                for k, at in sorted(compared.items())]

    def status_page(self) -> str:
        err = self.desired.error
        hosts = self.status.host_status()
        return render_status_page(StatusView(
            self.status.as_plan(), datetime.now(UTC), commit=self.desired.commit,
            loaded_at=self.desired.loaded_at, spec_error=[d.render() for d in err.diagnostics] if err else [],
            events=[(ev.at, ev.level, ev.message) for ev in self.status.recent()],
            actions=self.status.recent_actions()[:30], last_change=self.status.last_changes(),
            owner_commits=self.status.commits(),
            reconciles=self.status.recent_reconciles(),
            last_sync={h: s.last_sync for h, s in hosts.items()}, suspended=self.suspended))

    def ready(self) -> bool:
        specs, _ = self.desired.snapshot()
        return specs is not None and {h.metadata.name for h in specs.hosts if self._mine(h.metadata.name)} <= (
            self._first_sync | set(self.status.host_status()))

    # --------------------------------------------------------- lifecycle

    def start(self) -> None:
        start_event_loop()  # before any connection is opened
        host, port = self.opts.listen
        self.http = serve_http(host, port, Routes(
            health=lambda: not self.stopping.is_set() and all(t.is_alive() for t in self._workers),
            ready=self.ready, metrics=self.metrics.render, status=self.status_json,
            page=self.status_page, git_hook=(lambda: self._spawn(self.reload, "git hook"))
            if self.git else None, hook_secret=self.opts.hook_secret, token=self.opts.token,
            hook_rate=self.opts.hook_rate), tls=self.opts.tls)
        scheme = "https" if self.opts.tls else "http"
        shown = f"[{host}]" if ":" in host else host
        log.info("listening", address=f"{scheme}://{shown}:{self.http.server_address[1]}",
                 token=self.opts.token is not None)
        self.reload("start")
        for i in range(max(1, self.opts.workers)):
            t = threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self._spawn(self._watch_hosts)
        self._spawn(self._resync_loop)
        if self.opts.light_resync > 0:
            self._spawn(self._light_resync_loop)
        self._spawn(self._snapshot_loop)
        self._spawn(self._backup_loop)
        if self.git is not None:
            self._spawn(self._git_loop)
        else:
            self.watcher = SpecWatcher([Path(p) for p in self.opts.paths], lambda: self.reload())
            self.watcher.start()

    def _spawn(self, fn: Any, *args: Any) -> None:
        threading.Thread(target=fn, args=args, daemon=True).start()

    def stop(self) -> None:
        """Finish the reconciles in flight (up to shutdown_timeout), then stop."""
        self.stopping.set()
        self.queue.close()
        deadline = time.monotonic() + self.opts.shutdown_timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.http is not None:
            self.http.shutdown()
        if self.replicas is not None:
            self.replicas.leave()  # the others take its hosts now, not when its heartbeat expires
        log.info("stopped")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self._spawn(self.reload, "SIGHUP"))
        signal.signal(signal.SIGUSR1, lambda *_: self._toggle_suspend())
        self.start()
        while not self.stopping.wait(0.5):
            pass
        self.stop()
        return 0

    def _toggle_suspend(self) -> None:
        self.suspended = not self.suspended
        self.status.record("warning", "suspended: reporting only" if self.suspended else "resumed")
        if not self.suspended:
            self.resync()


def _seen_in_sync(key: ResourceKey, result: Reconciled, locked_at: float, last_action: float) -> float | None:
    """A time from before the last observation of ``key``'s object, if that found it in sync:
    the first one's (after the lock was taken) when nothing was done, else the second one's
    (after the last action returned). None when it is not in sync, or an action failed."""
    outcomes = result.changes.outcomes if result.changes is not None else []
    if any(o.status == "failed" for o in outcomes):
        return None
    final, since = (result.after, last_action) if outcomes else (result.plan, locked_at)
    if final is None or not since:
        return None
    for hp in final.hosts:
        if hp.host == key.host:
            return since if any(d.key == key and d.status in ("in-sync", "pending-restart") for d in hp.drift) \
                else None
    return None


def _placed_guests(specs: SpecSet) -> frozenset[tuple[str, str]]:
    return frozenset((g.spec.host or "", g.metadata.name) for g in specs.guests)


class Lanes:
    """Which of a host's connections (lanes) a reconcile goes over: the one with the fewest
    reconciles on it now, the light resync's (the last) only when every other has one more (a
    pass is one long call there). A connection's calls take turns: a guest's start, seconds
    long, would hold up the reads of every other reconcile on its lane."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[str, list[int]] = {}  # host → reconciles on each lane now

    @contextlib.contextmanager
    def take(self, host: str, lanes: int) -> Iterator[int]:
        with self._lock:
            counts = self._inflight.setdefault(host, [0] * lanes)
            if len(counts) < lanes:
                counts.extend([0] * (lanes - len(counts)))
            light = lanes - 1 if lanes > 1 else -1
            k = min(range(lanes), key=lambda n: (counts[n] + (n == light), n == light, n))
            counts[k] += 1
        try:
            yield k
        finally:
            with self._lock:
                counts[k] -= 1

    def inflight(self, host: str) -> list[int]:
        with self._lock:
            return list(self._inflight.get(host, ()))


def _reach(specs: SpecSet, complete: SpecSet) -> frozenset[str]:
    """The hosts of the complete tree a reconcile may look at: ours, and peers at URIs none of ours has."""
    own = {h.spec.uri for h in specs.hosts}
    return frozenset(h.metadata.name for h in complete.hosts
                     if specs.host(h.metadata.name) is not None or h.spec.uri not in own)
