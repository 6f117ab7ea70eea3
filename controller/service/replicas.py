"""Replicas of `virtsync serve` sharing the hosts of one spec repository through tooz.

Each replica (`--replica-id NAME`) joins the group ``virtsync-<instance>`` of the coordination
backend (`--coordination`: etcd through its gateway across machines, the file driver on one
machine) with its pins as capabilities. A host belongs to the live replica that pins it
(`--pin-host`), else to the one tooz's consistent hash ring of the live replicas places it on
(the ring tooz's Partitioner uses), so a replica that joins or leaves moves only its share.
A replica is live while it heartbeats (the file driver: `?timeout=`, default 10 s; etcd: its
lease); one killed with -9 drops out when its heartbeat expires, and its hosts move to the
others. Ownership only says which replica *tries*: every change is still made under the host's
write lock (coordination.py), and a replica re-checks both before each action (the fence), so
two replicas never change one host at once even while they disagree about the ring.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from controller.coordination import HostLocks
from controller.logging import get_logger
from controller.model.records import record

log = get_logger("virtsync.replicas")


@record
class Assignment:
    members: tuple[str, ...]
    mine: frozenset[str]  # hosts this replica acts on
    owners: dict[str, str]  # host → replica


def assign(hosts: Iterable[str], members: dict[str, Sequence[str]], ring: Any, me: str) -> Assignment:
    """Pure: host → replica for the live ``members`` (replica → its pinned hosts); a host two
    replicas pin goes to the first by name, so every replica computes the same answer."""
    pinned: dict[str, str] = {}
    for member in sorted(members):
        for host in members[member]:
            pinned.setdefault(host, member)
    owners: dict[str, str] = {}
    for host in hosts:
        if host in pinned:
            owners[host] = pinned[host]
        elif members:
            owners[host] = sorted(ring.get_nodes(host.encode()))[0].decode()
    return Assignment(tuple(sorted(members)), frozenset(h for h, m in owners.items() if m == me), owners)


class Replicas:
    def __init__(self, locks: HostLocks, instance: str, replica_id: str, pins: Sequence[str] = ()):
        self.locks = locks
        self.id = replica_id
        self.pins = tuple(pins)
        self.group = f"virtsync-{instance}".encode()
        self._lock = threading.Lock()
        self._now = Assignment((), frozenset(), {})
        self._joined = False

    def join(self) -> None:
        from tooz import coordination

        coord = self.locks.coordinator()
        with contextlib.suppress(coordination.GroupAlreadyExist):
            coord.create_group(self.group).get()
        caps = {"pins": list(self.pins)}
        try:
            coord.join_group(self.group, capabilities=caps).get()
        except coordination.MemberAlreadyExist:
            # This id restarted before its old record expired: replace the record, so that this
            # process's heartbeat (which only refreshes groups it joined) keeps it alive.
            with contextlib.suppress(coordination.MemberNotJoined, coordination.GroupNotCreated):
                coord.leave_group(self.group).get()
            coord.join_group(self.group, capabilities=caps).get()
        self._joined = True
        log.info("replica joined", replica=self.id, group=self.group.decode(), pins=list(self.pins))

    def refresh(self, hosts: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
        """Recompute who holds which host from the live members; (gained, lost) by this replica."""
        from tooz import hashring

        if not self._joined:
            self.join()
        coord = self.locks.coordinator()
        live = coord.get_members(self.group).get()
        members: dict[str, Sequence[str]] = {}
        for m in live:
            try:
                caps = coord.get_member_capabilities(self.group, m).get()
            except Exception:  # left between the two calls
                continue
            pins = caps.get("pins", []) if isinstance(caps, dict) else []
            members[m.decode()] = [str(p) for p in pins]
        if self.id not in members:  # our record expired (a stall): join again
            self.join()
            members[self.id] = list(self.pins)
        ring = hashring.HashRing(sorted(m.encode() for m in members))
        new = assign(sorted(hosts), members, ring, self.id)
        with self._lock:
            old, self._now = self._now, new
        gained, lost = new.mine - old.mine, old.mine - new.mine
        if gained or lost or new.members != old.members:
            log.info("replica hosts", replica=self.id, members=list(new.members), holds=sorted(new.mine),
                     gained=sorted(gained), lost=sorted(lost))
        return gained, lost

    def owns(self, host: str) -> bool:
        with self._lock:
            return host in self._now.mine

    def view(self) -> dict[str, Any]:
        """For /status: this replica, the live ones, and who holds each host."""
        with self._lock:
            now = self._now
        return {"id": self.id, "members": list(now.members), "holds": sorted(now.mine),
                "pins": list(self.pins), "owners": dict(sorted(now.owners.items()))}

    def leave(self) -> None:
        if not self._joined:
            return
        try:
            self.locks.coordinator().leave_group(self.group).get()
        except Exception as exc:  # the backend is gone: our record expires by itself
            log.warning("replica leave failed", replica=self.id, error=str(exc))
        self._joined = False
