"""desired × observed → Plan, for every host. Pure: no I/O, no clock (``now`` is an input)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from controller.model.state import HostState, ObservedGuest, ObservedPool, ResourceKey, pool_uuid
from controller.plan.actions import (
    Action,
    DeleteGuest,
    DeleteNetwork,
    DeletePool,
    DeleteVolume,
    FieldChange,
    HostPlan,
    Impact,
    Migrate,
    Move,
    ObjectDrift,
    Pending,
    Plan,
    Problem,
    RecreateGuest,
    UpdateGuest,
)
from controller.plan.context import SUSPEND_ANNOTATION, PlanOptions
from controller.plan.guests import plan_guest
from controller.plan.networks import plan_network
from controller.plan.scope import declared_elsewhere
from controller.plan.secrets import plan_secrets
from controller.plan.storage import plan_pool
from controller.plan.volumes import plan_volumes
from controller.spec.models import Network, StoragePool
from controller.spec.pool_sources import FILE_POOL_TYPES
from controller.spec.specset import SpecSet

DEFAULT_MAX_DELETIONS = 10


def plan_host(specs: SpecSet, host: HostState, opts: PlanOptions,
              moves_in: Mapping[str, tuple[str, str]] | None = None,
              moves_out: frozenset[str] = frozenset(), partial: bool = False,
              clashes: Mapping[str, str] | None = None, leftovers: frozenset[str] = frozenset()) -> HostPlan:
    """The plan of one host's slice of the specs. ``moves_in``: guests to migrate here (name →
    source host); ``moves_out``: guests leaving this host or declared for another one (neither
    extra nor pruned here). A ``partial`` host was only looked at for moves: only those are
    planned on it."""
    actions: list[Action] = []
    pending: list[Pending] = []
    problems: list[Problem] = []
    drift: list[ObjectDrift] = []
    moves_in = moves_in or {}
    if partial:
        specs = SpecSet(tuple(i for i in specs.items if not isinstance(i.obj, Network | StoragePool)))
    else:
        sp = plan_secrets(specs, host, opts)
        actions += sp.actions
        problems += sp.problems
        drift += sp.drift

    for pool in specs.pools:
        if pool.spec.host != host.host:
            continue
        pp = plan_pool(pool, host, opts)
        actions += pp.actions
        problems += pp.problems
        drift.append(_suspended(pool, _standing(ResourceKey(host.host, "StoragePool", pool.metadata.name),
                                                pp.drift, pp.problems, pool_exists=pool.metadata.name in host.pools)))
    if not partial:
        vp = plan_volumes(specs, host, opts)
        actions += vp.actions
        problems += vp.problems
        drift += vp.drift
    for net in specs.networks:
        if net.spec.host != host.host:
            continue
        np = plan_network(net, host, opts)
        actions += np.actions
        problems += np.problems
        drift.append(_suspended(net, _standing(ResourceKey(host.host, "Network", net.metadata.name),
                                               np.drift, np.problems, pool_exists=net.metadata.name in host.networks)))
    for guest in specs.guests:
        if guest.spec.host != host.host:
            continue
        move = moves_in.get(guest.metadata.name)
        if move is not None:
            source, kind = move
            key = ResourceKey(host.host, "Guest", guest.metadata.name)
            action: Action
            if kind == "live":
                change = FieldChange("/spec/host", host.host, source, source, Impact.LIVE, "live migration")
                action = Migrate(key=key, changes=(change,), source=source,
                                 reason=f"host changed from {source}: live migration (peer-to-peer, persistent "
                                 f"here, undefined on {source})")
            else:
                running = host.host != source and guest.spec.state != "stopped"
                change = FieldChange("/spec/host", host.host, source, None, Impact.RECREATE, "cold move")
                downtime = (f"downtime: from its shutdown on {source} until it starts here, disks copied "
                            "in between" if running else "no downtime: it is not running")
                action = Move(key=key, changes=(change,), source=source,
                              reason=f"host changed from {source}; no live migration possible: stop, copy "
                              f"its disks, define here under the same UUID, undefine on {source} ({downtime})")
            actions.append(action)
            drift.append(ObjectDrift(key, "drift", (change,), guest.spec.reconcile))
            continue
        if partial:
            continue
        other = (clashes or {}).get(guest.metadata.name)
        if other is not None:
            key = ResourceKey(host.host, "Guest", guest.metadata.name)
            problems.append(Problem(key, f"a guest named {guest.metadata.name!r} exists on host {other} and is "
                                    f"not this instance's: refusing to create a second one on {host.host} "
                                    f"(remove it there, or give it adopt: true on {other} first)"))
            drift.append(ObjectDrift(key, "error", message=problems[-1].message))
            continue
        gp = plan_guest(guest, host, opts)
        actions += gp.actions
        pending += gp.pending
        problems += gp.problems
        key = ResourceKey(host.host, "Guest", guest.metadata.name)
        obs = host.guests.get(guest.metadata.name)
        # Nothing to do but a restart that restartPolicy forbids: a status, not drift.
        waiting = bool(gp.pending) and not gp.actions and not gp.held
        entry = _standing(key, [] if waiting else gp.drift, gp.problems,
                          pool_exists=obs is not None)
        if entry.status == "in-sync" and gp.pending:
            entry = ObjectDrift(key, "pending-restart", tuple(c for p in gp.pending for c in p.changes))
        info = _guest_info(host, guest.metadata.name)
        suspended = guest.metadata.annotations.get(SUSPEND_ANNOTATION) == "true"
        drift.append(ObjectDrift(entry.key, entry.status, entry.changes,
                                 "suspended" if suspended else guest.spec.reconcile,
                                 entry.message, info))

    if not host.caps.snapshots:
        for policy in specs.policies:
            chosen = [g.metadata.name for g in specs.guests if g.spec.host == host.host
                      and policy.spec.selector.match_labels.items() <= g.metadata.labels.items()]
            if chosen:
                problems.append(Problem(ResourceKey(host.host, "SnapshotPolicy", policy.metadata.name),
                                        f"snapshots are not supported on host {host.host} ({host.caps.driver}: "
                                        f"no snapshot API); policy {policy.metadata.name} will not snapshot "
                                        f"{', '.join(sorted(chosen))}", severity="warning"))
    if host.caps.driver != "QEMU":  # libvirt's backup API (backupBegin, checkpoints) is the QEMU driver's
        for bpolicy in specs.backup_policies:
            chosen = [g.metadata.name for g in specs.guests if g.spec.host == host.host
                      and bpolicy.spec.selector.match_labels.items() <= g.metadata.labels.items()]
            if chosen:
                problems.append(Problem(ResourceKey(host.host, "BackupPolicy", bpolicy.metadata.name),
                                        f"backups are not supported on host {host.host} ({host.caps.driver}: no "
                                        f"backup API); policy {bpolicy.metadata.name} will not back up "
                                        f"{', '.join(sorted(chosen))}", severity="warning"))
    extra, unmanaged = _extra_objects(specs, host, opts) if not partial else ([], [])
    extra = [k for k in extra if not (k.kind == "Guest" and k.name in moves_out)]
    for name in sorted(leftovers):
        key = ResourceKey(host.host, "Guest", name)
        if host.guests[name].state != "stopped":
            problems.append(Problem(key, f"guest {name!r} is defined on its new host already and still "
                                    f"runs here: stop it to finish its move"))
            continue
        change = FieldChange("/", None, "defined", None, Impact.DELETE, "an interrupted move")
        actions.append(DeleteGuest(key=key, changes=(change,), moved=True, reason="moved away: the move "
                                   "that defined it on its new host was interrupted before it undefined it here"))
        drift.append(ObjectDrift(key, "extra", (change,), message="left behind by an interrupted move"))
    for key in extra:
        drift.append(ObjectDrift(key, "extra", message="managed by virtsync, gone from the specs"))
        if opts.prune:
            actions.extend(_delete_actions(key, host))
    more, actions = _dependency_problems(specs, host, actions)
    problems += more
    refused = {p.key for p in problems if p.severity == "error"}
    actions = [a for a in actions if a.key not in refused]
    return HostPlan(
        host=host.host,
        uri=host.uri,
        fingerprint=host.fingerprint,
        actions=tuple(sorted(actions, key=lambda a: (a.phase, a.key))),
        pending=tuple(pending),
        problems=tuple(problems),
        unmanaged=tuple(unmanaged),
        notes=host.caps.notes,
        drift=tuple(drift),
    )


def _suspended(obj: Network | StoragePool, entry: ObjectDrift) -> ObjectDrift:
    """Objects annotated virtsync/suspend: "true" are only reported."""
    if obj.metadata.annotations.get(SUSPEND_ANNOTATION) == "true":
        return replace(entry, reconcile="suspended")
    return entry


def _standing(key: ResourceKey, changes: list[FieldChange], problems: list[Problem],
              pool_exists: bool) -> ObjectDrift:
    errors = [p.message for p in problems if p.key == key and p.severity == "error"]
    if errors:
        return ObjectDrift(key, "error", message="; ".join(errors))
    if not pool_exists:
        return ObjectDrift(key, "missing", tuple(changes))
    return ObjectDrift(key, "drift" if changes else "in-sync", tuple(changes))


def _guest_info(host: HostState, name: str) -> dict[str, object]:
    obs = host.guests.get(name)
    if obs is None:
        return {}
    info: dict[str, object] = {"state": obs.state}
    if obs.live is not None:
        info["liveMemory"] = obs.live.memory
        details = host.details.get(name)
        info["agent"] = "connected" if obs.live.agent_connected else ("not connected" if obs.live.agent else "none")
        ips = list(details.addresses) if details else []
        if not ips:  # no agent (or it has no address yet): the networks' DHCP leases
            ips = sorted({ip for n in obs.live.interfaces for ip in host.leases.get(n.mac, ())})
        if ips:
            info["addresses"] = ips
        if details is not None and details.uptime is not None:
            info["uptimeSeconds"] = round(details.uptime)
    return info


def _ours_by_uuid(obj: object, name: str, instance: str) -> bool:
    """A pool that takes no marker volume (its volumes are not files) is ours by the UUID we gave it."""
    return (isinstance(obj, ObservedPool) and obj.owner is None and obj.type not in FILE_POOL_TYPES
            and obj.uuid == pool_uuid(instance, name))


def _extra_objects(specs: SpecSet, host: HostState, opts: PlanOptions
                   ) -> tuple[list[ResourceKey], list[ResourceKey]]:
    """Owned objects gone from the specs, and objects virtsync does not own."""
    want = {
        "Guest": {g.metadata.name for g in specs.guests if g.spec.host == host.host},
        "Network": {n.metadata.name for n in specs.networks if n.spec.host == host.host},
        "StoragePool": {p.metadata.name for p in specs.pools if p.spec.host == host.host},
    }
    observed: Mapping[str, Mapping[str, object]] = {
        "Guest": host.guests, "Network": host.networks, "StoragePool": host.pools,
    }
    extra: list[ResourceKey] = []
    unmanaged: list[ResourceKey] = []
    for kind, objects in observed.items():
        for name, obj in sorted(objects.items()):
            if name in want[kind]:
                continue
            owner = getattr(obj, "owner", None)
            key = ResourceKey(host.host, kind, name)
            if (owner is not None and owner.instance == opts.instance) or _ours_by_uuid(obj, name, opts.instance):
                extra.append(key)
            else:
                unmanaged.append(key)
    return extra, unmanaged


def _delete_actions(key: ResourceKey, host: HostState) -> list[Action]:
    change = FieldChange("/", None, "defined", None, Impact.DELETE)
    if key.kind == "Guest":
        obs = host.guests[key.name]
        delete_vols = _volumes_to_delete(host, key.name)
        actions: list[Action] = [DeleteGuest(key=key, reason="managed guest gone from the specs", changes=(change,),
                                             volumes=tuple(delete_vols), running=obs.state != "stopped")]
        for vol in delete_vols:
            pool, _, name = vol.partition("/")
            actions.append(DeleteVolume(key=ResourceKey(key.host, "Volume", vol), guest=key.name,
                                        reason=f"deletePolicy: delete (guest {key.name})",
                                        changes=(FieldChange("/", None, vol, None, Impact.DELETE),),
                                        pool=pool, volume=name))
        return actions
    if key.kind == "Network":
        return [DeleteNetwork(key=key, reason="managed network gone from the specs", changes=(change,))]
    return [DeletePool(key=key, reason="managed pool gone from the specs", changes=(change,))]


def _volumes_to_delete(host: HostState, guest: str) -> list[str]:
    """Volumes of a pruned guest whose last-applied disk said deletePolicy: delete."""
    obs = host.guests[guest]
    if obs.owner is None:
        return []
    disks = obs.owner.applied.get("disks") or []
    doomed = {d.get("name") for d in disks if isinstance(d, dict) and d.get("deletePolicy") == "delete"}
    out = []
    for vol in obs.owner.volumes:
        stem = vol.split("/", 1)[-1].rsplit(".", 1)[0]
        if stem.startswith(guest + "-") and stem[len(guest) + 1:] in doomed:
            out.append(vol)
    return out


def _dependency_problems(specs: SpecSet, host: HostState, actions: list[Action]
                         ) -> tuple[list[Problem], list[Action]]:
    """Refuse deleting a network or pool that a guest still uses.

    A managed guest whose planned update drops the network (or pool) no longer counts
    as a user: the deletion then waits for that update (``needs``) and is skipped if it
    fails, so a network never disappears under a guest that still has a NIC on it.
    """
    problems: list[Problem] = []
    out: list[Action] = []
    deleted_guests = {a.key.name for a in actions if isinstance(a, DeleteGuest)}
    desired = {g.metadata.name: g for g in specs.guests if g.spec.host == host.host}
    for action in actions:
        if not isinstance(action, DeleteNetwork | DeletePool):
            out.append(action)
            continue
        net = isinstance(action, DeleteNetwork)
        users: set[str] = set()
        waits: set[str] = set()
        for name, g in desired.items():
            if net and any(i.network == action.key.name for i in g.spec.interfaces):
                users.add(name)
            if not net and any(d.pool == action.key.name for d in g.spec.disks):
                users.add(name)
        for name, obs in host.guests.items():
            if name in deleted_guests or obs.persistent is None or name in users:
                continue
            if net:
                uses = any(n.network == action.key.name for n in obs.persistent.interfaces)
            else:
                pool = host.pools.get(action.key.name)
                prefix = (pool.path or "").rstrip("/") + "/" if pool else None
                uses = bool(prefix) and any((d.path or "").startswith(prefix or "") for d in obs.persistent.disks)
            if not uses:
                continue
            updating = name in desired and any(a.key.kind == "Guest" and a.key.name == name
                                               and isinstance(a, UpdateGuest | RecreateGuest) for a in actions)
            (waits if updating else users).add(name)
        if users:
            problems.append(Problem(action.key, f"refusing to delete {action.key.kind} "
                                    f"{action.key.name!r}: used by guest(s) {', '.join(sorted(users))}"))
        out.append(replace(action, needs=(*action.needs, *sorted(f"Guest/{n}" for n in waits)))
                   if waits else action)
    return problems, out


def guard_problems(plan: Plan, hosts: Mapping[str, HostState], max_deletions: int,
                   force: bool) -> list[str]:
    """The mass-deletion guard: too many deletions, or over half a host's managed guests."""
    if force:
        return []
    out: list[str] = []
    # the old copy of a guest moved elsewhere is not a loss: the guest lives on; a guest's volumes
    # count with the guest, a kind: Volume (deleted by no guest) on its own
    deletions = [a.key.name for a in plan.actions if a.impact == Impact.DELETE
                 and (a.key.kind != "Volume" or not a.guest) and not (isinstance(a, DeleteGuest) and a.moved)]
    # A device removed from a guest counts too: it is destructive like a deletion.
    deletions += [f"{a.key.name}: detach {device}" for a in plan.actions
                  if isinstance(a, UpdateGuest | RecreateGuest) for device in a.removes]
    if len(deletions) > max_deletions:
        out.append(f"refusing to delete or detach {len(deletions)} objects (more than --max-deletions "
                   f"{max_deletions}: {', '.join(deletions[:5])}{' …' if len(deletions) > 5 else ''}); "
                   "use --force if this is intended")
    for hp in plan.hosts:
        state = hosts.get(hp.host)
        if state is None:
            continue
        managed = [g for g in state.guests.values() if g.owner and g.owner.instance == plan.instance]
        doomed = [a for a in hp.actions if isinstance(a, DeleteGuest) and not a.moved]
        if managed and len(doomed) * 2 > len(managed):
            out.append(f"refusing to delete {len(doomed)} of {len(managed)} managed guests on "
                       f"{hp.host} (more than half); use --force if this is intended")
    return out


def find_moves(specs: SpecSet, states: Mapping[str, HostState], instance: str
               ) -> dict[str, tuple[str, str, str]]:
    """Guests whose spec names a new host: defined on another observed host and owned there by
    this instance, absent from the new one. name → (source, destination, live | cold).

    Live where both hosts run the same kind of hypervisor and the guest runs; otherwise a cold
    move (stop, copy the disks, define under the same UUID, start), whose downtime the plan names.
    """
    moves: dict[str, tuple[str, str, str]] = {}
    for g in specs.guests:
        dst = g.spec.host or ""
        if dst not in states or g.metadata.name in states[dst].guests:
            continue
        for src, state in states.items():
            obs = state.guests.get(g.metadata.name)
            if src == dst or obs is None or obs.owner is None or obs.owner.instance != instance:
                continue
            same_kind = state.caps.virt_type == states[dst].caps.virt_type and state.caps.driver != "Test"
            live = obs.state in ("running", "paused") and same_kind
            moves[g.metadata.name] = (src, dst, "live" if live else "cold")
            break
    return moves


def find_leftovers(specs: SpecSet, states: Mapping[str, HostState], instance: str
                   ) -> dict[str, frozenset[str]]:
    """Guests a move defined on their new host but, interrupted, did not undefine on the old one:
    host → names of such copies (this instance's, under the UUID of the guest on its new host).
    The move is finished by undefining them; their volumes are kept, as a move keeps them."""
    # Every name's copies, indexed once: asking each host for each guest is quadratic in a fleet.
    copies: dict[str, list[tuple[str, ObservedGuest]]] = {}
    for src, state in states.items():
        for name, obs in state.guests.items():
            if obs.owner is not None and obs.owner.instance == instance:
                copies.setdefault(name, []).append((src, obs))
    out: dict[str, set[str]] = {}
    for g in specs.guests:
        name, dst = g.metadata.name, g.spec.host or ""
        there = states[dst].guests.get(name) if dst in states else None
        if there is None or there.owner is None or there.owner.instance != instance:
            continue
        for src, obs in copies[name]:
            if src != dst and obs.uuid == there.uuid:
                out.setdefault(src, set()).add(name)
    return {h: frozenset(n) for h, n in out.items()}


def find_clashes(specs: SpecSet, states: Mapping[str, HostState], instance: str,
                 moves: Mapping[str, tuple[str, str, str]]) -> dict[str, str]:
    """Guests missing on their host that exist, not as this instance's, on another managed host:
    name → that host. Creating them would make a second guest of the name (and, on shared
    storage, a second writer of its disks): refused until it is moved, removed or adopted."""
    out: dict[str, str] = {}
    for g in specs.guests:
        name, dst = g.metadata.name, g.spec.host or ""
        if name in moves or dst not in states or name in states[dst].guests:
            continue
        for src, state in sorted(states.items()):
            obs = state.guests.get(name)
            if src != dst and obs is not None and (obs.owner is None or obs.owner.instance != instance):
                out[name] = src
                break
    return out


def make_plan(specs: SpecSet, states: Mapping[str, HostState], opts: PlanOptions,
              spec_digest: str, failed: Mapping[str, str] | None = None,
              partial: frozenset[str] = frozenset(),
              elsewhere: Mapping[str, frozenset[str]] | None = None) -> Plan:
    """The plan of every host of ``specs`` that was observed. ``partial``: hosts only looked at
    for moves; ``elsewhere``: per host, guests the complete specs place on other hosts (by
    default those of ``specs``), which are never extra there."""
    hosts = []
    moves = find_moves(specs, states, opts.instance)
    clashes = find_clashes(specs, states, opts.instance, moves)
    leftovers = find_leftovers(specs, states, opts.instance)
    elsewhere = elsewhere if elsewhere is not None else declared_elsewhere(specs)
    for host in specs.hosts:
        name = host.metadata.name
        if failed and name in failed:
            hosts.append(HostPlan(host=name, uri=host.spec.uri, fingerprint="", error=failed[name]))
            continue
        if name in states:
            moves_in = {g: (src, kind) for g, (src, dst, kind) in moves.items() if dst == name}
            moves_out = frozenset(g for g, (src, _, _) in moves.items() if src == name)
            hosts.append(plan_host(specs.for_host(name), states[name], opts, moves_in,
                                   moves_out | elsewhere.get(name, frozenset()), partial=name in partial,
                                   clashes=clashes, leftovers=leftovers.get(name, frozenset())))
    return Plan(tuple(hosts), opts.instance, spec_digest, opts.prune)
