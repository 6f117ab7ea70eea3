"""`virtsync explain FIELD`: one field of the field registry, for people.

Everything comes from the registry (controller/fields/*, the same declarations docs/fields.md is
written from): how a change lands and its impact, the libvirt XML the field owns, the live call a
change of a running guest gets, and an example — the field's own samples written by the field's
own writer into a small definition (so the XML shown is what virtsync writes), and planned
against each other on a running KVM guest (so the live call shown is the one the planner picks).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterator
from typing import Any

from lxml import etree

from controller.errors import UsageError
from controller.fields import guest as guest_fields
from controller.fields import network as network_fields
from controller.fields import pool as pool_fields
from controller.fields.base import Field
from controller.fields.devices import DISK_CONTROL, DISK_FIELDS, NIC_CONTROL, NIC_FIELDS
from controller.fields.docs import IMPACT_WORDS
from controller.fields.guest import GUEST_FIELDS
from controller.fields.network import NETWORK_FIELDS
from controller.fields.pool import POOL_FIELDS, VOLUME_FIELDS
from controller.model.records import record
from controller.model.state import HostCapabilities, HostState, ObservedGuest, ObservedNetwork, Owner
from controller.spec.models import Disk, GuestSpec, Interface, NetworkSpec, StoragePoolSpec

KINDS = ("Guest", "Network", "StoragePool")


@record
class Entry:
    """One explainable name: a registry field, or a spec field that steers virtsync (CONTROL)."""

    kind: str  # Guest | Network | StoragePool
    name: str  # dotted, as in YAML: memory, disks.cache, ipv4.dhcp.hosts
    field: Field[Any] | None
    control: str = ""  # what a steering field does (nothing on the host)
    item: str = ""  # disk | nic: a field of a list item
    volume: bool = False  # a disk's volume field (size, format, from)
    spec_doc: str = ""  # the spec model's description (the JSON Schema's)

    @property
    def title(self) -> str:
        return f"{self.kind}.{self.name}"

    @property
    def pointer(self) -> str:
        if self.field is not None:
            return self.field.path.replace("{i}", "N")
        return "/spec/" + self.name.replace("disks.", "disks/N/").replace("interfaces.", "interfaces/N/")


def _dotted(pointer: str) -> str:
    parts = [p for p in pointer.removeprefix("/spec/").strip("/").split("/") if p not in ("{i}", "N")]
    return ".".join(parts)


def _doc(model: Any, name: str) -> str:
    for key, info in model.model_fields.items():
        if (info.alias or key) == name:
            return " ".join((info.description or "").split())
    return ""


def entries() -> list[Entry]:
    """Every explainable name, in the registry's order."""
    out: list[Entry] = []
    out += [Entry("Guest", _dotted(f.path), f, spec_doc=_doc(GuestSpec, f.name)) for f in GUEST_FIELDS]
    out += [Entry("Guest", k, None, v, spec_doc=_doc(GuestSpec, k)) for k, v in guest_fields.CONTROL.items()]
    volume = {f.name: f for f in VOLUME_FIELDS}
    out += [Entry("Guest", f"disks.{f.name}", f, item="disk", spec_doc=_doc(Disk, f.name)) for f in DISK_FIELDS]
    for k, v in DISK_CONTROL.items():
        vf = volume.get(k)
        out.append(Entry("Guest", f"disks.{k}", vf, "" if vf else v, item="disk", volume=vf is not None,
                         spec_doc=_doc(Disk, k)))
    out += [Entry("Guest", f"interfaces.{f.name}", f, item="nic", spec_doc=_doc(Interface, f.name))
            for f in NIC_FIELDS]
    out += [Entry("Guest", f"interfaces.{k}", None, v, item="nic", spec_doc=_doc(Interface, k))
            for k, v in NIC_CONTROL.items()]
    out += [Entry("Network", _dotted(f.path), f, spec_doc=_doc(NetworkSpec, f.path.split("/")[2]))
            for f in NETWORK_FIELDS]
    out += [Entry("Network", k, None, v, spec_doc=_doc(NetworkSpec, k)) for k, v in network_fields.CONTROL.items()]
    out += [Entry("StoragePool", _dotted(f.path), f, spec_doc=_doc(StoragePoolSpec, f.name)) for f in POOL_FIELDS]
    out += [Entry("StoragePool", k, None, v, spec_doc=_doc(StoragePoolSpec, k)) for k, v in pool_fields.CONTROL.items()]
    return out


def _query(text: str) -> tuple[str | None, str]:
    """(kind or None, dotted name) of what the user typed: memory, Guest.disks.cache,
    /spec/disks/0/cache, interfaces[0].model, network.ipv4."""
    words = [w for w in re.split(r"[./\[\]]+", text.strip()) if w and not w.isdigit() and w not in ("spec", "N")]
    kind = None
    if words and words[0].lower() in {k.lower() for k in KINDS} | {"pool"}:
        first = words.pop(0).lower()
        kind = next((k for k in KINDS if k.lower() == first), "StoragePool")
    return kind, ".".join(words)


def find(text: str) -> list[Entry]:
    """The entries ``text`` names (a bare name may be a field of several kinds: all of them);
    an unknown name is a usage error naming the closest ones."""
    kind, name = _query(text)
    all_entries = entries()
    found = [e for e in all_entries if e.name.lower() == name.lower() and kind in (None, e.kind)]
    if not found and "." not in name:  # a field's own name inside a list or block: cache, hosts
        found = [e for e in all_entries if e.name.lower().rsplit(".", 1)[-1] == name.lower()
                 and kind in (None, e.kind)]
    if found:
        return found
    names = sorted({e.title for e in all_entries} | {e.name for e in all_entries if kind in (None, e.kind)})
    close = difflib.get_close_matches(f"{kind}.{name}" if kind else name, names, n=5, cutoff=0.6)
    if not close:  # the last word alone: "cache" finds Guest.disks.cache
        last = name.rsplit(".", 1)[-1].lower()
        close = [e.title for e in all_entries if e.name.lower().rsplit(".", 1)[-1] == last][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"unknown field {text!r}{hint} (`virtsync explain --list` lists every field)")


# ------------------------------------------------------------ the example


_OWNER = Owner("default", "Guest", "g")  # PlanOptions()'s instance: planned as its own
_KVM = HostCapabilities(driver="QEMU", virt_type="kvm", libvirt_version=9_000_000)
_GUEST_BASE: dict[str, Any] = {"host": "h1", "state": "stopped", "memory": "128MiB", "restartPolicy": "never"}
_DISK_BASE: dict[str, Any] = {"name": "data", "path": "/var/lib/libvirt/images/data.qcow2"}
_NIC_BASES: tuple[dict[str, Any], ...] = (
    {"network": "lab", "mac": "52:54:00:00:00:0a"},
    {"bridge": "br0", "mac": "52:54:00:00:00:0a"},
    {"direct": {"dev": "eth0", "mode": "passthrough"}, "mac": "52:54:00:00:00:0a"},
)
_NET_BASE: dict[str, Any] = {"host": "h1", "mode": "nat", "bridge": "virbr9",
                             "ipv4": {"address": "192.168.150.1/24",
                                      "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99"}}}
_NET_SAMPLES = {"address": ("192.168.150.1/24", "192.168.150.2/24")}  # the DHCP range stays inside


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = copy.deepcopy(value)


def _guest_specs(e: Entry, samples: tuple[Any, ...]) -> Iterator[tuple[dict[str, Any], ...]]:
    """Spec documents (one per sample) that differ only in the field, on the first base they fit."""
    assert e.field is not None
    if not e.item:
        docs = []
        for value in samples:
            doc = copy.deepcopy(_GUEST_BASE)
            _set(doc, e.name, value)
            docs.append(doc)
        yield tuple(docs)
        return
    key = "disks" if e.item == "disk" else "interfaces"
    for base in (_DISK_BASE,) if e.item == "disk" else _NIC_BASES:
        docs = []
        for value in samples:
            item = {**copy.deepcopy(base), e.field.name: copy.deepcopy(value)}
            docs.append({**copy.deepcopy(_GUEST_BASE), key: [item]})
        yield tuple(docs)


def _without_metadata(xml: str) -> list[str]:
    root = etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=True))
    for md in root.findall("metadata"):
        root.remove(md)
    return etree.tostring(root, pretty_print=True, encoding="unicode").splitlines()


def _changed_lines(a: str, b: str) -> tuple[list[str], list[str]]:
    """The lines of two definitions that differ: (only in a, only in b)."""
    before, after = _without_metadata(a), _without_metadata(b)
    sm = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    old, new = [], []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag != "equal":
            old += [x.strip() for x in before[i1:i2]]
            new += [x.strip() for x in after[j1:j2]]
    return old, new


@record
class Example:
    yaml: tuple[str, str]  # each sample as YAML
    xml: tuple[list[str], list[str]]  # the definition's lines each sample writes (where they differ)
    impact_running: str = ""  # the impact the planner gives the change on a running KVM guest
    live_calls: tuple[str, ...] = ()  # the typed live calls it plans


def _yaml(e: Entry, value: Any) -> str:
    import io

    from ruamel.yaml import YAML

    y = YAML(typ="safe", pure=True)
    y.default_flow_style = True
    buf = io.StringIO()
    y.dump(value, buf)
    text = buf.getvalue().strip().removesuffix("...").strip()
    return f"{e.name.rsplit('.', 1)[-1] if e.item else e.name}: {text}"


def example(e: Entry) -> Example | None:
    """The field's first two samples, written and planned: None where the registry has none."""
    f = e.field
    if f is None or f.planned_by:
        return None
    samples = _NET_SAMPLES.get(f.name, f.samples) if e.kind == "Network" else f.samples
    if len(samples) < 2:
        return None
    yaml = (_yaml(e, samples[0]), _yaml(e, samples[1]))
    if e.kind == "Network":
        return _network_example(e, samples, yaml)
    if e.kind != "Guest":
        return Example(yaml, ([], []))
    from controller.hypervisor.domain_xml import WriteContext, new_guest_xml, read_guest
    from controller.plan.actions import UpdateGuest
    from controller.plan.context import PlanOptions
    from controller.plan.guests import plan_guest
    from controller.spec.models import Guest

    for docs in _guest_specs(e, samples[:2]):
        try:
            guests = [Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest",
                                            "metadata": {"name": "g"}, "spec": d}) for d in docs]
        except ValueError:
            continue  # this NIC source does not take the field: the next base
        virt = "kvm" if f.exists_on("kvm") else "xen"
        ctx = WriteContext(virt, {}, _OWNER, "0b7c9e4e-0000-4000-8000-000000000001")
        xmls = [new_guest_xml("g", g.spec, ctx) for g in guests]
        lines = _changed_lines(*xmls)
        if virt != "kvm":
            return Example(yaml, lines)
        # Planned on a running guest: the impact and the live call a change there gets.
        running = docs[0] | {"state": "running"}
        old = Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                    "spec": running})
        xml = new_guest_xml("g", old.spec, ctx)
        name, uuid, cfg, owner = read_guest(xml)
        obs = ObservedGuest(name, uuid, "running", 1, cfg, cfg, old.spec.autostart, owner, xml)
        new = Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                    "spec": docs[1] | {"state": "running"}})
        out = plan_guest(new, HostState("h1", "test:///explain", _KVM, {"g": obs}), PlanOptions())
        path = f.path.format(i=0)
        impacts = [c.impact for a in out.actions for c in a.changes if c.path == path]
        impacts += [c.impact for p in out.pending for c in p.changes if c.path == path]
        calls = tuple(op.op for a in out.actions if isinstance(a, UpdateGuest) for op in a.live)
        return Example(yaml, lines, IMPACT_WORDS[str(impacts[0])] if impacts else "", calls)
    return Example(yaml, ([], []))


def _network_example(e: Entry, samples: tuple[Any, ...], yaml: tuple[str, str]) -> Example:
    from controller.hypervisor.network_xml import network_xml, read_network
    from controller.plan.actions import UpdateNetwork
    from controller.plan.context import PlanOptions
    from controller.plan.networks import plan_network
    from controller.spec.models import Network

    docs = []
    base = {"host": "h1", **network_fields.SAMPLE_BASES[e.name]} if e.name in network_fields.SAMPLE_BASES \
        else _NET_BASE
    for value in samples[:2]:
        doc = copy.deepcopy(base)
        _set(doc, e.name, value)
        docs.append(doc)
    nets = [Network.model_validate({"apiVersion": "virtsync/v1", "kind": "Network", "metadata": {"name": "n"},
                                    "spec": d}) for d in docs]
    owner = Owner("default", "Network", "n")
    xmls = [network_xml("n", n.spec, owner, "5f0c1e0e-0000-4000-8000-000000000002") for n in nets]
    _, uuid, cfg, own = read_network(xmls[0])
    obs = ObservedNetwork("n", uuid, True, nets[0].spec.autostart, True, cfg, cfg, own, xmls[0])
    out = plan_network(nets[1], HostState("h1", "test:///explain", _KVM, networks={"n": obs}), PlanOptions())
    assert e.field is not None
    impacts = [c.impact for a in out.actions for c in a.changes if c.path == e.field.path]
    calls = []
    for a in out.actions:
        if isinstance(a, UpdateNetwork):
            calls += ["networkUpdate (DHCP range)"] if a.dhcp_range else []
            calls += ["networkUpdate (DHCP host)"] if a.leases else []
            calls += [f"networkUpdate ({edit.section})" for edit in a.edits]
            calls += ["setAutostart"] if a.autostart is not None else []
    return Example(yaml, _changed_lines(*xmls), IMPACT_WORDS[str(impacts[0])] if impacts else "", tuple(calls))


# ------------------------------------------------------------ rendering


def render(e: Entry) -> str:
    f = e.field
    lines = [f"{e.title}  ({e.pointer})"]
    if e.spec_doc:
        lines.append(f"  spec: {e.spec_doc}")
    if f is None:
        lines.append(f"  steers virtsync, nothing on the host: {e.control}")
        return "\n".join(lines) + "\n"
    impact = IMPACT_WORDS[str(f.impact)] + (" (depends on the case, see how)" if f.impact_of is not None else "")
    lines.append(f"  impact: {impact}")
    how = f.how + (f" (planned by its own step: {f.planned_by})" if f.planned_by else "")
    lines.append(f"  how a change lands: {how}")
    if f.xpaths:
        lines.append(f"  libvirt XML: {', '.join(f.xpaths)}")
    if f.virt_types is not None:
        lines.append(f"  hosts: only {', '.join(sorted(f.virt_types - {'test'}))} (and the test driver)"
                     if "test" in f.virt_types else f"  hosts: only {', '.join(sorted(f.virt_types))}")
    if f.live is not None or f.call is not None:
        lines.append("  live call: " + ("always, running or not" if f.call is not None
                                         else "on a running guest, where the impact is live"))
    if f.calls:  # the libvirt calls, from the registry (plans name them per change: [live: …])
        lines.append(f"  libvirt call: {', '.join(f.calls)}")
    if f.impact != "create" and (f.impact != "live" or f.impact_of is not None) and not f.planned_by:
        lines.append(f"  next boot when: {f.next_boot_why}")
    if f.note:
        lines.append(f"  note: {f.note}")
    ex = example(e)
    if ex is not None:
        lines.append("  example (the registry's samples, written by the field's own writer):")
        for yaml, xml in zip(ex.yaml, ex.xml, strict=True):
            lines.append(f"    {yaml}")
            lines += [f"      {x}" for x in xml] or ["      (nothing in the definition)"]
        if ex.impact_running:
            calls = f"; live call: {', '.join(ex.live_calls)}" if ex.live_calls else ""
            what = "guest" if e.kind == "Guest" else e.kind.lower()
            lines.append(f"  from the first to the second on a running {what}: {ex.impact_running}{calls}")
    return "\n".join(lines) + "\n"


def render_list() -> str:
    return "".join(f"{e.title}\t{e.pointer}\n" for e in entries())
