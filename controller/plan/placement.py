"""Placement: choose a host for each guest that names a hostSelector. Pure: capacities are inputs.

Greedy and deterministic: the biggest guests first, each to the matching host with the most
memory left (ties by name); a host's memory may be committed up to ``overcommit`` × its
physical memory, and a guest that fits nowhere is refused (never squeezed in).
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.model.records import record
from controller.spec.models import Guest, Host


@record
class PlacementResult:
    placements: dict[str, str]  # guest → host (new ones only)
    refused: dict[str, str]  # guest → why


def place(guests: list[Guest], hosts: list[Host], physical: Mapping[str, int], committed: Mapping[str, int],
          overcommit: float) -> PlacementResult:
    """``physical``: bytes of memory per host; ``committed``: memory of guests already placed there."""
    room = {h.metadata.name: int(physical.get(h.metadata.name, 0) * overcommit) - committed.get(h.metadata.name, 0)
            for h in hosts if h.metadata.name in physical}
    placements: dict[str, str] = {}
    refused: dict[str, str] = {}
    for g in sorted(guests, key=lambda g: (-(g.spec.max_memory or g.spec.memory), g.metadata.name)):
        need = g.spec.max_memory or g.spec.memory
        sel = g.spec.host_selector.match_labels if g.spec.host_selector else {}
        fits = [h.metadata.name for h in hosts if sel.items() <= h.metadata.labels.items()
                and h.metadata.name in room]
        if not fits:
            refused[g.metadata.name] = f"no reachable host has the labels {sel}"
            continue
        best = max(sorted(fits), key=lambda n: room[n])
        if room[best] < need:
            refused[g.metadata.name] = (f"needs {need // 2**20} MiB; the roomiest matching host ({best}) has "
                                        f"{max(room[best], 0) // 2**20} MiB left at overcommit {overcommit:g}")
            continue
        placements[g.metadata.name] = best
        room[best] -= need
    return PlacementResult(placements, refused)
