"""Cheap per-object fingerprints of a host, for the service's light resync.

libvirt has no generation counter, and some changes fire no event (``setmem --config``,
``autostart``, ``net-update``, a definition replaced on some drivers). A light pass reads, per
host, a few bulk calls for every domain (the bulk stats, which list every domain with its state
and reason, balloon and vCPU counts; the transient domains; the autostart ones, or the others,
whichever were fewer last pass) and the definitions of one slice of the domains (persistent
XML, and the live XML of active ones), rotating so that each domain's definitions are read once
every ``slices`` passes; networks and pools, which are few, are read whole each pass. A
fingerprint per object: a changed one means that object alone is reconciled in full.

At 1,000 domains the pass is most of an idle service's CPU (issue 17, target 7), so it lists
the domains once: each further listing of all of them costs as much as a slice's XML reads.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Mapping

import libvirt

from controller.hypervisor.errors import is_not_found, libvirt_call
from controller.hypervisor.observe import listed_with_stats

_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
# Counts, not counters: vCPU times and balloon usage move all the time and are no change.
_STAT_KEYS = ("state.state", "state.reason", "balloon.current", "balloon.maximum", "vcpu.current",
              "vcpu.maximum")

Key = tuple[str, str]  # (kind, name)
Fingerprint = object  # equal when nothing changed: a digest, or a tuple of plain values


def _digest(*parts: object) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def _listed(conn: libvirt.virConnect) -> tuple[list[libvirt.virDomain], list[tuple[object, ...] | None]]:
    """Every domain, and its counts beside it (a driver without balloon/vCPU stats, such as the
    test driver: states only; one without bulk stats: none)."""
    domains, stats = listed_with_stats(
        conn, libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU,
        libvirt.VIR_DOMAIN_STATS_STATE)
    if stats is None:
        return domains, [None] * len(domains)
    return domains, [tuple(map(s.get, _STAT_KEYS)) for s in stats]


class HostFingerprints:
    """The fingerprints of one host, kept between passes (the definitions of the domains not
    read this pass are carried over from the pass that read them)."""

    def __init__(self, host: str, slices: int = 3):
        self.host = host
        self.slices = max(1, slices)
        self._pass = 0
        self._xml: dict[str, str] = {}  # domain UUID → digest of its definitions, as last read
        self._slice: dict[str, int] = {}  # domain UUID → the pass (modulo slices) that reads it
        self._few_autostart = True  # list the autostart domains (else the others): fewer last pass
        self.cpu_seconds = 0.0  # CPU of the last pass, on whichever thread made it

    def read(self, conn: libvirt.virConnect) -> dict[Key, Fingerprint]:
        """One pass: (kind, name) → fingerprint of every domain, network and pool of the host. On a
        connection with call deadlines the whole pass is one call under the host's deadline:
        its thousands of small calls would otherwise each be a handoff to a worker thread (at
        1,000 domains that was most of the pass's CPU)."""
        runner = getattr(conn, "_runner", None)
        if runner is not None:
            return runner.call("light resync", self._read, conn.unbounded)  # type: ignore[no-any-return]
        return self._read(conn)

    def _read(self, conn: libvirt.virConnect) -> dict[Key, Fingerprint]:
        started = time.thread_time()  # this thread's CPU: the pass may run on a deadline worker
        try:
            return self._read_all(conn)
        finally:
            self.cpu_seconds = time.thread_time() - started

    def _read_all(self, conn: libvirt.virConnect) -> dict[Key, Fingerprint]:
        this = self._pass % self.slices
        self._pass += 1
        out: dict[Key, Fingerprint] = {}
        with libvirt_call(self.host, "list domains (light resync)"):
            domains, counts = _listed(conn)
            # Both lists by their smaller side: "persistent" is every domain but the few transient ones.
            transient = {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)}
            by_autostart = self._few_autostart  # the listed ones are those with autostart (else without)
            listed = {d.UUIDString() for d in conn.listAllDomains(
                libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART if by_autostart
                else libvirt.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART)}
        autostarting = len(listed) if by_autostart else len(domains) - len(listed)
        self._few_autostart = autostarting <= len(domains) // 2
        seen: set[str] = set()
        for dom, count in zip(domains, counts, strict=True):
            try:
                uuid, name = dom.UUIDString(), dom.name()
                seen.add(uuid)
                persistent = uuid not in transient
                # A stable slice per domain (by its UUID), so a domain is read every `slices` passes.
                part = self._slice.get(uuid)
                if part is None:
                    part = self._slice[uuid] = zlib.crc32(uuid.encode()) % self.slices
                if part == this or uuid not in self._xml:
                    active = dom.ID() != -1
                    self._xml[uuid] = _digest(dom.XMLDesc(_INACTIVE) if persistent else "",
                                              dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE) if active else "")
            except libvirt.libvirtError as exc:
                if is_not_found(exc):
                    continue  # undefined between list and read: its event says so
                with libvirt_call(self.host, "read domain (light resync)"):
                    raise
            # A tuple, not a digest of one: compared, never shown, and hashing 1,000 a pass is CPU.
            out[("Guest", name)] = (count, persistent, (uuid in listed) == by_autostart, self._xml[uuid])
        for gone in set(self._xml) - seen:
            del self._xml[gone]
            self._slice.pop(gone, None)
        out.update(_networks(conn, self.host))
        out.update(_pools(conn, self.host))
        return out

def _networks(conn: libvirt.virConnect, host: str) -> dict[Key, Fingerprint]:
    out: dict[Key, Fingerprint] = {}
    with libvirt_call(host, "list networks (light resync)"):
        nets = conn.listAllNetworks(0)
    for net in nets:
        try:
            persistent = bool(net.isPersistent())
            xml = net.XMLDesc(0)
            config = ""
            if persistent:  # net-update --config changes only the persistent definition
                try:
                    config = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
                except libvirt.libvirtError as exc:
                    if is_not_found(exc):
                        raise
                    # the test driver refuses the INACTIVE flag: its live XML is all there is
            out[("Network", net.name())] = _digest(net.isActive(), persistent and net.autostart(), xml, config)
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):
                with libvirt_call(host, "read network (light resync)"):
                    raise
    return out


def _pools(conn: libvirt.virConnect, host: str) -> dict[Key, Fingerprint]:
    out: dict[Key, Fingerprint] = {}
    try:
        pools = conn.listAllStoragePools(0)
    except libvirt.libvirtError:
        return out  # a driver without storage: nothing to fingerprint
    for pool in pools:
        try:
            out[("StoragePool", pool.name())] = _digest(pool.isActive(), pool.autostart(),
                                                        pool.XMLDesc(libvirt.VIR_STORAGE_XML_INACTIVE))
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):
                with libvirt_call(host, "read storage pool (light resync)"):
                    raise
    return out


def changed(before: Mapping[Key, Fingerprint], after: Mapping[Key, Fingerprint]) -> set[Key]:
    """The objects whose digest differs, came or went between two passes."""
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
