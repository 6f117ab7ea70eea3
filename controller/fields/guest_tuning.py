"""Guest tuning fields: CPU topology and pinning, NUMA, memory backing, I/O threads, cputune (and a
disk's I/O thread, appended to DISK_FIELDS in fields/devices.py).

Every essence value has the YAML shape of its spec block (defaults filled in, CPU sets in their
shortest spelling), so one value serves the diff, ``export`` and the plan's display. Writers edit
the existing elements: what virtsync does not model (a cell's memAccess, <cputune>'s vcpusched…)
stays. Pinning and cputune change live; the rest needs a boot (QEMU cannot change a guest's CPU
topology, NUMA cells or memory backend while it runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lxml import etree

from controller.fields.base import Facts, Field, GuestView
from controller.fields.xmlutil import child, insert_after, remove
from controller.model.operations import Impact, LiveOp, PinEmulator, PinIOThread, PinVcpu, SetSchedulerParameters
from controller.model.state import HostCapabilities
from controller.spec.guest_tuning import dump, format_cpuset, parse_cpuset
from controller.spec.models import Disk, GuestSpec
from controller.spec.units import format_size

_KVM_LIKE = frozenset({"kvm", "qemu", "test"})
# Where <cputune> children go: libvirt's schema order (the ones virtsync writes, then the rest).
_CPUTUNE_ORDER = ("shares", "period", "quota", "global_period", "global_quota", "emulator_period",
                  "emulator_quota", "iothread_period", "iothread_quota", "vcpupin", "emulatorpin", "iothreadpin")
SCHED_DEFAULTS = {"shares": 1024, "period": 100000, "quota": -1}


def _canon(cpus: str | None) -> str | None:
    return format_cpuset(parse_cpuset(cpus)) if cpus else None


def _place(root: etree._Element, tag: str, after: tuple[str, ...]) -> etree._Element:
    """The domain's ``tag`` element, made after the first of ``after`` there is (libvirt's order)."""
    el = root.find(tag)
    return el if el is not None else insert_after(root, tag, after)


def _drop_if_empty(el: etree._Element | None) -> None:
    if el is not None and len(el) == 0 and not el.attrib and not (el.text or "").strip():
        remove(el)


def _cpu_el(root: etree._Element) -> etree._Element:
    return _place(root, "cpu", ("features", "os"))


def _cputune_el(root: etree._Element) -> etree._Element:
    return _place(root, "cputune", ("iothreadids", "iothreads", "vcpus", "vcpu"))


def _insert_ordered(parent: etree._Element, el: etree._Element, order: tuple[str, ...]) -> None:
    rank = order.index(el.tag) if el.tag in order else len(order)
    for i, c in enumerate(parent):
        if isinstance(c.tag, str) and c.tag in order and order.index(c.tag) > rank:
            parent.insert(i, el)
            return
    parent.append(el)


def _show(value: Any) -> Any:
    if isinstance(value, dict):
        return " ".join(f"{k}={_show(v)}" for k, v in value.items() if v not in (None, {}, [])) or "{}"
    if isinstance(value, list):
        return "[" + ", ".join(str(_show(v)) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _declared(block: str, part: str | None = None) -> Callable[[GuestSpec], bool]:
    def given(spec: GuestSpec) -> bool:
        if block not in spec.model_fields_set:
            return False
        if part is None:
            return True
        parent = getattr(spec, block)
        return parent is not None and part in parent.model_fields_set
    return given


def _nothing_more(_spec: GuestSpec, _caps: HostCapabilities, _host: str) -> str | None:
    """For a field with no host facts to check: declared on a host kind without it (Xen), the plan
    refuses the guest rather than leave out what a latency-sensitive guest asked for."""
    return None


def _refusal(what: str, host: str, caps: HostCapabilities, why: str) -> str:
    return f"host {host} ({caps.driver}) cannot give {what}: {why}"


# ----------------------------------------------------------------- CPU topology


def _read_topology(root: etree._Element) -> dict[str, Any]:
    t = root.find("cpu/topology")
    if t is None:
        return {"topology": None}
    return {"topology": {k: int(t.get(k, "1")) for k in ("sockets", "dies", "cores", "threads")}}


def _want_topology(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    return dump(spec.cpu.topology) if spec.cpu is not None else None


def _write_topology(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    want = _want_topology(spec, _facts)
    if want is None:
        cpu = root.find("cpu")
        if cpu is not None:
            remove(cpu.find("topology"))
            _drop_if_empty(cpu)
        return
    cpu = _cpu_el(root)
    t = cpu.find("topology")
    if t is None:
        t = etree.Element("topology")
        model = cpu.find("model")  # libvirt's order: model, vendor, topology, …, feature, numa
        vendor = cpu.find("vendor")
        anchor = vendor if vendor is not None else model
        if anchor is not None:
            anchor.addnext(t)
        else:
            cpu.insert(0, t)
    for k in ("sockets", "dies", "cores", "threads"):
        t.set(k, str(want[k]))


# ----------------------------------------------------------------- pinning


def _read_pinning(root: etree._Element) -> dict[str, Any]:
    tune = root.find("cputune")
    if tune is None:
        return {"pinning": None}
    vcpus = {int(p.get("vcpu", "0")): _canon(p.get("cpuset")) for p in tune.findall("vcpupin")}
    threads = {int(p.get("iothread", "0")): _canon(p.get("cpuset")) for p in tune.findall("iothreadpin")}
    emu = tune.find("emulatorpin")
    value = {"vcpus": dict(sorted(vcpus.items())), "emulator": _canon(emu.get("cpuset")) if emu is not None else None,
             "iothreads": dict(sorted(threads.items()))}
    return {"pinning": value if vcpus or threads or emu is not None else None}


def _want_pinning(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    p = spec.cpu.pinning if spec.cpu is not None else None
    if p is None:
        return None
    value = {"vcpus": {k: _canon(v) for k, v in sorted(p.vcpus.items())}, "emulator": _canon(p.emulator),
             "iothreads": {k: _canon(v) for k, v in sorted(p.iothreads.items())}}
    return value if p.vcpus or p.iothreads or p.emulator else None


def _write_pinning(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    want = _want_pinning(spec, facts)
    tune = root.find("cputune")
    if tune is not None:
        for tag in ("vcpupin", "emulatorpin", "iothreadpin"):
            for el in tune.findall(tag):
                tune.remove(el)
    if want is None:
        _drop_if_empty(tune)
        return
    tune = _cputune_el(root)
    for vcpu, cpus in want["vcpus"].items():
        _insert_ordered(tune, etree.Element("vcpupin", vcpu=str(vcpu), cpuset=cpus), _CPUTUNE_ORDER)
    if want["emulator"]:
        _insert_ordered(tune, etree.Element("emulatorpin", cpuset=want["emulator"]), _CPUTUNE_ORDER)
    for thread, cpus in want["iothreads"].items():
        _insert_ordered(tune, etree.Element("iothreadpin", iothread=str(thread), cpuset=cpus), _CPUTUNE_ORDER)


_NO_PINS: dict[str, Any] = {"vcpus": {}, "emulator": None, "iothreads": {}}


def _running_pins(v: GuestView, value: dict[str, Any] | None) -> dict[str, Any]:
    """A running guest's pins without those on every host CPU: QEMU's live XML keeps a pin widened
    to every CPU (how a pin is lifted live), which is no pin."""
    value = value or _NO_PINS
    every = format_cpuset(v.caps.host_cpus) if v.caps.host_cpus else None
    return {"vcpus": {k: c for k, c in value["vcpus"].items() if c != every},
            "emulator": value["emulator"] if value["emulator"] != every else None,
            "iothreads": {k: c for k, c in value["iothreads"].items() if c != every}}


def _same_running_pins(v: GuestView, want: dict[str, Any] | None, running: dict[str, Any] | None) -> bool:
    return _running_pins(v, want) == _running_pins(v, running)


def _pin_ops(v: GuestView) -> tuple[LiveOp, ...]:
    """The calls that bring the running guest's pins to the spec's: one per vCPU, emulator and I/O
    thread that differs; a pin the spec drops is widened to every host CPU."""
    want = _want_pinning(v.spec, v.facts) or _NO_PINS
    have = _running_pins(v, v.live.pinning if v.live is not None else None)
    ops: list[LiveOp] = []
    for vcpu in sorted(set(want["vcpus"]) | set(have["vcpus"])):
        if want["vcpus"].get(vcpu) != have["vcpus"].get(vcpu):
            ops.append(PinVcpu(vcpu, want["vcpus"].get(vcpu) or ""))
    if want["emulator"] != have["emulator"]:
        ops.append(PinEmulator(want["emulator"] or ""))
    for thread in sorted(set(want["iothreads"]) | set(have["iothreads"])):
        if want["iothreads"].get(thread) != have["iothreads"].get(thread):
            ops.append(PinIOThread(thread, want["iothreads"].get(thread) or ""))
    return tuple(ops)


def _pin_live_possible(v: GuestView) -> bool:
    """Live where the running guest has every vCPU and I/O thread pinned (a vCPU above the running
    count, or an I/O thread not running yet, waits for the boot that makes it)."""
    if v.live is None:
        return True
    want = _want_pinning(v.spec, v.facts) or {"vcpus": {}, "iothreads": {}}
    threads = v.live.iothreads or 0
    return all(c < v.live.max_vcpus for c in want["vcpus"]) and all(t <= threads for t in want["iothreads"])


def _pinning_impact(v: GuestView) -> Impact:
    return Impact.LIVE if _pin_live_possible(v) else Impact.NEXT_BOOT


def _pinning_live(v: GuestView) -> tuple[LiveOp, ...] | None:
    return (_pin_ops(v) or None) if _pinning_impact(v) == Impact.LIVE else None


def _pinning_running_differs(v: GuestView) -> tuple[LiveOp | tuple[LiveOp, ...] | None, str]:
    if not _pin_live_possible(v):
        return None, "a pinned vCPU or I/O thread does not run yet"
    return _pin_ops(v) or None, ""


def _host_cpus(caps: HostCapabilities) -> str:
    return format_cpuset(caps.host_cpus) if caps.host_cpus else "none"


def _pinning_refusal(spec: GuestSpec, caps: HostCapabilities, host: str) -> str | None:
    want = _want_pinning(spec, Facts("", caps.virt_type))
    if want is None or not caps.host_cpus:
        return None
    sets = [*(f"vCPU {k}" for k in want["vcpus"]), *(["emulator"] if want["emulator"] else []),
            *(f"I/O thread {k}" for k in want["iothreads"])]
    values = [*want["vcpus"].values(), *([want["emulator"]] if want["emulator"] else []), *want["iothreads"].values()]
    for label, cpus in zip(sets, values, strict=True):
        missing = parse_cpuset(cpus) - caps.host_cpus
        if missing:
            return _refusal(f"{label} the host CPUs {cpus}", host, caps,
                            f"it has no CPU {format_cpuset(missing)} (its CPUs are {_host_cpus(caps)})")
    return None


# ----------------------------------------------------------------- NUMA


def _read_numa(root: etree._Element) -> dict[str, Any]:
    cells = []
    for c in root.findall("cpu/numa/cell"):
        cells.append({"id": int(c.get("id", "0")), "cpus": _canon(c.get("cpus")) or "",
                      "memory": int(c.get("memory", "0")) * _unit(c.get("unit", "KiB"))})
    tune = root.find("numatune")
    mem = tune.find("memory") if tune is not None else None
    memnodes = [{"cell": int(m.get("cellid", "0")), "mode": m.get("mode", "strict"), "nodes": _canon(m.get("nodeset"))}
                for m in (tune.findall("memnode") if tune is not None else [])]
    if not cells and tune is None:
        return {"numa": None}
    return {"numa": {"cells": sorted(cells, key=lambda c: c["id"]),
                     "hostNodes": _canon(mem.get("nodeset")) if mem is not None else None,
                     "mode": (mem.get("mode") if mem is not None else None) or "strict",
                     "memnodes": sorted(memnodes, key=lambda m: m["cell"])}}


def _unit(unit: str) -> int:
    return {"b": 1, "bytes": 1, "KiB": 1024, "k": 1024, "KB": 1000, "MiB": 1024**2, "M": 1024**2,
            "GiB": 1024**3, "G": 1024**3}.get(unit, 1024)


def _want_numa(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    n = spec.numa
    if n is None or (not n.cells and not n.host_nodes):
        return None
    return {"cells": sorted(({"id": c.id, "cpus": _canon(c.cpus), "memory": c.memory} for c in n.cells),
                            key=lambda c: c["id"]),
            "hostNodes": _canon(n.host_nodes), "mode": n.mode,
            "memnodes": sorted(({"cell": m.cell, "mode": m.mode, "nodes": _canon(m.nodes)} for m in n.memnodes),
                               key=lambda m: m["cell"])}


def _same_numa(want: dict[str, Any] | None, have: dict[str, Any] | None) -> bool:
    if want is None or have is None:
        return want == have
    if want["hostNodes"] is None and have["hostNodes"] is None:  # no host binding: its mode means nothing
        return {**want, "mode": ""} == {**have, "mode": ""}
    return want == have


def _write_numa(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    want = _want_numa(spec, facts)
    cpu = root.find("cpu")
    numa = cpu.find("numa") if cpu is not None else None
    by_id = {c.get("id"): c for c in numa.findall("cell")} if numa is not None else {}
    cells = want["cells"] if want else []
    for cid, el in by_id.items():
        if cid not in {str(c["id"]) for c in cells}:
            remove(el)
    if cells:
        numa = child(_cpu_el(root), "numa")
        for c in cells:
            found = by_id.get(str(c["id"]))
            cell = found if found is not None else etree.SubElement(numa, "cell", id=str(c["id"]))
            cell.set("cpus", c["cpus"])
            cell.set("memory", str(c["memory"] // 1024))
            cell.set("unit", "KiB")
    elif numa is not None:
        _drop_if_empty(numa)
        _drop_if_empty(cpu)
    tune = root.find("numatune")
    if want is None or (want["hostNodes"] is None and not want["memnodes"]):
        remove(tune)
        return
    tune = _place(root, "numatune", ("cputune", "iothreadids", "iothreads", "vcpus", "vcpu"))
    mem = tune.find("memory")
    if want["hostNodes"] is not None:
        mem = mem if mem is not None else etree.Element("memory")
        if mem.getparent() is None:
            tune.insert(0, mem)
        mem.attrib.clear()
        mem.set("mode", want["mode"])
        mem.set("nodeset", want["hostNodes"])
    else:
        remove(mem)
    for m in tune.findall("memnode"):
        tune.remove(m)
    for m in want["memnodes"]:
        etree.SubElement(tune, "memnode", cellid=str(m["cell"]), mode=m["mode"], nodeset=m["nodes"])


def _show_numa(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    cells = ", ".join(f"{c['id']}: cpus {c['cpus']} {format_size(c['memory'])}" for c in value["cells"])
    out = f"cells [{cells}]"
    if value["hostNodes"] is not None:
        out += f" host nodes {value['hostNodes']} ({value['mode']})"
    for m in value["memnodes"]:
        out += f"; cell {m['cell']} on host nodes {m['nodes']} ({m['mode']})"
    return out


def _export_numa(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    out: dict[str, Any] = {"cells": [{**c, "memory": format_size(c["memory"])} for c in value["cells"]]}
    if value["hostNodes"] is not None:
        out["hostNodes"] = value["hostNodes"]
        out["mode"] = value["mode"]
    if value["memnodes"]:
        out["memnodes"] = value["memnodes"]
    return out


def _numa_refusal(spec: GuestSpec, caps: HostCapabilities, host: str) -> str | None:
    n = spec.numa
    if n is None or not caps.numa_nodes:
        return None
    for label, nodes in [("hostNodes", n.host_nodes), *((f"memnode of cell {m.cell}", m.nodes) for m in n.memnodes)]:
        missing = parse_cpuset(nodes) - caps.numa_nodes if nodes else frozenset()
        if missing:
            return _refusal(f"{label} on host NUMA nodes {nodes}", host, caps,
                            f"it has no node {format_cpuset(missing)} (its nodes are {format_cpuset(caps.numa_nodes)})")
    return None


# ----------------------------------------------------------------- memory backing


def _read_backing(root: etree._Element) -> dict[str, Any]:
    b = root.find("memoryBacking")
    if b is None:
        return {"memory_backing": None}
    huge = b.find("hugepages")
    page = huge.find("page") if huge is not None else None
    src, acc = b.find("source"), b.find("access")
    return {"memory_backing": {
        "hugepages": None if huge is None else {"size": int(page.get("size", "0")) * _unit(page.get("unit", "KiB"))
                                                if page is not None and page.get("size") else 2 * 1024**2},
        "locked": b.find("locked") is not None,
        "source": src.get("type") if src is not None else None,
        "access": acc.get("mode") if acc is not None else None}}


def _want_backing(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    b = spec.memory_backing
    if b is None:
        return None
    value = dump(b) or {}
    if spec.filesystems:  # virtiofs needs the memory shared (fields/guest_devices.py writes it so)
        value["access"] = value["access"] or "shared"
        if value["source"] is None and value["hugepages"] is None:
            value["source"] = "memfd"
    return value


def _write_backing(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    want = _want_backing(spec, facts)
    if want is None:
        return
    b = _place(root, "memoryBacking", ("currentMemory", "memory"))
    huge = b.find("hugepages")
    if want["hugepages"] is None:
        remove(huge)
    else:
        huge = huge if huge is not None else etree.Element("hugepages")
        if huge.getparent() is None:
            b.insert(0, huge)
        for p in huge.findall("page"):
            huge.remove(p)
        etree.SubElement(huge, "page", size=str(want["hugepages"]["size"] // 1024), unit="KiB")
    if want["locked"]:
        child(b, "locked")
    else:
        remove(b.find("locked"))
    for tag, attr in (("source", "type"), ("access", "mode")):
        if want[tag] is None:
            remove(b.find(tag))
        else:
            child(b, tag).set(attr, want[tag])
    _drop_if_empty(b)


def _show_backing(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    parts = []
    if value["hugepages"] is not None:
        parts.append(f"hugepages {format_size(value['hugepages']['size'])}")
    if value["locked"]:
        parts.append("locked")
    parts += [f"{k} {value[k]}" for k in ("source", "access") if value[k]]
    return ", ".join(parts) or "default"


def _export_backing(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    out: dict[str, Any] = {}
    if value["hugepages"] is not None:
        out["hugepages"] = {"size": format_size(value["hugepages"]["size"])}
    if value["locked"]:
        out["locked"] = True
    out.update({k: value[k] for k in ("source", "access") if value[k]})
    return out or None


def _backing_refusal(spec: GuestSpec, caps: HostCapabilities, host: str) -> str | None:
    b = spec.memory_backing
    if b is None or b.hugepages is None or caps.hugepages is None:
        return None
    size = b.hugepages.size
    pages = dict(caps.hugepages)
    if pages.get(size, 0) == 0:
        have = ", ".join(f"{n} of {format_size(s)}" for s, n in caps.hugepages if n) or "none"
        return _refusal(f"{format_size(size)} huge pages", host, caps,
                        f"it has none of that size (its huge pages: {have}; allocate them, e.g. "
                        f"/sys/kernel/mm/hugepages/hugepages-{size // 1024}kB/nr_hugepages)")
    return None


# ----------------------------------------------------------------- I/O threads and cputune


def _read_iothreads(root: etree._Element) -> dict[str, Any]:
    text = root.findtext("iothreads")
    return {"iothreads": int(text) if text and text.strip().isdigit() else None}


def _write_iothreads(root: etree._Element, spec: GuestSpec, _facts: Facts) -> None:
    remove(root.find("iothreadids"))  # libvirt numbers them 1…N again
    if not spec.iothreads:
        remove(root.find("iothreads"))
        return
    _place(root, "iothreads", ("vcpus", "vcpu")).text = str(spec.iothreads)


def _read_cputune(root: etree._Element) -> dict[str, Any]:
    tune = root.find("cputune")
    if tune is None:
        return {"cputune": None}
    value = {k: int(t) for k in ("shares", "period", "quota") if (t := tune.findtext(k)) is not None}
    return {"cputune": value or None}


def _want_cputune(spec: GuestSpec, _facts: Facts) -> dict[str, Any] | None:
    t = spec.cputune
    if t is None:
        return None
    return {k: v for k, v in (("shares", t.shares), ("period", t.period), ("quota", t.quota)) if v is not None} or None


def _sched(value: dict[str, Any] | None) -> dict[str, int]:
    """Values that differ from the host's defaults: a running guest shows its period and quota
    once they are set, even to the defaults."""
    return {k: v for k, v in (value or {}).items() if SCHED_DEFAULTS.get(k) != v}


def _write_cputune(root: etree._Element, spec: GuestSpec, facts: Facts) -> None:
    want = _want_cputune(spec, facts) or {}
    tune = root.find("cputune")
    if tune is None and not want:
        return
    tune = tune if tune is not None else _cputune_el(root)
    for k in ("shares", "period", "quota"):
        if k not in want:
            remove(tune.find(k))
            continue
        el = tune.find(k)
        if el is None:
            el = etree.Element(k)
            _insert_ordered(tune, el, _CPUTUNE_ORDER)
        el.text = str(want[k])
    _drop_if_empty(tune)


def _sched_live(v: GuestView) -> bool:
    # the test driver's scheduler has only a weight; libxl's credit scheduler has weight and cap
    return v.live is None or v.caps.driver == "QEMU"


def _cputune_impact(v: GuestView) -> Impact:
    return Impact.LIVE if _sched_live(v) else Impact.NEXT_BOOT


def _sched_op(v: GuestView) -> LiveOp:
    want = _want_cputune(v.spec, v.facts) or {}
    return SetSchedulerParameters(cpu_shares=want.get("shares", SCHED_DEFAULTS["shares"]),
                                  vcpu_period=want.get("period", SCHED_DEFAULTS["period"]),
                                  vcpu_quota=want.get("quota", SCHED_DEFAULTS["quota"]))


# ----------------------------------------------------------------- a disk's I/O thread


def _read_disk_iothread(el: etree._Element) -> dict[str, Any]:
    driver = el.find("driver")
    value = driver.get("iothread") if driver is not None else None
    return {"iothread": int(value) if value and value.isdigit() else None}


def _write_disk_iothread(el: etree._Element, disk: Disk, _facts: Facts) -> None:
    driver = el.find("driver")
    if disk.iothread is not None:
        child(el, "driver").set("iothread", str(disk.iothread))
    elif driver is not None and "iothread" in driver.attrib:
        del driver.attrib["iothread"]


DISK_IOTHREAD: Field[Disk] = Field(
    "iothread", "the disk's I/O thread, <driver iothread>", Impact.NEXT_BOOT, pointer="/spec/disks/{i}/iothread",
    needs=("driver",), read=_read_disk_iothread, write=_write_disk_iothread, want=lambda disk, _f: disk.iothread,
    # (a Xen guest never gets here: its iothreads are refused, and a disk's needs them)
    have=lambda st, _o: st.iothread, export=lambda v: v,
    boot_why="a disk is tied to its I/O thread when it is plugged in",
    samples=(1, 2))


TUNING_FIELDS: tuple[Field[GuestSpec], ...] = (
    Field("topology", "CPU topology (sockets × dies × cores × threads = maxVcpus)", Impact.NEXT_BOOT,
          pointer="/spec/cpu/topology", xpaths=("/domain/cpu/topology",), is_declared=_declared("cpu", "topology"),
          needs=("topology",), read=_read_topology, write=_write_topology, want=_want_topology,
          have=lambda c, _o: c.topology,
          show=_show, virt_types=_KVM_LIKE, export=lambda v: v, refuse=_nothing_more,
          boot_why="the CPU topology is fixed when the guest starts",
          samples=({"sockets": 2}, {"cores": 2})),  # with vcpus: 2 (GUEST_EXTRA in the tests)
    Field("pinning", "vCPU, emulator and I/O thread pinning: live through pinVcpuFlags, pinEmulator and "
          "pinIOThread, and in the definition", Impact.LIVE, pointer="/spec/cpu/pinning",
          xpaths=("/domain/cputune/vcpupin", "/domain/cputune/emulatorpin", "/domain/cputune/iothreadpin"),
          is_declared=_declared("cpu", "pinning"),
          needs=("cputune",), read=_read_pinning, write=_write_pinning, want=_want_pinning,
          have=lambda c, _o: c.pinning, show=_show, impact_of=_pinning_impact, live=_pinning_live,
          running_differs=_pinning_running_differs, same_live=_same_running_pins,
          calls=(PinVcpu.call, PinEmulator.call, PinIOThread.call),
          virt_types=_KVM_LIKE, export=lambda v: v, refuse=_pinning_refusal,
          boot_why="a pinned vCPU or I/O thread does not run yet",
          samples=({"vcpus": {0: "0"}}, {"vcpus": {0: "1"}, "emulator": "0"})),
    Field("numa", "guest NUMA cells (<cpu><numa>) and host node bindings (<numatune>)", Impact.NEXT_BOOT,
          xpaths=("/domain/cpu/numa", "/domain/numatune"), is_declared=_declared("numa"),
          needs=("numa", "numatune"), read=_read_numa,
          write=_write_numa, want=_want_numa, have=lambda c, _o: c.numa, same=_same_numa, show=_show_numa,
          virt_types=_KVM_LIKE, export=_export_numa, refuse=_numa_refusal,
          boot_why="the guest's NUMA nodes and their memory are laid out when it starts",
          samples=({"cells": [{"id": 0, "cpus": "0", "memory": "128MiB"}]},
                   {"cells": [{"id": 0, "cpus": "0", "memory": "128MiB"}], "hostNodes": "0"})),
    Field("memoryBacking", "huge pages, locked, source and access of the guest's memory", Impact.NEXT_BOOT,
          xpaths=("/domain/memoryBacking",), is_declared=_declared("memory_backing"),
          needs=("memoryBacking",), read=_read_backing,
          write=_write_backing, want=_want_backing, have=lambda c, _o: c.memory_backing, show=_show_backing,
          virt_types=_KVM_LIKE, export=_export_backing, refuse=_backing_refusal,
          boot_why="the guest's memory is allocated when it starts",
          samples=({"locked": True}, {"hugepages": {"size": "2MiB"}, "source": "memfd", "access": "shared"})),
    Field("iothreads", "I/O threads (disks name theirs: iothread: N)", Impact.NEXT_BOOT,
          xpaths=("/domain/iothreads", "/domain/iothreadids"), is_declared=_declared("iothreads"),
          needs=("iothreads",), read=_read_iothreads, write=_write_iothreads, want=lambda s, _f: s.iothreads or None,
          have=lambda c, _o: c.iothreads, virt_types=_KVM_LIKE, refuse=_nothing_more,
          export=lambda v: v or None, boot_why="virtsync adds I/O threads with the definition (no addIOThread)",
          samples=(1, 2)),
    Field("cputune", "CPU shares, period and quota: live through setSchedulerParametersFlags (QEMU), and in "
          "the definition", Impact.LIVE, xpaths=("/domain/cputune/shares", "/domain/cputune/period",
                                                 "/domain/cputune/quota"),
          is_declared=_declared("cputune"),
          needs=("cputune",), read=_read_cputune, write=_write_cputune, want=_want_cputune,
          have=lambda c, _o: c.cputune, same=lambda w, h: _sched(w) == _sched(h), show=_show,
          impact_of=_cputune_impact, live=lambda v: _sched_op(v) if _cputune_impact(v) == Impact.LIVE else None,
          calls=(SetSchedulerParameters.call,), virt_types=_KVM_LIKE, export=lambda v: v, refuse=_nothing_more,
          boot_why="this host's scheduler has no CPU shares, period or quota to set live",
          samples=({"shares": 512}, {"shares": 2048, "quota": 50000})),
)

__all__ = ["DISK_IOTHREAD", "TUNING_FIELDS"]
