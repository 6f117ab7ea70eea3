"""Diff of one storage pool (volumes are planned with the guests that use them)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from controller.model.state import HostState, ResourceKey
from controller.plan.actions import Action, FieldChange, Impact, Phase, Problem
from controller.plan.context import PlanOptions, declared, ownership_problem
from controller.spec.models import StoragePool


@dataclass
class PoolPlan:
    actions: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[FieldChange] = field(default_factory=list)


def plan_pool(pool: StoragePool, host: HostState, opts: PlanOptions) -> PoolPlan:
    name = pool.metadata.name
    key = ResourceKey(host.host, "StoragePool", name)
    out = PoolPlan()
    obs = host.pools.get(name)
    spec = pool.spec
    if obs is None:
        change = FieldChange("/spec", "defined", None, None, Impact.CREATE)
        out.drift.append(change)
        out.actions.append(Action(key, "define-pool", Impact.CREATE, Phase.POOLS,
                                  "pool does not exist", (change,)))
        return out
    refusal = ownership_problem(key, "storage pool", True, obs.owner, spec.adopt, opts.instance)
    if refusal:
        out.problems.append(Problem(key, refusal))
        return out
    if obs.path and posixpath.normpath(obs.path) != posixpath.normpath(spec.path):
        out.problems.append(Problem(key, f"pool {name!r} is at {obs.path}, the spec says "
                                    f"{spec.path}: moving a pool is not supported"))
    changes: list[FieldChange] = []
    if "autostart" in declared(spec) and spec.autostart != obs.autostart:
        changes.append(FieldChange("/spec/autostart", spec.autostart, obs.autostart, None,
                                   Impact.LIVE))
    if not obs.active:
        changes.append(FieldChange("/status/active", True, False, False, Impact.LIVE))
    if changes:
        out.drift.extend(changes)
        out.actions.append(Action(key, "update-pool", Impact.LIVE, Phase.POOLS,
                                  "spec and pool differ", tuple(changes),
                                  {"autostart": spec.autostart, "adopt": obs.owner is None,
                                   "start": not obs.active}))
    return out
