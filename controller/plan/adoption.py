"""`virtsync adopt`: which existing objects can be taken over as they are (pure).

An object not owned by any virtsync instance whose spec plans no change against it is adopted
(its ownership record written, nothing else); every other one is named with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from controller.model.records import record
from controller.model.state import HostState, ResourceKey
from controller.plan.actions import Adopt, Plan


@record
class Refusal:
    key: ResourceKey
    reason: str


def adoption(plan: Plan, states: Mapping[str, HostState]) -> tuple[Plan, list[Refusal]]:
    """The plan narrowed to Adopt actions for the unowned objects that match their specs exactly,
    and why each other unowned object of the specs was left alone."""
    refused: list[Refusal] = []
    hosts = []
    for hp in plan.hosts:
        state = states.get(hp.host)
        adopts = []
        for entry in hp.drift if state is not None else ():
            key = entry.key
            found = {"Guest": state.guests, "Network": state.networks,  # type: ignore[union-attr]
                     "StoragePool": state.pools}.get(key.kind, {}).get(key.name)  # type: ignore[union-attr]
            if found is None or found.owner is not None:
                continue  # missing (apply creates it) or owned already
            if entry.status == "in-sync":
                adopts.append(Adopt(key=key, reason="matches its spec: ownership recorded, nothing else changes"))
                continue
            paths = ", ".join(c.path.removeprefix("/spec/") for c in entry.changes)
            refused.append(Refusal(key, entry.message or f"{entry.status}: {paths or 'differs from its spec'}"))
        hosts.append(replace(hp, actions=tuple(adopts), pending=()))
    return Plan(tuple(hosts), plan.instance, plan.spec_digest, False), refused
