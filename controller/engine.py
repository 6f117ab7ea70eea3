"""The one path every verb and the service take: observe → plan → execute → observe again.

``Engine.reconcile(specs, scope)`` serves ``plan``, ``apply``, ``drift`` and every reconcile
of ``serve``; the scope is everything, some hosts, or one object. Moves across hosts are
planned in every scope that can see both ends (hosts outside the scope are looked at for the
moving guests only), and after execute the status of what was touched comes from observing
it again, not from assuming success.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from controller.apply.changeset import ChangeSet, unchanged_of
from controller.errors import HostError, UsageError
from controller.hypervisor.capabilities import host_memory, probe
from controller.hypervisor.connection import ConnectionPool, HostConnection
from controller.hypervisor.observe import domain_names, look_up_guests, observe_for_guest, observe_host
from controller.model.state import HostCapabilities, HostState, ObservedGuest, Owner, ResourceKey
from controller.plan.actions import Action, HostPlan, Plan, touched_hosts
from controller.plan.adoption import Refusal, adoption
from controller.plan.context import PlanOptions, applied_fields, digest
from controller.plan.planner import DEFAULT_MAX_DELETIONS, guard_problems, make_plan, plan_host
from controller.plan.scope import Scope, declared_elsewhere, move_lookups, scoped_specs
from controller.spec.models import Host
from controller.spec.secrets import secret_inputs, value_digests
from controller.spec.specset import SpecSet

_T = TypeVar("_T")

if TYPE_CHECKING:  # backups, snapshots and export stay off the path of plan and apply
    from controller.apply.executor import Progress
    from controller.coordination import HostLocks, OnWait
    from controller.hypervisor.backups import BackupOps
    from controller.hypervisor.operations import HostOps
    from controller.hypervisor.snapshots import SnapshotOps


@dataclass
class Observation:
    """What was read of each host, and which hosts could not be read."""

    states: dict[str, HostState] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # host → why it could not be read
    seconds: dict[str, float] = field(default_factory=dict)
    partial: set[str] = field(default_factory=set)  # hosts only looked at for moving guests
    lookup_failed: dict[str, str] = field(default_factory=dict)  # such hosts that did not answer


# Decides, between planning and executing, what is carried out: the plan (or a narrowed
# copy), or None for nothing (a refused guard, a "no" at the prompt, a dry run).
Gate = Callable[[Plan, Observation], Plan | None]


@dataclass
class Reconciled:
    """One pass of the reconcile path: its plan, what it observed and, if it carried the plan out, what changed."""

    plan: Plan  # what the scope needed, as observed
    obs: Observation
    specs: SpecSet  # the specs that were planned (the scope's slice)
    changes: ChangeSet | None = None  # None: nothing was carried out
    after: Plan | None = None  # from observing again after execute: the status of what was touched
    outside: tuple[Action, ...] = ()  # work an object's scope left to its host's (networks, pools)
    waited: dict[str, float] = field(default_factory=dict)  # host → seconds waited for its lock
    busy: dict[str, str] = field(default_factory=dict)  # host → holder: its actions were left out


def spec_digest(specs: SpecSet) -> str:
    return specs.memo("spec_digest", _spec_digest)


def _hosts_by_name(specs: SpecSet) -> dict[str, Host]:
    return {h.metadata.name: h for h in specs.hosts}


def _host_uris(specs: SpecSet) -> dict[str, str]:
    return {h.metadata.name: h.spec.uri for h in specs.hosts}


def _spec_digest(specs: SpecSet) -> str:
    # Sorted by identity only: the same network name on several hosts must not compare dicts.
    def ident(obj: Any) -> tuple[str, str, str]:
        return (obj.kind, str(getattr(obj.spec, "host", "") or ""), obj.metadata.name)

    items = sorted(specs.items, key=lambda i: ident(i.obj))
    values = value_digests(specs)  # a Secret's new value changes the specs, not their text
    return digest([(ident(i.obj), applied_fields(i.obj.spec), i.obj.metadata.labels, i.obj.metadata.annotations,
                    secret_inputs(i.obj, values)) for i in items])


def _guest_placement(specs: SpecSet) -> dict[str, frozenset[str]]:
    """guest name → the hosts the specs place it on."""
    out: dict[str, set[str]] = {}
    for g in specs.guests:
        out.setdefault(g.metadata.name, set()).add(g.spec.host or "")
    return {n: frozenset(h) for n, h in out.items()}


def observed_elsewhere(specs: SpecSet, states: Mapping[str, HostState]) -> dict[str, frozenset[str]]:
    """``declared_elsewhere`` narrowed to the guests each observed host has: all the planner asks
    of it (is this extra guest declared on another host?). The full table holds, for each of a
    fleet's hosts, nearly every guest name of the fleet: quadratic in time and memory (1,000
    hosts × 100 guests: 10^8 entries)."""
    placed = specs.memo("guest-placement", _guest_placement)

    def other(name: str, host: str) -> bool:
        on = placed.get(name)
        return on is not None and (len(on) > 1 or host not in on)

    return {host: frozenset(n for n in state.guests if other(n, host)) for host, state in states.items()}


class _Summary:
    """What make_plan asks of a host that is not planned with it: each guest's name, UUID, power
    state and owner's instance (a few tuples, not the observed definitions)."""

    __slots__ = ("caps", "guests", "host", "uri")

    def __init__(self, state: HostState):
        self.host, self.uri, self.caps = state.host, state.uri, state.caps
        self.guests = {n: (g.uuid, g.state, g.owner.instance if g.owner is not None else None)
                       for n, g in state.guests.items()}

    def state(self) -> HostState:
        return HostState(self.host, self.uri, self.caps, {
            n: ObservedGuest(n, uuid, power, -1, None, None, False,
                             Owner(instance, "Guest", n) if instance is not None else None)
            for n, (uuid, power, instance) in self.guests.items()})


def _depends_on_others(host: str, mine: SpecSet, state: HostState, placed: Mapping[str, frozenset[str]]) -> bool:
    """Whether another host's state may change this host's plan (see Engine.drift)."""
    for g in mine.guests:
        if g.spec.host == host and (g.metadata.name not in state.guests or len(placed[g.metadata.name]) > 1):
            return True
    return any(not placed.get(n, frozenset()) <= {host} for n in state.guests)


# A drift of this many hosts or more reads them in one process per CPU (Engine.drift's jobs).
FORK_FROM = 32
# Hosts read at once in each such process: overlaps the waits of hosts slow to answer (connect
# timeouts), few enough that the GIL is not fought over.
THREADS_PER_JOB = 4
# Chunks a process reads before a fresh one takes over (forkmap's recycle): what it copied of the
# loaded specs and kept in its allocator is given back.
CHUNKS_PER_JOB = 4


def _each_host(one: Callable[[Host], _T], hosts: Sequence[Host], jobs: int | None) -> Iterator[_T]:
    """``one(host)`` of every host, in any order: in ``jobs`` forked processes (default one per
    CPU for FORK_FROM hosts or more) where this process may fork (see forkmap.can_fork), else
    on up to 16 threads here."""
    from controller import forkmap

    if jobs is None:
        jobs = forkmap.usable_cpus() if len(hosts) >= FORK_FROM else 1
    if jobs > 1 and len(hosts) > 1 and forkmap.can_fork():
        # Chunks small enough that every process gets several (the last ones even out the ends).
        chunk = max(1, min(2 * THREADS_PER_JOB, len(hosts) // (4 * jobs)))
        for _, got in forkmap.fork_map(one, hosts, jobs, chunk=chunk, threads=THREADS_PER_JOB,
                                       recycle=CHUNKS_PER_JOB):
            yield got
        return
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as ex:
        yield from ex.map(one, hosts)


def select_hosts(specs: SpecSet, names: Sequence[str] = (), connect: str | None = None,
                 selector: Sequence[str] = ()) -> SpecSet:
    """Limit the spec set to some hosts (by name, or by Host labels ``key=value``);
    ``--connect`` overrides the URI of a one-host run."""
    hosts = specs.hosts
    if selector:
        labels: dict[str, str] = {}
        for term in selector:
            key, sep, value = term.partition("=")
            if not sep or not key:
                raise UsageError(f"--host-selector {term!r} is not key=value")
            labels[key] = value
        hosts = [h for h in hosts if labels.items() <= h.metadata.labels.items()]
        if not hosts:
            raise UsageError(f"no host has the labels {labels}")
        names = [*names, *(h.metadata.name for h in hosts)] if names else [h.metadata.name for h in hosts]
    if names:
        unknown = sorted(set(names) - {h.metadata.name for h in hosts})
        if unknown:
            raise UsageError(f"unknown host(s): {', '.join(unknown)}")
        hosts = [h for h in hosts if h.metadata.name in names]
    if connect:
        if len(hosts) != 1:
            raise UsageError(f"--connect needs exactly one host; the specs have {len(hosts)} "
                             "(choose one with --host)")
        only = hosts[0]
        new = only.model_copy(update={"spec": only.spec.model_copy(update={"uri": connect})})
        items = tuple(i for i in specs.for_host(only.metadata.name).items)
        from controller.spec.specset import Located

        items = tuple(Located(new, i.file, i.doc) if i.obj is only else i for i in items)
        return SpecSet(items)
    keep = {h.metadata.name for h in hosts}
    if len(keep) == len(specs.hosts):
        return specs
    from controller.spec.models import UNPLACED, Guest, Network, StoragePool

    def wanted(obj: object) -> bool:
        if isinstance(obj, Host):
            return obj.metadata.name in keep
        if isinstance(obj, Guest | Network | StoragePool):
            return obj.spec.host in keep
        return isinstance(obj, UNPLACED)

    return SpecSet(tuple(i for i in specs.items if wanted(i.obj)))


__all__ = ["DEFAULT_MAX_DELETIONS", "Engine", "Observation", "Reconciled", "Refusal", "Scope", "adoption",
           "declared_elsewhere", "guard_problems", "planned_diffs", "select_hosts", "spec_digest"]


# How long a host's list of domain names narrows lookups (events forget it sooner).
NAMES_TTL = 30.0

# One pool per process: the service and repeated in-process runs reuse connections
# (and the libvirt test driver keeps its state only as long as its connection).
SHARED_POOL = ConnectionPool()


class Engine:
    def __init__(self, pool: ConnectionPool | None = None, instance: str = "default",
                 locks: HostLocks | None = None, fence: Callable[[str], str | None] | None = None):
        self.pool = pool or SHARED_POOL
        self.instance = instance
        self.locks = locks  # writers hold host locks when given (apply, serve, snapshots run)
        self.fence = fence  # asked before each action: why not to change a host now (serve replicas)
        # Per host, the names of its domains and when they were listed: a guest missing on its
        # host is looked up only on hosts that have a domain of its name (a fleet's reconcile
        # would otherwise ask every other host). Forgotten on the host's lifecycle events.
        self._names: dict[str, tuple[float, frozenset[str], Any]] = {}  # host → (when, names, connection)
        self._probes: dict[str, dict[int, tuple[Any, HostCapabilities]]] = {}  # host → id(conn) → (conn, caps)

    def connection(self, host: Host) -> HostConnection:
        """The host's shared connection, with its spec's connect and call timeouts."""
        return self.pool.for_host(host.metadata.name, host.spec.uri, float(host.spec.connect_timeout),
                                  tls=host.spec.tls, call_timeout=float(host.spec.call_timeout))

    def _observe_one(self, host: Host) -> tuple[str, HostState | None, str, float]:
        """(name, state or None, why it could not be read, seconds) of one whole host."""
        started = time.monotonic()
        try:
            hc = self.connection(host)
            conn = hc.get()
            # probed once per connection: what a host can do changes only with its daemon, and a
            # restarted daemon is a new connection (8 calls fewer per observation)
            caps = self._caps(host.metadata.name, conn, host.spec.hypervisor)
            # a host with many domains is read over several of its connections (observe_guests)
            state = observe_host(conn, host.metadata.name, host.spec.uri, caps, lanes=lambda k: hc.get(lane=k))
            self._remember_names(host.metadata.name, conn, frozenset(state.guests))
            return host.metadata.name, state, "", time.monotonic() - started
        except HostError as exc:
            return (host.metadata.name, None, str(exc).removeprefix(f"{host.metadata.name}: "),
                    time.monotonic() - started)

    def observe(self, specs: SpecSet) -> Observation:
        """Every host of ``specs``, concurrently; a host that fails is reported, not fatal."""
        obs = Observation()
        hosts = specs.hosts
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as ex:
            for name, state, error, secs in ex.map(self._observe_one, hosts):
                obs.seconds[name] = secs
                if state is not None:
                    obs.states[name] = state
                else:
                    obs.failed[name] = f"{error} (after {secs:.1f}s)"
        return obs

    def drift(self, specs: SpecSet, scope: Scope | None = None, *, commit: str = "",
              now: datetime | None = None, jobs: int | None = None) -> Reconciled:
        """What ``reconcile`` without a gate gives (the plan of the scope), in the memory of a few
        hosts: for a scope of everything, each host is planned as soon as it is observed and only
        its plan is kept (``obs.states`` stays empty). A host whose plan may depend on another
        host's state — one of its guests is missing, is declared on another host too, or is found
        here while declared elsewhere (make_plan's moves, clashes and leftovers) — is kept and
        planned at the end against a summary of every host's guests.

        A connection this drift opened is closed once its host is read: a one-shot command keeps
        no fleet of connections open (nor, for the test driver, each host's copy in memory).
        One that was open before is left open (the service's, or a test's in-process state).
        The plan carries no spec digest (what a saved plan is checked against): no drift report
        shows one, and a fleet's takes seconds to compute.

        ``jobs``: processes that read and plan the hosts (see _each_host; default one per CPU
        from FORK_FROM hosts on). A fleet's drift is mostly Python, which threads do not run
        at once; hosts whose connections were open before are read here, in this process."""
        scope = scope or Scope.everything()
        if scope.key is not None or scope.hosts:
            return self.reconcile(specs, scope, commit=commit, now=now)
        opts = PlanOptions(instance=self.instance, commit=commit, now=now or datetime.now(UTC))
        placed = specs.memo("guest-placement", _guest_placement)
        by_name = specs.memo("hosts", _hosts_by_name)
        names = scope.primary(specs)
        for name in names:
            specs.for_host(name)  # the per-host index, built once before the threads share it

        opened_before = {n for n in names if self.connection(by_name[n]).current is not None}

        def one(host: Host) -> tuple[str, HostPlan | HostState | None, _Summary | None, str, float]:
            name, state, error, secs = self._observe_one(host)
            if name not in opened_before:
                self._probes.pop(name, None)  # probes of the connections closed here
                self._names.pop(name, None)
                self.connection(host).close()
            if state is None:
                return name, None, None, error, secs
            summary = _Summary(state)
            mine = specs.for_host(name)
            if _depends_on_others(name, mine, state, placed):
                return name, state, summary, "", secs
            return name, plan_host(mine, state, opts), summary, "", secs

        obs = Observation()
        planned: dict[str, HostPlan] = {}
        deferred: dict[str, HostState] = {}
        summaries: dict[str, _Summary] = {}
        for name, got, summary, error, secs in _each_host(one, [by_name[n] for n in names],
                                                           1 if opened_before else jobs):
            obs.seconds[name] = secs
            if summary is None:
                obs.failed[name] = f"{error} (after {secs:.1f}s)"
                continue
            summaries[name] = summary
            if isinstance(got, HostState):
                deferred[name] = got
            elif got is not None:
                planned[name] = got
        if deferred:
            # The other hosts as make_plan reads them for moves, clashes and leftovers: their
            # guests' names, UUIDs, power states and owners' instances.
            states = {n: s.state() for n, s in summaries.items() if n not in deferred} | deferred
            only = SpecSet(tuple(i for i in specs.items
                                 if not isinstance(i.obj, Host) or i.obj.metadata.name in deferred))
            rest = make_plan(only, states, opts, "", None, frozenset(),
                             observed_elsewhere(specs, deferred))
            planned.update((hp.host, hp) for hp in rest.hosts)
        hosts = tuple(planned[n] if n in planned else
                      HostPlan(host=n, uri=by_name[n].spec.uri, fingerprint="", error=obs.failed[n])
                      for n in names)
        return Reconciled(Plan(hosts, self.instance, "", False), obs, specs)

    def plan(self, specs: SpecSet, obs: Observation, *, prune: bool = False, commit: str = "",
             now: datetime | None = None, elsewhere: Mapping[str, frozenset[str]] | None = None,
             digest_of: SpecSet | None = None) -> Plan:
        opts = PlanOptions(instance=self.instance, prune=prune, commit=commit,
                           now=now or datetime.now(UTC))
        return make_plan(specs, obs.states, opts, spec_digest(digest_of or specs), obs.failed,
                         frozenset(obs.partial), elsewhere)

    # ------------------------------------------------------------- reconcile

    def observe_scope(self, specs: SpecSet, scope: Scope, reach: AbstractSet[str] | None = None
                      ) -> tuple[Observation, SpecSet]:
        """The scope's hosts (an object's host narrowed to the object), then the hosts a moving
        guest may come from or go to (``reach``: the hosts that may be looked at; default all)."""
        hosts = specs.memo("hosts", _hosts_by_name)
        if scope.key is not None:
            obs = self._observe_object(hosts[scope.key.host], scope.key) if scope.key.host in hosts else Observation()
        else:
            obs = self.observe(SpecSet(tuple(i for n in scope.primary(specs) for i in specs.for_host(n).items
                                             if isinstance(i.obj, Host))))
        moves = move_lookups(specs, obs.states, scope, self.instance)
        lookups = {h: moves.names(h) for h in moves.hosts
                   if h in hosts and h not in obs.failed and (reach is None or h in reach)}

        def wanted(name: str, known: frozenset[str]) -> bool:
            # A move's target is observed even without the name; a possible source only if it has it.
            return name in moves.targets or bool(lookups[name] & known)

        def look(name: str) -> tuple[str, HostState | None, str]:
            host = hosts[name]
            try:
                conn = self.connection(host).get()
                caps = self._caps(name, conn, host.spec.hypervisor)  # a lookup per reconcile: probe once
                known = self._known_names(name, conn)
                if known is None:
                    known = self._remember_names(name, conn, domain_names(conn, name))
                if not wanted(name, known):
                    return name, None, ""
                return name, look_up_guests(conn, name, host.spec.uri, caps, lookups[name] & known), ""
            except HostError as exc:
                return name, None, str(exc)

        to_look = []
        for name in sorted(lookups):
            # Listed lately without any of these names: nothing to look up there (a fleet's
            # reconcile of a guest not made yet would otherwise carry every other host along).
            current = self.connection(hosts[name]).current
            caps = self._probe_of(name, current)
            known = self._known_names(name, current) if caps is not None else None
            if caps is not None and known is not None and not lookups[name] & known:
                if name in moves.targets:
                    obs.states[name] = look_up_guests(None, name, hosts[name].spec.uri, caps, frozenset())
                    obs.partial.add(name)
            else:
                to_look.append(name)
        if to_look:
            with ThreadPoolExecutor(max_workers=max(1, min(16, len(to_look)))) as ex:
                for name, state, error in ex.map(look, to_look):
                    if error:
                        obs.lookup_failed[name] = error
                    elif state is not None:
                        obs.states[name] = state
                        obs.partial.add(name)
        return obs, scoped_specs(specs, scope, {h: lookups[h] for h in obs.partial})

    def _observe_object(self, host: Host, key: ResourceKey) -> Observation:
        obs = Observation()
        name = host.metadata.name
        started = time.monotonic()
        try:
            conn = self.connection(host).get()
            caps = self._caps(name, conn, host.spec.hypervisor)
            obs.states[name] = observe_for_guest(conn, name, host.spec.uri, caps, key.name)
        except HostError as exc:
            self._probes.pop(name, None)
            obs.failed[name] = f"{str(exc).removeprefix(f'{name}: ')} (after {time.monotonic() - started:.1f}s)"
        obs.seconds[name] = time.monotonic() - started
        return obs

    def forget_names(self, host: str) -> None:
        """A host's domains changed (a lifecycle event): list them again before the next lookup."""
        self._names.pop(host, None)

    def _known_names(self, host: str, conn: Any) -> frozenset[str] | None:
        """The host's domain names listed lately on this very connection (a new connection may
        be another daemon, or a test driver's fresh state), else None."""
        got = self._names.get(host)
        if got is None or conn is None or got[2] is not conn or time.monotonic() - got[0] >= NAMES_TTL:
            return None
        return got[1]

    def _remember_names(self, host: str, conn: Any, names: frozenset[str]) -> frozenset[str]:
        self._names[host] = (time.monotonic(), names, conn)
        return names

    def _caps(self, name: str, conn: Any, configured: str | None) -> HostCapabilities:
        # An object's reconcile is the service's common case: probe a connection once. serve's
        # reconciles of one host's guests go over several of its connections (lanes) at once:
        # each is probed once, not again whenever the last probe was another lane's.
        caps = self._probe_of(name, conn)
        if caps is None:
            caps = probe(conn, name, configured)
            lanes = self._probes.setdefault(name, {})
            lanes[id(conn)] = (conn, caps)
            while len(lanes) > 16:  # connections reopened: the oldest are gone
                lanes.pop(next(iter(lanes)))
        return caps

    def _probe_of(self, name: str, conn: Any) -> HostCapabilities | None:
        """What probing ``conn`` found, if this very connection was probed (a new one may be
        another daemon)."""
        hit = self._probes.get(name, {}).get(id(conn)) if conn is not None else None
        return hit[1] if hit is not None and hit[0] is conn else None

    def reconcile(self, specs: SpecSet, scope: Scope | None = None, *, prune: bool = False, commit: str = "",
                  gate: Gate | None = None, concurrency: int = 8, progress: Progress | None = None,
                  elsewhere: Mapping[str, frozenset[str]] | None = None, reach: AbstractSet[str] | None = None,
                  now: datetime | None = None, on_wait: OnWait | None = None) -> Reconciled:
        """Observe the scope, plan it and — when ``gate`` lets it — carry the plan out, then observe
        again. Without a gate nothing changes (plan, drift). ``elsewhere`` defaults to what
        ``specs`` place on other hosts (give the complete specs' when ``specs`` are narrowed).

        A writer (a gate given, the engine has locks) holds the scope's host locks from before it
        observes until it has observed again; ``on_wait(host, holder)`` is told before it waits."""
        scope = scope or Scope.everything()
        if gate is None or self.locks is None:
            return self._reconcile(specs, scope, prune, commit, gate, concurrency, progress, elsewhere,
                                   reach, now, frozenset())
        uris = specs.memo("uris", _host_uris)
        mine = {name: uris[name] for name in scope.primary(specs) if name in uris}
        with self.locks.holding(mine, on_wait=on_wait) as waited:
            result = self._reconcile(specs, scope, prune, commit, gate, concurrency, progress, elsewhere,
                                     reach, now, frozenset(mine))
        result.waited = waited
        return result

    def _reconcile(self, specs: SpecSet, scope: Scope, prune: bool, commit: str, gate: Gate | None,
                   concurrency: int, progress: Progress | None,
                   elsewhere: Mapping[str, frozenset[str]] | None, reach: AbstractSet[str] | None,
                   now: datetime | None, held: frozenset[str]) -> Reconciled:
        def plan_scope() -> tuple[Plan, tuple[Action, ...], Observation, SpecSet]:
            obs, planned = self.observe_scope(specs, scope, reach)
            plan, outside = _narrow(self.plan(planned, obs, prune=prune and scope.key is None, commit=commit,
                                              elsewhere=elsewhere if elsewhere is not None
                                              else observed_elsewhere(specs, obs.states),
                                              digest_of=specs, now=now), scope)
            return plan, outside, obs, planned

        plan, outside, obs, planned = plan_scope()
        result = Reconciled(plan, obs, planned, outside=outside)
        if gate is None:
            return result
        chosen = gate(plan, obs)
        if chosen is None:
            return result
        uris = specs.memo("uris", _host_uris)
        with self._other_hosts(chosen, held, uris) as (chosen, busy):
            result.busy = busy
            result.changes = self.execute(chosen, planned, obs, commit=commit, concurrency=concurrency,
                                          progress=progress)
            if any(o.conflict for o in result.changes.failed):
                # An object appeared (or changed) since it was observed — another writer that
                # takes no lock, such as virsh: observe again and carry out what is still needed
                # of what the gate chose, once.
                again, _, obs2, planned2 = plan_scope()
                retry = _only(again, _chosen_ids(chosen, result.changes))
                if retry.has_changes:
                    second = self.execute(retry, planned2, obs2, commit=commit, concurrency=concurrency,
                                          progress=progress)
                    result.changes = _merge(result.changes, second)
            if chosen.has_changes:
                result.after = plan_scope()[0]
        return result

    @contextlib.contextmanager
    def _other_hosts(self, plan: Plan, held: frozenset[str], uris: Mapping[str, str]
                     ) -> Iterator[tuple[Plan, dict[str, str]]]:
        """The plan with each action that touches a host outside the held scope — its own host,
        or the source a move or migration takes the guest from — kept only where that host's lock
        is free now; never waited for, so two writers each holding one end never deadlock.
        ``busy``: host → who holds it, for the actions left out."""
        locks = self.locks
        if locks is None:
            yield plan, {}
            return
        extra: list[Any] = []
        free: dict[str, bool] = {}
        busy: dict[str, str] = {}

        def lockable(host: str) -> bool:
            if host in held or host not in uris:
                return True
            if host not in free:
                got = locks.try_hold(host, uris[host])
                free[host] = got is not None
                if got is None:
                    busy[host] = locks.holder_of(uris[host])
                else:
                    extra.append(got)
            return free[host]

        try:
            hosts = [replace(hp, actions=tuple(a for a in hp.actions
                                               if all(lockable(h) for h in touched_hosts(hp.host, a))))
                     for hp in plan.hosts]
            yield Plan(tuple(hosts), plan.instance, plan.spec_digest, plan.prune), busy
        finally:
            for got in extra:
                got.release()

    def execute(self, plan: Plan, specs: SpecSet, obs: Observation, *, commit: str = "",
                concurrency: int = 8, progress: Progress | None = None) -> ChangeSet:
        if not plan.has_changes:
            # Nothing to carry out (a no-op apply): the executor and its imports (~30 ms of such a
            # run's CPU, issue 17) are not needed to count what is unchanged.
            return ChangeSet(unchanged=unchanged_of(plan, ()))
        from controller.apply.executor import ExecOptions, execute
        from controller.hypervisor.operations import HostOps

        hosts = {h.metadata.name: h for h in specs.hosts}

        def ops_for(name: str) -> HostOps:
            return HostOps(self.connection(hosts[name]), obs.states[name].caps)

        return execute(plan, specs, obs.states, ops_for,
                       ExecOptions(self.instance, commit, concurrency, fence=self.fence), progress)

    # ------------------------------------------------------------- other verbs' host access

    @contextlib.contextmanager
    def writing(self, specs: SpecSet, *, on_wait: OnWait | None = None) -> Iterator[dict[str, float]]:
        """Hold the write locks of the hosts of ``specs`` (a writer that is not a reconcile, such as
        a snapshot or backup pass); yields the seconds waited per host."""
        if self.locks is None:
            yield {}
            return
        with self.locks.holding({h.metadata.name: h.spec.uri for h in specs.hosts}, on_wait=on_wait) as waited:
            yield waited

    def snapshot_ops(self, host: Host) -> SnapshotOps:
        """Snapshot calls on one host (the snapshot verbs, drift's freshness, the service)."""
        from controller.hypervisor.snapshots import SnapshotOps

        return SnapshotOps(self.connection(host), self.instance)

    def backup_ops(self, host: Host) -> BackupOps:
        """Backup calls on one host (the backup verbs, the service)."""
        from controller.hypervisor.backups import BackupOps

        return BackupOps(self.connection(host), self.instance)

    def host_memory(self, host: Host) -> int:
        """Physical memory of a host in bytes (placement)."""
        return host_memory(self.connection(host).get(), host.metadata.name)

    def export(self, name: str, uri: str, names: Sequence[str], *, include_host: bool,
               schema_url: str | None = None, everything: bool = False,
               tls: Any = None) -> list[tuple[str, str, str]]:
        """(kind, name, YAML) of a host's guests, networks and pools (adoption); ``tls``: the Host
        spec's client certificates, for a +tls URI."""
        from controller.hypervisor.export import export_objects

        conn = self.pool.for_host(name, uri, tls=tls)
        return export_objects(conn.get(), name, uri, list(names), include_host=include_host,
                              instance=self.instance, schema_url=schema_url, everything=everything)

    def close(self) -> None:
        if self.pool is not SHARED_POOL:
            self.pool.close()
        if self.locks is not None:
            self.locks.close()


def planned_diffs(plan: Plan, specs: SpecSet, states: Mapping[str, HostState], instance: str,
                  commit: str) -> dict[tuple[ResourceKey, str], str]:
    """plan --diff: the XML the executor will define (apply/definitions.py, imported only then)."""
    from controller.apply.definitions import planned_diffs as diffs

    return diffs(plan, specs, states, instance, commit)


def _chosen_ids(plan: Plan, done: ChangeSet) -> set[tuple[str, ResourceKey, str]]:
    """What the gate chose and has not been carried out yet: (host, key, op)."""
    ok = {(o.key.host, o.key, o.op) for o in done.outcomes if o.status != "failed"}
    return {(hp.host, a.key, a.op) for hp in plan.hosts for a in hp.actions} - ok


def _only(plan: Plan, ids: set[tuple[str, ResourceKey, str]]) -> Plan:
    return Plan(tuple(replace(hp, actions=tuple(a for a in hp.actions if (hp.host, a.key, a.op) in ids))
                      for hp in plan.hosts), plan.instance, plan.spec_digest, plan.prune)


def _merge(first: ChangeSet, second: ChangeSet) -> ChangeSet:
    """The first run's outcomes but its conflicts, then the retry's."""
    kept = [o for o in first.outcomes if not o.conflict]
    return ChangeSet(kept + second.outcomes, first.unchanged)


def _narrow(plan: Plan, scope: Scope) -> tuple[Plan, tuple[Action, ...]]:
    """An object's scope keeps only what serves the object; the rest is its host's business."""
    key = scope.key
    if key is None:
        return plan, ()
    hosts: list[HostPlan] = []
    outside: list[Action] = []
    for hp in plan.hosts:
        mine = tuple(a for a in hp.actions if a.serves == key.name)
        outside += [a for a in hp.actions if a.serves != key.name]
        hosts.append(replace(hp, actions=mine,
                             drift=tuple(d for d in hp.drift if d.key.kind == key.kind and d.key.name == key.name),
                             pending=tuple(p for p in hp.pending if p.key.name == key.name),
                             problems=tuple(p for p in hp.problems if p.key.name == key.name),
                             unmanaged=()))
    return Plan(tuple(hosts), plan.instance, plan.spec_digest, plan.prune), tuple(outside)
