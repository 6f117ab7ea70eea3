"""Diff of one storage pool (volumes are planned with the guests that use them; fields/pool.py)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from controller.fields.base import Facts
from controller.fields.pool import POOL_FIELDS
from controller.model.state import HostState, Owner, ResourceKey, pool_uuid
from controller.plan.actions import Action, DefinePool, FieldChange, Impact, Problem, UpdatePool
from controller.plan.context import SUSPEND_ANNOTATION, PlanOptions, declared, ownership_problem, patch_changes
from controller.spec.models import StoragePool
from controller.spec.pool_sources import FILE_POOL_TYPES


@dataclass
class PoolPlan:
    """One storage pool's plan: its actions, problems and drift."""

    actions: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[FieldChange] = field(default_factory=list)


def plan_pool(pool: StoragePool, host: HostState, opts: PlanOptions) -> PoolPlan:
    name = pool.metadata.name
    key = ResourceKey(host.host, "StoragePool", name)
    out = PoolPlan()
    obs = host.pools.get(name)
    spec = pool.spec
    suspended = pool.metadata.annotations.get(SUSPEND_ANNOTATION) == "true"
    if obs is None:
        refusal = next((why for f in POOL_FIELDS if f.refuse is not None
                        for why in [f.refuse(spec, host.caps, host.host)] if why), None)
        auth = spec.source.auth if spec.source is not None else None
        if not refusal and auth is not None and host.secrets is None:
            refusal = (f"host {host.host} ({host.caps.driver}) has no libvirt secret driver: pool {name}'s auth "
                       f"secret {auth.secret_ref} cannot be defined there")
        if refusal:  # said per host at plan time, instead of a define that fails on the host
            out.problems.append(Problem(key, refusal))
            return out
        change = FieldChange("/spec", "defined", None, None, Impact.CREATE)
        out.drift.append(change)
        if not suspended:  # a pool whose auth secret failed to be defined is skipped
            out.actions.append(DefinePool(key=key, reason="pool does not exist", changes=(change,),
                                          needs=(f"Secret/{auth.secret_ref}",) if auth is not None else ()))
        return out
    owner = obs.owner
    if owner is None and obs.uuid == pool_uuid(opts.instance, name):  # ours, stopped or half-made
        owner = Owner(instance=opts.instance, kind="StoragePool", name=name)
    refusal = ownership_problem(key, "storage pool", True, owner, spec.adopt, opts.instance)
    marked = obs.type in FILE_POOL_TYPES  # others hold no marker volume: their UUID is the record
    if not refusal and owner is None and not marked:
        refusal = (f"a {obs.type} pool named {name!r} exists on {host.host} and is not virtsync's: a {obs.type} "
                   "pool cannot take an ownership marker (only pools virtsync defines are known as its own, by "
                   "their UUID), so it cannot be adopted")
    if refusal:
        out.problems.append(Problem(key, refusal))
        return out
    if obs.path and spec.path and posixpath.normpath(obs.path) != posixpath.normpath(spec.path):
        out.problems.append(Problem(key, f"pool {name!r} is at {obs.path}, the spec says "
                                    f"{spec.path}: moving a pool is not supported"))
    if obs.type != spec.type:
        out.problems.append(Problem(key, f"pool {name!r} is a {obs.type} pool, the spec says {spec.type}: "
                                    "changing a pool's type is not supported (define a new pool)"))
    for f in POOL_FIELDS:
        if not f.path.startswith("/spec/source/") or f.want is None or f.have is None:
            continue
        want = f.want(spec, Facts(name, host.caps.virt_type))
        if want is not None and not f.same(want, f.have(obs, obs)):
            out.problems.append(Problem(key, f"pool {name!r} has {f.path.removeprefix('/spec/')} "
                                        f"{f.have(obs, obs)!r}, the spec says {want!r}: a pool's source is "
                                        "set when it is made (define a new pool for other storage)"))
    facts = Facts(name, host.caps.virt_type)
    top = declared(spec)
    changes: list[FieldChange] = []
    for f in POOL_FIELDS:
        if f.planned_by or f.want is None or f.have is None or f.name not in top:
            continue
        want, have = f.want(spec, facts), f.have(obs, obs)
        if not f.same(want, have):
            changes.append(FieldChange(f.path, f.show(want), f.show(have), None, f.impact))
    patched = patch_changes(obs.xml, spec.xml_patches, Impact.NEXT_BOOT) if obs.xml else []
    changes += patched
    if not obs.active:
        changes.append(FieldChange("/status/active", True, False, False, Impact.LIVE))
    if owner is not None and obs.owner is None and obs.active and marked:  # known by its UUID only: mark it
        changes.append(FieldChange("/status/owner", "marked", None, None, Impact.LIVE))
    if changes:
        out.drift.extend(changes)
        if not suspended:
            out.actions.append(UpdatePool(key=key, reason="spec and pool differ", changes=tuple(changes),
                                          autostart=spec.autostart if any(c.path == "/spec/autostart"
                                                                          for c in changes) else None,
                                          # a stopped pool of ours gets its marker checked at its start
                                          adopt=marked and obs.owner is None and (obs.active or owner is None),
                                          start=not obs.active,
                                          redefine=bool(patched)))
    return out
