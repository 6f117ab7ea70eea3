"""The one path every verb and the service take: load → observe → plan → execute."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.apply.changeset import ChangeSet
from controller.apply.executor import ExecOptions, Progress, execute
from controller.errors import HostError, UsageError
from controller.hypervisor.capabilities import probe
from controller.hypervisor.connection import ConnectionPool
from controller.hypervisor.observe import observe_host
from controller.hypervisor.operations import HostOps
from controller.model.state import HostState
from controller.plan.actions import Plan
from controller.plan.context import PlanOptions, applied_fields, digest
from controller.plan.planner import make_plan
from controller.spec.models import Host
from controller.spec.specset import SpecSet


@dataclass
class Observation:
    states: dict[str, HostState] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # host → why it could not be read
    seconds: dict[str, float] = field(default_factory=dict)


def spec_digest(specs: SpecSet) -> str:
    # Sorted by identity only: the same network name on several hosts must not compare dicts.
    def ident(obj: Any) -> tuple[str, str, str]:
        return (obj.kind, str(getattr(obj.spec, "host", "") or ""), obj.metadata.name)

    items = sorted(specs.items, key=lambda i: ident(i.obj))
    return digest([(ident(i.obj), applied_fields(i.obj.spec), i.obj.metadata.labels, i.obj.metadata.annotations)
                   for i in items])


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
    from controller.spec.models import Guest, Network, SnapshotPolicy, StoragePool

    def wanted(obj: object) -> bool:
        if isinstance(obj, Host):
            return obj.metadata.name in keep
        if isinstance(obj, Guest | Network | StoragePool):
            return obj.spec.host in keep
        return isinstance(obj, SnapshotPolicy)

    return SpecSet(tuple(i for i in specs.items if wanted(i.obj)))


# One pool per process: the service and repeated in-process runs reuse connections
# (and the libvirt test driver keeps its state only as long as its connection).
SHARED_POOL = ConnectionPool()


class Engine:
    def __init__(self, pool: ConnectionPool | None = None, instance: str = "default"):
        self.pool = pool or SHARED_POOL
        self.instance = instance

    def _connection(self, host: Host):  # type: ignore[no-untyped-def]
        return self.pool.for_host(host.metadata.name, host.spec.uri, float(host.spec.connect_timeout))

    def observe(self, specs: SpecSet) -> Observation:
        """Every host of ``specs``, concurrently; a host that fails is reported, not fatal."""
        obs = Observation()

        def one(host: Host) -> tuple[str, HostState | None, str, float]:
            started = time.monotonic()
            try:
                conn = self._connection(host).get()
                caps = probe(conn, host.metadata.name, host.spec.hypervisor)
                state = observe_host(conn, host.metadata.name, host.spec.uri, caps)
                return host.metadata.name, state, "", time.monotonic() - started
            except HostError as exc:
                return (host.metadata.name, None, str(exc).removeprefix(f"{host.metadata.name}: "),
                        time.monotonic() - started)

        hosts = specs.hosts
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as ex:
            for name, state, error, secs in ex.map(one, hosts):
                obs.seconds[name] = secs
                if state is not None:
                    obs.states[name] = state
                else:
                    obs.failed[name] = f"{error} (after {secs:.1f}s)"
        return obs

    def plan(self, specs: SpecSet, obs: Observation, *, prune: bool = False, commit: str = "",
             now: datetime | None = None) -> Plan:
        opts = PlanOptions(instance=self.instance, prune=prune, commit=commit,
                           now=now or datetime.now(UTC))
        return make_plan(specs, obs.states, opts, spec_digest(specs), obs.failed)

    def execute(self, plan: Plan, specs: SpecSet, obs: Observation, *, commit: str = "",
                concurrency: int = 8, progress: Progress | None = None) -> ChangeSet:
        hosts = {h.metadata.name: h for h in specs.hosts}

        def ops_for(name: str) -> HostOps:
            return HostOps(self._connection(hosts[name]), obs.states[name].caps)

        return execute(plan, specs, obs.states, ops_for,
                       ExecOptions(self.instance, commit, concurrency), progress)

    def close(self) -> None:
        if self.pool is not SHARED_POOL:
            self.pool.close()
