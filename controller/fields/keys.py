"""Keyed matching of list items: a NIC by its MAC, else by network and position."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from controller.model.state import NicState
from controller.spec.models import Interface


def match_nics(
    desired: Sequence[Interface], observed: Sequence[NicState]
) -> tuple[list[tuple[Interface, int | None]], list[int]]:
    """Pairs (desired NIC, index of its observed NIC or None) and unmatched observed indexes."""
    taken: set[int] = set()
    by_mac = {n.mac: i for i, n in enumerate(observed) if n.mac}
    pairs: list[tuple[Interface, int | None]] = []
    for want in desired:
        hit = by_mac.get(want.mac) if want.mac else None
        if hit is not None:
            taken.add(hit)
        pairs.append((want, hit))
    # NICs without a MAC in the spec: the n-th on a network is the n-th observed there
    # whose MAC the spec does not claim for another NIC.
    claimed = {w.mac for w in desired if w.mac}
    free_by_net: dict[str | None, list[int]] = defaultdict(list)
    for i, n in enumerate(observed):
        if i not in taken and n.mac not in claimed:
            free_by_net[n.network].append(i)
    for pos, (want, _) in enumerate(pairs):
        if want.mac is None and free_by_net[want.network]:
            i = free_by_net[want.network].pop(0)
            taken.add(i)
            pairs[pos] = (want, i)
    extra = [i for i in range(len(observed)) if i not in taken]
    return pairs, extra
