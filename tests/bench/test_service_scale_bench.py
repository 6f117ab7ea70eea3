"""`serve` at scale (issue 17, target 6): 1,000 guests on one real (hermetic) libvirtd host, 10
out-of-band changes a second for 60 s, every one of which the service must repair.

The changes are made by this process on its own libvirt connection, as an operator's virsh would,
in a fixed rotation:

- `destroy` of an enforced guest (one of 50 declared `paused`; each destroyed 3 times, 20 s
  apart, which stays under the thrash limit of 5 repairs in 10 min) → started and paused again.
  Paused, because a running diskless guest's firmware takes ~12% of a core here: 50 running ones
  saturated the 2 cores in a first run (sys time 5.6 min in 3 min; starts took up to 5.7 s);
- an edited definition (`defineXML` with `<currentMemory>` lowered, the ownership metadata kept)
  of a stopped guest → its memory back. (virtsync's `memory` is `<currentMemory>`: with no
  `maxMemory` declared, an edited `<memory>` maximum is left as it is, so it is not the edit here);
- `undefine` of a stopped guest → defined again;
- `setmem --config` of a stopped guest → its memory back. libvirt sends no event for this one, so
  only the light resync can see it: its latency is held to target 7 (≤ 15 s), the others to p99 < 2 s.

Each stopped guest is changed once. A repair counts when this process, polling its own second
connection every 20 ms, sees the guest as declared again; latency runs from the return of the
changing call. The service's CPU is read from /proc/PID/stat over the 60 s of changes.

Before the service starts, raw starts are timed on the same host (5 alone, 10 at once over
their own connections): a destroy cannot be repaired faster than libvirtd starts the guest,
and the destroys ask for 2.5 starts a second.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

GUESTS = 1000
ENFORCED = 50  # g0000–g0049 are declared paused (started, then paused); the rest stopped
RATE = 10.0  # changes a second
SECONDS = 60.0
KINDS = ("destroy", "edit", "undefine", "setmem")
EVENTED = ("destroy", "edit", "undefine")  # libvirt sends an event for these
MEMORY_KIB = 32768
SETMEM_KIB = 16384


def _specs(root: Path, uri: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = [f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: scale}}\nspec: {{uri: '{uri}'}}\n"]
    for i in range(GUESTS):
        state = "paused" if i < ENFORCED else "stopped"
        docs.append(f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: g{i:04d}}}\nspec:\n"
                    f"  host: scale\n  state: {state}\n  vcpus: 1\n  memory: {MEMORY_KIB // 1024}MiB\n")
    (root / "specs.yaml").write_text("---\n".join(docs))
    return root


@dataclass
class Change:
    kind: str
    name: str
    done: float = 0.0  # monotonic time the changing call returned
    repaired: float = 0.0
    error: str = ""

    @property
    def latency(self) -> float:
        return self.repaired - self.done


def _plan() -> list[Change]:
    """600 changes in rotation: the n-th destroy hits enforced guest n mod 50; every other kind takes
    a stopped guest of its own block, so no stopped guest is changed twice."""
    total = int(RATE * SECONDS)
    counts = dict.fromkeys(KINDS, 0)
    changes = []
    for i in range(total):
        kind = KINDS[i % len(KINDS)]
        n = counts[kind]
        counts[kind] += 1
        if kind == "destroy":
            name = f"g{n % ENFORCED:04d}"
        else:
            block = ENFORCED + KINDS[1:].index(kind) * (total // len(KINDS))
            name = f"g{block + n:04d}"
        changes.append(Change(kind, name))
    return changes


def _make(conn: libvirt.virConnect, c: Change) -> None:
    dom = conn.lookupByName(c.name)
    if c.kind == "destroy":
        dom.destroy()
    elif c.kind == "edit":
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        edited = xml.replace(f"<currentMemory unit='KiB'>{MEMORY_KIB}</currentMemory>",
                             f"<currentMemory unit='KiB'>{SETMEM_KIB}</currentMemory>")
        assert edited != xml, f"{c.name}: no currentMemory element to edit"
        conn.defineXML(edited)
    elif c.kind == "undefine":
        dom.undefine()
    else:
        dom.setMemoryFlags(SETMEM_KIB, libvirt.VIR_DOMAIN_AFFECT_CONFIG)


def _repaired(conn: libvirt.virConnect, c: Change) -> bool:
    try:
        dom = conn.lookupByName(c.name)
        if c.kind == "destroy":
            return bool(dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    except libvirt.libvirtError:  # undefined and not defined again yet
        return False
    return f"<currentMemory unit='KiB'>{MEMORY_KIB}</currentMemory>" in xml


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reconciles(svc: ServeProcess) -> tuple[float, float]:
    """(count, seconds) of the service's Guest reconciles so far, from /metrics."""
    text = svc.get("/metrics", raw=True).decode()
    got = {}
    for suffix in ("count", "sum"):
        m = re.search(rf'^virtsync_reconcile_duration_seconds_{suffix}{{host="scale",kind="Guest"}} (\S+)$', text,
                      re.MULTILINE)
        got[suffix] = float(m.group(1)) if m else 0.0
    return got["count"], got["sum"]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def _raw_starts(host: HermeticHost, names: list[str]) -> list[float]:
    """Seconds of a raw start (paused) of each of ``names``, stopped first, one at a time, before
    the service runs: a destroyed guest cannot be repaired faster than libvirt starts it."""
    conn = host.connect()
    try:
        took = []
        for name in names:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            t = time.perf_counter()
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            took.append(time.perf_counter() - t)
        return took
    finally:
        conn.close()


def _raw_parallel_starts(host: HermeticHost, names: list[str]) -> float:
    """Wall seconds of raw starts (paused) of ``names`` at once, each over its own connection:
    libvirtd's start throughput here, the ceiling of the destroy repairs' rate."""
    conns = [host.connect() for _ in names]
    try:
        for conn, name in zip(conns, names, strict=True):
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(lambda cn: cn[0].lookupByName(cn[1]).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED),
                          zip(conns, names, strict=True)))
        return time.perf_counter() - t
    finally:
        for conn in conns:
            conn.close()


def _run_changes(host: HermeticHost, changes: list[Change], pid: int, deadline: float
                 ) -> tuple[float, float]:
    """Make the changes on schedule and watch for their repairs; (service CPU seconds over the 60 s
    of changes, seconds those took)."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # a guest not defined again yet is no news
    writer, watcher = host.connect(), host.connect()
    made = threading.Event()
    lock = threading.Lock()
    pending: list[Change] = []

    def make(c: Change) -> None:
        try:
            _make(writer, c)
        except libvirt.libvirtError as exc:
            c.error = str(exc)
        c.done = time.monotonic()
        with lock:
            pending.append(c)

    def watch() -> None:
        while True:
            with lock:
                todo = list(pending)
            if (made.is_set() and not todo) or time.monotonic() > deadline:
                return
            for c in todo:
                if not c.error and _repaired(watcher, c):
                    c.repaired = time.monotonic()
                    with lock:
                        pending.remove(c)
            time.sleep(0.02)

    checker = threading.Thread(target=watch, daemon=True)
    checker.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            cpu0, t0 = _cpu_seconds(pid), time.monotonic()
            for i, c in enumerate(changes):
                wait = t0 + i / RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                pool.submit(make, c)
            pool.shutdown(wait=True)
            time.sleep(max(0.0, t0 + SECONDS - time.monotonic()))
            cpu, elapsed = _cpu_seconds(pid) - cpu0, time.monotonic() - t0
        made.set()
        checker.join(max(0.0, deadline - time.monotonic()) + 5)
    finally:
        writer.close()
        watcher.close()
    return cpu, elapsed


def test_service_repairs_10_changes_a_second_on_1000_guests(host: HermeticHost, tmp_path: Path) -> None:
    specs = _specs(tmp_path / "specs", host.uri)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "controller", "apply", str(specs), "--yes",
                           "--concurrency", "16"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied = time.perf_counter() - t
    raw = _raw_starts(host, [f"g{i:04d}" for i in range(ENFORCED - 5, ENFORCED)])  # left paused, as declared
    at_once = [f"g{i:04d}" for i in range(ENFORCED - 15, ENFORCED - 5)]
    raw_wall = _raw_parallel_starts(host, at_once)
    svc = ServeProcess([str(specs)], tmp_path / "serve.log").start()
    changes = _plan()
    try:
        wait_for(lambda: svc.status()["summary"]["in-sync"] >= GUESTS, 300, "1,000 in sync", svc)
        # The light resync's first pass only learns the fingerprints: changes start after it.
        wait_for(lambda: (svc.status()["service"]["lightResync"] or {}).get("lastPassAt"), 30,
                 "a light resync pass", svc)
        assert svc.proc is not None
        pid = svc.proc.pid
        daemons = host.pids_of("libvirtd")
        daemon0 = sum(_cpu_seconds(p) for p in daemons)
        count0, busy0 = _reconciles(svc)
        span0 = time.monotonic()
        cpu, elapsed = _run_changes(host, changes, pid, deadline=time.monotonic() + SECONDS + 30)
        count1, busy1 = _reconciles(svc)
        span = time.monotonic() - span0
        daemon_cpu = (sum(_cpu_seconds(p) for p in daemons) - daemon0) / span
        light = svc.status()["service"]["lightResync"]
        load = os.getloadavg()
    finally:
        svc.stop()
    # A change that could not be made: a destroy of a guest whose last destroy 20 s before was not
    # repaired yet. Counted, as the repairs that never came, and failing the run.
    failed = [c for c in changes if c.error]
    unrepaired = [c for c in changes if not c.repaired and not c.error]
    by_kind = {k: [c.latency for c in changes if c.kind == k and c.repaired] for k in KINDS}
    evented = [lat for k in EVENTED for lat in by_kind[k]]
    print(f"\n{GUESTS} guests ({ENFORCED} paused, the rest stopped) on one host, defined by apply in {applied:.0f} s; "
          f"{len(changes)} out-of-band changes at {RATE:g}/s for {SECONDS:g} s")
    for k in KINDS:
        lat = by_kind[k]
        if lat:
            print(f"  {k:9s} {len(lat):3d} repaired: p50 {statistics.median(lat):.3f} s, "
                  f"p99 {_pct(lat, 0.99):.3f} s, max {max(lat):.3f} s")
    if evented:
        print(f"  changes with an event: p50 {statistics.median(evented):.3f} s, p99 {_pct(evented, 0.99):.3f} s "
              f"(target p99 < 2 s; ratio {_pct(evented, 0.99) / 2:.2f})")
    print(f"  a raw start (paused) of one guest, alone, before serve ran: median {statistics.median(raw):.3f} s of "
          f"{len(raw)} (min {min(raw):.3f}); destroy repairs p50 / raw: "
          f"{statistics.median(by_kind['destroy'] or [0]) / statistics.median(raw):.2f}x; {len(at_once)} raw starts at "
          f"once: {raw_wall:.2f} s ({len(at_once) / raw_wall:.1f} starts/s here; the destroys ask for "
          f"{RATE / len(KINDS):g}/s)")
    first, last = (sorted(c.latency for c in changes[sl] if c.repaired and c.kind in EVENTED)
                   for sl in (slice(0, 100), slice(-100, None)))
    if first and last:  # a growing backlog shows here
        print(f"  with an event, made in the first 10 s: p50 {statistics.median(first):.3f} s; in the last 10 s: "
              f"p50 {statistics.median(last):.3f} s")
    if by_kind["setmem"]:
        print(f"  setmem --config (no event; the light resync every {light['intervalSeconds']:g} s finds it, its "
              f"last pass {light['lastPassSeconds']:.2f} s): max {max(by_kind['setmem']):.1f} s (target 7: ≤ 15 s)")
    print(f"  serve's CPU over the {elapsed:.0f} s of changes: {cpu / elapsed * 100:.1f}% of one core "
          f"(target < 50%; ratio {cpu / elapsed / 0.5:.2f}); libvirtd {daemon_cpu * 100:.1f}% until the last repair")
    print(f"  Guest reconciles from the first change to the last repair ({span:.0f} s): {count1 - count0:.0f} "
          f"({(count1 - count0) / span:.1f}/s), {busy1 - busy0:.1f} s in all ({(busy1 - busy0) / span * 100:.0f}% of "
          "the time; one writer per host)")
    print(f"  unrepaired after 30 s: {len(unrepaired)}; not made (the guest was not repaired from the change "
          f"before): {len(failed)}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs")
    assert not failed, f"{len(failed)} changes could not be made, first: {failed[:3]}"
    assert not unrepaired, f"{len(unrepaired)} changes not repaired within 30 s, first: {unrepaired[:5]}"
    assert _pct(evented, 0.99) < 2.0
    assert max(by_kind["setmem"]) <= 15.0
    assert cpu / elapsed < 0.5
