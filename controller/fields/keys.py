"""Keyed matching of list items: a NIC by its MAC, else by its source (network, bridge or
macvtap device) and position."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from controller.model.state import NicState
from controller.spec.models import Interface

SourceKey = tuple[str, str | None]  # (type, network / bridge / host device)


def observed_source(nic: NicState) -> SourceKey:
    if nic.type == "direct":
        return ("direct", nic.direct[0] if nic.direct else None)
    if nic.type == "bridge":
        return ("bridge", nic.bridge)
    return (nic.type, nic.network)  # a running network NIC shows its bridge too: the network counts


def spec_source(nic: Interface) -> SourceKey:
    return (nic.kind, nic.source)


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
    # NICs without a MAC in the spec: the n-th on a source is the n-th observed there
    # whose MAC the spec does not claim for another NIC.
    claimed = {w.mac for w in desired if w.mac}
    free_by_source: dict[SourceKey, list[int]] = defaultdict(list)
    for i, n in enumerate(observed):
        if i not in taken and n.mac not in claimed:
            free_by_source[observed_source(n)].append(i)
    for pos, (want, _) in enumerate(pairs):
        key = spec_source(want)
        if want.mac is None and free_by_source[key]:
            i = free_by_source[key].pop(0)
            taken.add(i)
            pairs[pos] = (want, i)
    extra = [i for i in range(len(observed)) if i not in taken]
    return pairs, extra
