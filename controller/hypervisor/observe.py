"""Read a host's whole state in bulk: domains, networks, pools, volumes, leases.

Few round trips: one listAllDomains per state class (running, paused,
persistent, autostart) instead of per-domain calls, then the persistent XML
of every domain and the live XML of the running ones. Objects that vanish
between listing and reading are skipped, not errors.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import libvirt

from controller.errors import HostError
from controller.hypervisor.deadline import read_each
from controller.hypervisor.domain_xml import read_guest
from controller.hypervisor.errors import is_not_found, libvirt_call
from controller.hypervisor.network_xml import read_network
from controller.hypervisor.ownership import MARKER_PREFIX
from controller.hypervisor.pool_xml import pool_definition, read_pool, read_source
from controller.hypervisor.secrets import observe_secrets
from controller.model.state import (
    GuestDetails,
    GuestFault,
    HostCapabilities,
    HostState,
    ObservedGuest,
    ObservedNetwork,
    ObservedPool,
    ObservedVolume,
    Owner,
    PowerState,
)

# Secure: with the console passwords, else an edit of the definition would drop them (read-write
# connections only). The XML stays in memory; fields keep only a digest of a password.
_SECURE = libvirt.VIR_DOMAIN_XML_SECURE
_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE | _SECURE
_TRANSIENT_PAUSE = {
    getattr(libvirt, name)
    for name in ("VIR_DOMAIN_PAUSED_STARTING_UP", "VIR_DOMAIN_PAUSED_MIGRATION",
                 "VIR_DOMAIN_PAUSED_SAVE", "VIR_DOMAIN_PAUSED_DUMP", "VIR_DOMAIN_PAUSED_SNAPSHOT",
                 "VIR_DOMAIN_PAUSED_POSTCOPY", "VIR_DOMAIN_PAUSED_FROM_SNAPSHOT")
    if hasattr(libvirt, name)
}




def _reason_table() -> dict[tuple[int, int], tuple[str, GuestFault | None]]:
    """libvirt's (state, reason) → what people read, and the fault it is. A crash: the guest
    panicked (a panic device). PAUSED_UNKNOWN: QEMU stopped it and libvirt did not ask, which is
    an internal error such as a KVM emulation failure (only a reset clears it) or a QMP "stop"
    sent past libvirt (checked: libvirt 9.0 gives both PAUSED_UNKNOWN; a pause through libvirt
    is PAUSED_USER). A pause on a disk
    I/O error: QEMU's default werror=enospc stops the guest when its disk's filesystem is full."""
    rows = (
        ("CRASHED", "CRASHED_PANICKED", "crashed (the guest panicked)", "crashed"),
        ("CRASHED", "CRASHED_UNKNOWN", "crashed", "crashed"),
        ("PAUSED", "PAUSED_CRASHED", "paused (the guest crashed)", "crashed"),
        ("PAUSED", "PAUSED_UNKNOWN", "paused by QEMU for a reason libvirt does not know (an internal "
         "error, or a stop sent past libvirt)", "unknown-pause"),
        ("PAUSED", "PAUSED_IOERROR", "paused (a disk I/O error)", "io-error"),
        ("PAUSED", "PAUSED_USER", "paused (by a user)", None),
        ("SHUTOFF", "SHUTOFF_CRASHED", "shut off (it crashed)", "crashed"),
        ("SHUTOFF", "SHUTOFF_FAILED", "shut off (it failed to start)", None),
    )
    out: dict[tuple[int, int], tuple[str, GuestFault | None]] = {}
    for state, reason, text, fault in rows:
        s, r = getattr(libvirt, f"VIR_DOMAIN_{state}", None), getattr(libvirt, f"VIR_DOMAIN_{reason}", None)
        if s is not None and r is not None:
            out[(s, r)] = (text, fault)  # type: ignore[assignment]
    return out


_REASONS = _reason_table()
# What the state filters of listAllDomains call each state (anything else: "other").
_LISTED_STATE: dict[int, PowerState] = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
                                        libvirt.VIR_DOMAIN_SHUTOFF: "stopped"}
_NO_SPACE = getattr(libvirt, "VIR_DOMAIN_DISK_ERROR_NO_SPACE", 2)


def listed_with_stats(conn: libvirt.virConnect, *kinds: int
                      ) -> tuple[list[libvirt.virDomain], list[dict[str, Any]] | None]:
    """Every domain and its bulk stats beside it, in one call where the driver has them: they
    list the domains listAllDomains lists, in its order (both collect the same domain list).
    ``kinds``: the stats flags to ask for, each tried in turn (a driver may lack some of them);
    where none works, listAllDomains and no stats."""
    for flags in kinds:
        try:
            stats = conn.getAllDomainStats(flags)
        except libvirt.libvirtError:
            continue
        return [d for d, _ in stats], [s for _, s in stats]
    return conn.listAllDomains(0), None


def _listed(conn: libvirt.virConnect
            ) -> tuple[list[libvirt.virDomain], list[str], dict[str, tuple[int, int]]]:
    """Every domain, its UUID beside it (asked once: every later step is keyed by it) and, by
    UUID, its (state, reason); no reasons where the driver has no bulk stats."""
    domains, stats = listed_with_stats(conn, libvirt.VIR_DOMAIN_STATS_STATE)
    uuids = [d.UUIDString() for d in domains]
    if stats is None:
        return domains, uuids, {}
    return domains, uuids, {u: (int(s.get("state.state", -1)), int(s.get("state.reason", -1)))
                            for u, s in zip(uuids, stats, strict=True)}


def _disk_errors(dom: libvirt.virDomain, live_xml: str | None) -> tuple[tuple[str, str, str], ...]:
    """The disks an I/O-error pause names (virDomainGetDiskErrors), with their source paths."""
    from lxml import etree

    errors = dom.diskErrors() or {}
    paths: dict[str, str] = {}
    if live_xml is not None:
        for disk in etree.fromstring(live_xml.encode()).iterfind("devices/disk"):
            target, source = disk.find("target"), disk.find("source")
            if target is not None and source is not None:
                paths[target.get("dev", "")] = source.get("file") or source.get("dev") or ""
    return tuple(sorted((t, paths.get(t, ""), "no-space" if code == _NO_SPACE else "error")
                        for t, code in errors.items() if code))


_DOMAIN_ID = re.compile(r" id='[0-9]+'")


def _same_definition(live_xml: str, inactive_xml: str) -> bool:
    """The live XML is the definition plus the running domain's id and nothing else (so its
    essence is the definition's, read once): what a driver that adds no runtime state to the
    XML gives, such as libvirt's test driver. A QEMU guest's live XML differs (aliases, taps,
    ports…) and is read on its own."""
    end = live_xml.find(">")
    if end < 0 or len(live_xml) <= len(inactive_xml):
        return False
    head = _DOMAIN_ID.sub("", live_xml[:end], count=1)
    return len(head) + len(live_xml) - end == len(inactive_xml) and inactive_xml.startswith(head) \
        and inactive_xml.endswith(live_xml[end:])


def _uuids(conn: libvirt.virConnect, flags: int) -> set[str]:
    return {d.UUIDString() for d in conn.listAllDomains(flags)}


def observe_guests(conn: libvirt.virConnect, host: str, lanes: Lanes | None = None) -> dict[str, ObservedGuest]:
    """Every domain of the host; ``lanes(k)`` gives the host's k-th connection, over which a
    host with many domains is read in parallel (see _read_domains)."""
    with libvirt_call(host, "list domains"):
        # Two lists of the few instead of two of every domain (1,000 domains: ~7 ms of CPU and
        # ~12 ms here): the bulk stats list the domains, and the persistent ones are all but
        # the transient ones.
        domains, uuids, reasons = _listed(conn)
        transient = _uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
        persistent = set(uuids) - transient
        autostart = _uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
        if reasons:
            # The bulk stats give every domain's state: the same sets the state filters of
            # listAllDomains give (they match RUNNING, PAUSED, SHUTOFF exactly), three calls fewer.
            running = {u for u, (st, _) in reasons.items() if st == libvirt.VIR_DOMAIN_RUNNING}
            paused = {u for u, (st, _) in reasons.items() if st == libvirt.VIR_DOMAIN_PAUSED}
            shutoff = {u for u, (st, _) in reasons.items() if st == libvirt.VIR_DOMAIN_SHUTOFF}
        else:
            running = _uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)
            paused = _uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)
            shutoff = _uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_SHUTOFF)

    # Reading them from 4 threads over one connection was slower here on a loaded 2-CPU machine
    # (1,000 domains: 0.62 s against 0.55 s); several connections are not (_read_domains). Runs
    # of domains go to a connection's worker at once (read_each): a handoff per call cost more
    # than the calls.
    out: dict[str, ObservedGuest] = {}
    for guest in _read_domains(conn, host, domains, uuids, lanes, lambda dom, uuid: _observe_guest(
            dom, uuid, host, running, paused, shutoff, persistent, autostart, reasons)):
        if guest is not None:
            out[guest.name] = guest
    return out


Lanes = Callable[[int], libvirt.virConnect]
# A host with this many domains is read over up to READ_LANES of its connections at once: a
# connection's calls take turns and each waits on the daemon (1,000 domains' XML under load ~13
# here: one connection 0.12 s, two 0.105 s, three 0.07 s). Fewer domains are not worth opening
# another connection for (a one-shot `virtsync plan` of 20 guests).
PARALLEL_FROM = 200
READ_LANES = 3


def _read_domains(conn: libvirt.virConnect, host: str, domains: list[libvirt.virDomain], uuids: list[str],
                  lanes: Lanes | None, read: Callable[[libvirt.virDomain, str], ObservedGuest | None]
                  ) -> list[ObservedGuest | None]:
    """``read(domain, its UUID)`` of every domain, in the order listed: over one connection, or
    split between several, each reading its own objects of the same domains (found by UUID in
    its own list)."""
    conns = [conn]
    if lanes is not None and len(domains) >= PARALLEL_FROM:
        for k in range(1, READ_LANES):
            try:
                other = lanes(k)
            except HostError:
                break  # read over the connections there are
            if other is conn or any(other is c for c in conns):
                break  # a host with fewer lanes (libvirt's test driver keeps one)
            conns.append(other)
    if len(conns) == 1:
        return read_each(conn, "read domains", domains, read, uuids)
    n = len(domains)
    parts = [list(range(i * n // len(conns), (i + 1) * n // len(conns))) for i in range(len(conns))]
    found: list[ObservedGuest | None] = [None] * n
    left: list[int] = []  # domains another connection did not list (new since): read on the first

    def on(lane: int) -> None:
        mine = parts[lane]
        if lane:
            with libvirt_call(host, "list domains"):
                theirs = {d.UUIDString(): d for d in conns[lane].listAllDomains(0)}
            objs = [theirs.get(uuids[i]) for i in mine]
            left.extend(i for i, d in zip(mine, objs, strict=True) if d is None)
            mine = [i for i, d in zip(mine, objs, strict=True) if d is not None]
            objs = [d for d in objs if d is not None]
        else:
            objs = [domains[i] for i in mine]
        for i, guest in zip(mine, read_each(conns[lane], "read domains", objs, read, [uuids[i] for i in mine]),
                            strict=True):
            found[i] = guest

    with ThreadPoolExecutor(max_workers=len(conns) - 1) as ex:
        futures = [ex.submit(on, lane) for lane in range(1, len(conns))]
        on(0)
        for f in futures:
            f.result()
    for i, guest in zip(left, read_each(conn, "read domains", [domains[i] for i in left], read,
                                        [uuids[i] for i in left]), strict=True):
        found[i] = guest
    return found


def _observe_guest(dom: libvirt.virDomain, uuid: str, host: str, running: set[str], paused: set[str],
                   shutoff: set[str], persistent: set[str],
                   autostart: set[str], reasons: dict[str, tuple[int, int]]) -> ObservedGuest | None:
    try:
        state: PowerState = ("running" if uuid in running else "paused" if uuid in paused
                             else "stopped" if uuid in shutoff else "other")
        code = reasons.get(uuid)
        if code is None and (state != "running" or reasons):  # not in the bulk stats (new since)
            st = dom.state()
            code = (int(st[0]), int(st[1]))
            if reasons:
                state = _LISTED_STATE.get(code[0], "other")
        if state == "paused" and code is not None and code[1] in _TRANSIENT_PAUSE:
            state = "other"  # starting up, migrating, saving…: not a pause to undo
        reason, fault = _REASONS.get(code, ("", None)) if code is not None and state != "running" else ("", None)
        active = state in ("running", "paused") or (state == "other" and dom.isActive())
        inactive_xml = dom.XMLDesc(_INACTIVE)
        live_xml = dom.XMLDesc(_SECURE) if active else None
        disk_errors = _disk_errors(dom, live_xml) if fault == "io-error" else ()
    except libvirt.libvirtError as exc:
        if is_not_found(exc):
            return None  # undefined between list and read
        with libvirt_call(host, "read domain"):
            raise
    name, _, p_config, owner = read_guest(inactive_xml)
    live_config = None
    domain_id = -1
    if live_xml is not None:
        live_config = p_config if _same_definition(live_xml, inactive_xml) else read_guest(live_xml)[2]
        domain_id = int(dom.ID())
    is_persistent = uuid in persistent
    return ObservedGuest(
        name=name,
        uuid=uuid,
        state=state,
        domain_id=domain_id,
        persistent=p_config if is_persistent else None,
        live=live_config,
        autostart=uuid in autostart,
        owner=owner,
        xml=inactive_xml,
        reason=reason,
        fault=fault,
        disk_errors=disk_errors,
    )


def observe_networks(conn: libvirt.virConnect, host: str) -> dict[str, ObservedNetwork]:
    out: dict[str, ObservedNetwork] = {}
    with libvirt_call(host, "list networks"):
        nets = conn.listAllNetworks(0)
    for net in nets:
        try:
            active = bool(net.isActive())
            is_persistent = bool(net.isPersistent())
            live_xml = net.XMLDesc(0)
            try:
                xml = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE) if is_persistent else live_xml
            except libvirt.libvirtError as exc:
                if is_not_found(exc):
                    raise
                xml = live_xml  # the test driver refuses the INACTIVE flag
            auto = bool(net.autostart()) if is_persistent else False
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                continue
            with libvirt_call(host, "read network"):
                raise
        name, uuid, config, owner = read_network(xml)
        live_config = read_network(live_xml)[2] if active else None
        out[name] = ObservedNetwork(name, uuid, active, auto, is_persistent, config, live_config,
                                    owner, xml)
    return out


def observe_pools(conn: libvirt.virConnect, host: str,
                  full_disks: tuple[str, ...] = ()) -> dict[str, ObservedPool]:
    """Pools and their volumes. A pool holding one of ``full_disks`` (paths of disks a guest is
    paused on for want of space) is refreshed first: libvirt's free bytes date from its last
    refresh, and they decide whether the guest may resume."""
    out: dict[str, ObservedPool] = {}
    with libvirt_call(host, "list storage pools"):
        pools = conn.listAllStoragePools(0)
    for pool in pools:
        try:
            xml = pool_definition(pool)
            name, uuid, ptype, path = read_pool(xml)
            active = bool(pool.isActive())
            if active and path and any(p.startswith(path.rstrip("/") + "/") for p in full_disks):
                pool.refresh(0)
            auto = bool(pool.autostart())
            volumes: dict[str, ObservedVolume] = {}
            owner: Owner | None = None
            if active:
                for vol in pool.listAllVolumes(0):
                    vname = vol.name()
                    if vname.startswith(MARKER_PREFIX):
                        owner = Owner(instance=vname[len(MARKER_PREFIX):], kind="StoragePool",
                                      name=name)
                        continue
                    info = vol.info()
                    volumes[vname] = ObservedVolume(name, vname, vol.path(), int(info[1]),
                                                    allocation=int(info[2]))
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                continue
            with libvirt_call(host, "read storage pool"):
                raise
        available = int(pool.info()[3]) if active else None
        out[name] = ObservedPool(name, uuid, ptype, path, active, auto, owner, volumes, xml, available,
                                 read_source(xml))
    return out


def observe_leases(conn: libvirt.virConnect, networks: dict[str, ObservedNetwork]
                   ) -> dict[str, tuple[str, ...]]:
    leases: dict[str, list[str]] = defaultdict(list)
    for name, net in networks.items():
        if not net.active or net.config.address is None:
            continue
        try:
            for lease in conn.networkLookupByName(name).DHCPLeases():
                mac = (lease.get("mac") or "").lower()
                if mac and lease.get("ipaddr"):
                    leases[mac].append(lease["ipaddr"])
        except libvirt.libvirtError:
            continue  # leases are information; a driver without them is not an error
    return {mac: tuple(ips) for mac, ips in leases.items()}


def guest_details(conn: libvirt.virConnect, guests: dict[str, ObservedGuest]) -> dict[str, GuestDetails]:
    """Agent facts of running guests whose agent channel is connected (bounded: 3 s a call)."""
    out: dict[str, GuestDetails] = {}
    for name, g in guests.items():
        if g.live is None or not g.live.agent_connected:
            continue
        import base64  # here: only a guest with a connected agent needs them
        import json

        import libvirt_qemu

        addresses: list[str] = []
        uptime = None
        try:
            dom = conn.lookupByName(name)
            ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
            for iface_name, iface in sorted(ifaces.items()):
                if iface_name == "lo":
                    continue
                addresses += [a["addr"] for a in iface.get("addrs") or [] if a.get("addr")]
            handle = json.loads(libvirt_qemu.qemuAgentCommand(
                dom, json.dumps({"execute": "guest-file-open", "arguments": {"path": "/proc/uptime"}}), 3, 0))
            try:
                read = json.loads(libvirt_qemu.qemuAgentCommand(
                    dom, json.dumps({"execute": "guest-file-read", "arguments": {"handle": handle["return"]}}), 3, 0))
                uptime = float(base64.b64decode(read["return"]["buf-b64"]).split()[0])
            finally:
                libvirt_qemu.qemuAgentCommand(
                    dom, json.dumps({"execute": "guest-file-close", "arguments": {"handle": handle["return"]}}), 3, 0)
        except (libvirt.libvirtError, KeyError, ValueError, IndexError, TypeError):
            pass  # an agent that does not answer (yet) is information too
        out[name] = GuestDetails(True, tuple(addresses), uptime)
    return out


def fingerprint(guests: dict[str, ObservedGuest], networks: dict[str, ObservedNetwork],
                pools: dict[str, ObservedPool]) -> str:
    """A digest of everything a plan depends on: any out-of-band change alters it."""
    h = hashlib.sha256()
    for name in sorted(guests):
        g = guests[name]
        # A running guest whose live definition is its persistent one (read once, see
        # _same_definition) is covered by its XML: no repr of the same essence again.
        live = "=" if g.live is not None and g.live is g.persistent else repr(g.live)
        h.update(f"G{name}|{g.state}|{g.fault}|{g.autostart}|{g.xml}|{live}".encode())
    for name in sorted(networks):
        n = networks[name]
        h.update(f"N{name}|{n.active}|{n.autostart}|{n.xml}|{n.live_config!r}".encode())
    for name in sorted(pools):
        p = pools[name]
        vols = sorted((v.name, v.capacity) for v in p.volumes.values())
        h.update(f"P{name}|{p.active}|{p.autostart}|{p.path}|{p.owner!r}|{vols}".encode())
    return "sha256:" + h.hexdigest()[:32]


def _full_disks(guests: dict[str, ObservedGuest]) -> tuple[str, ...]:
    return tuple(path for g in guests.values() for _, path, kind in g.disk_errors if kind == "no-space" and path)


def observe_host(conn: libvirt.virConnect, host: str, uri: str, caps: HostCapabilities,
                 lanes: Lanes | None = None) -> HostState:
    guests = observe_guests(conn, host, lanes)
    networks = observe_networks(conn, host)
    pools = observe_pools(conn, host, _full_disks(guests))
    leases = observe_leases(conn, networks)
    return HostState(host, uri, caps, guests, networks, pools, leases,
                     fingerprint(guests, networks, pools), guest_details(conn, guests),
                     secrets=observe_secrets(conn, host))


_STATE_OF = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
}


def observe_one_guest(conn: libvirt.virConnect, host: str, name: str) -> ObservedGuest | None:
    """One guest, for a reconcile of a single key (the service's common case)."""
    try:
        dom = conn.lookupByName(name)
        uuid = dom.UUIDString()
        state_code, reason_code = dom.state()
        persistent = bool(dom.isPersistent())
        auto = bool(dom.autostart()) if persistent else False
    except libvirt.libvirtError as exc:
        if is_not_found(exc):
            return None
        with libvirt_call(host, f"read guest {name}"):
            raise
    state: PowerState = _STATE_OF.get(state_code, "other")  # type: ignore[assignment]
    return _observe_guest(
        dom, uuid, host,
        running={uuid} if state == "running" else set(),
        paused={uuid} if state == "paused" else set(),
        shutoff={uuid} if state == "stopped" else set(),
        persistent={uuid} if persistent else set(),
        autostart={uuid} if auto else set(),
        reasons={uuid: (state_code, reason_code)},
    )


def observe_for_guest(conn: libvirt.virConnect, host: str, uri: str, caps: HostCapabilities,
                      name: str) -> HostState:
    """A HostState holding one guest (if it exists) with the host's networks and pools, and the
    guest's DHCP leases and agent facts (the same information a whole-host observation gives)."""
    guest = observe_one_guest(conn, host, name)
    guests = {name: guest} if guest is not None else {}
    networks = observe_networks(conn, host)
    pools = observe_pools(conn, host, _full_disks(guests))
    leases = observe_leases(conn, networks)
    return HostState(host, uri, caps, guests, networks, pools, leases,
                     fingerprint(guests, networks, pools), guest_details(conn, guests),
                     secrets=observe_secrets(conn, host))


def domain_names(conn: libvirt.virConnect, host: str) -> frozenset[str]:
    """The names of every domain of the host (one call: what lookups are narrowed by)."""
    with libvirt_call(host, "list domains"):
        return frozenset(d.name() for d in conn.listAllDomains(0))


def look_up_guests(conn: libvirt.virConnect | None, host: str, uri: str, caps: HostCapabilities,
                   names: frozenset[str]) -> HostState:
    """A partial HostState holding only the named guests that exist: what a move needs to know
    of a host outside the reconcile's scope."""
    guests = {n: g for n in sorted(names) if conn is not None and (g := observe_one_guest(conn, host, n)) is not None}
    return HostState(host, uri, caps, guests, {}, {}, {}, fingerprint(guests, {}, {}))
