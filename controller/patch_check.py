"""xmlPatches at validation time: before anything reaches a host.

Run by the spec set's checks (controller/spec/checks.py) for the objects that have patches, and
by nothing else: specs without patches cost nothing. For each patch: its root element is the
object's (/domain, /network, /pool); it does not touch XML a modelled field owns in this spec
(controller/fields/patches.py ``owned_paths``: the error names the field to use instead); and the
object's definition as virtsync would write it from the spec alone, patches applied, passes
libvirt's own RNG schema (``virt-xml-validate``, from libvirt-clients). A failure points at the
spec file and line of the first patch that makes the document invalid.

A module of its own, outside spec/ (pure) and plan/ (no I/O): it runs a subprocess, and builds
documents with the hypervisor's XML writers, which are lxml only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from controller.errors import Diagnostic
from controller.fields.applied import declared
from controller.fields.base import Facts, Field
from controller.fields.guest import GUEST_FIELDS
from controller.fields.network import NETWORK_FIELDS
from controller.fields.patches import conflict, owned_paths
from controller.fields.pool import POOL_FIELDS
from controller.hypervisor.domain_xml import WriteContext, new_guest_xml
from controller.hypervisor.network_xml import network_xml
from controller.hypervisor.pool_xml import pool_xml
from controller.model.state import Owner
from controller.spec.models import Guest, Host, Network, StoragePool
from controller.spec.patches import XmlPatch
from controller.spec.specset import Located, SpecSet

TOOL = "virt-xml-validate"
TIMEOUT = 60.0
# (root element, libvirt schema name, the kind's registry)
KINDS: dict[type[Any], tuple[str, str, tuple[Field[Any], ...]]] = {
    Guest: ("domain", "domain", GUEST_FIELDS),
    Network: ("network", "network", NETWORK_FIELDS),
    StoragePool: ("pool", "storagepool", POOL_FIELDS),
}
# What no field declares but virtsync keeps: the object's identity and its ownership record.
IDENTITY = {"name": "the object's name: set metadata.name instead", "uuid": "the UUID virtsync keeps",
            "metadata/owner": "virtsync's ownership record"}


class ToolMissing(Exception):
    pass


def host_virt_type(host: Host) -> str:
    """The host's kind from its spec alone (the capability probe is not run at validation)."""
    scheme = urlsplit(host.spec.uri).scheme.split("+")[0]
    if scheme == "test":
        return "test"
    if scheme == "xen" or host.spec.hypervisor == "xen":
        return "xen"
    return host.spec.hypervisor or "kvm"


def schema_problem(xml: str, schema: str) -> str | None:
    """libvirt's message when ``xml`` fails its RNG schema, else None."""
    import shutil  # here: only a guest with xmlPatches runs the checker
    import subprocess

    tool = shutil.which(TOOL)
    if tool is None:
        raise ToolMissing(f"{TOOL} is not installed (package libvirt-clients)")
    try:
        proc = subprocess.run([tool, "-", schema], input=xml, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissing(f"{TOOL} did not run: {exc}") from None
    if proc.returncode == 0:
        return None
    text = proc.stderr + proc.stdout
    if proc.returncode in (126, 127) or "not found" in text:  # its xmllint (libxml2-utils) is missing
        raise ToolMissing(f"{TOOL} could not run: {text.strip()}")
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^-:\d+: ", "", line.strip())  # a line of the generated document, not the spec's
        if line and line != "- fails to validate" and line not in lines:
            lines.append(line)
    return "; ".join(lines) or f"{TOOL} exited {proc.returncode}"


def _first_failing(build: Callable[[Sequence[XmlPatch]], str], patches: Sequence[XmlPatch],
                   schema: str) -> tuple[int, str] | None:
    """(index of the first patch after which the document is invalid, libvirt's message), or
    None if the patched document validates. One run when it does; more only to find the culprit."""
    problem = schema_problem(build(patches), schema)
    if problem is None:
        return None
    if schema_problem(build(()), schema) is not None:
        return None  # invalid without patches too: not theirs to answer for (libvirt decides on define)
    for n in range(1, len(patches)):
        found = schema_problem(build(patches[:n]), schema)
        if found is not None:
            return n - 1, found
    return len(patches) - 1, problem


def _at(item: Located, i: int, message: str, *where: str, severity: str = "error") -> Diagnostic:
    line, col = item.where("spec", "xmlPatches", i, *where)
    return Diagnostic(item.file, line, col, message, severity)


def _builder(item: Located, virt_type: str, pool_paths: dict[str, str]) -> Callable[[Sequence[XmlPatch]], str]:
    """The object's new definition from its spec, with the given patches."""
    obj = item.obj
    name = obj.metadata.name
    kind = type(obj).__name__

    def build(patches: Sequence[XmlPatch]) -> str:
        spec = obj.spec.model_copy(update={"xml_patches": list(patches)})
        owner = Owner("validate", kind, name)
        if isinstance(obj, Guest):
            return new_guest_xml(name, spec, WriteContext(virt_type, pool_paths, owner))
        if isinstance(obj, Network):
            return network_xml(name, spec, owner)
        return pool_xml(name, spec, patches=patches)

    return build


def check_patches(specs: SpecSet) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    hosts = {h.obj.metadata.name: h.obj for h in specs.of_kind(Host)}
    pool_paths: dict[str, dict[str, str]] = {}
    for p in specs.of_kind(StoragePool):
        if p.obj.spec.path:
            pool_paths.setdefault(p.obj.spec.host, {})[p.obj.metadata.name] = p.obj.spec.path
    for item in specs.items:
        kind = KINDS.get(type(item.obj))
        patches = getattr(item.obj.spec, "xml_patches", None)
        host = hosts.get(str(getattr(item.obj.spec, "host", "")))
        if kind is None or not patches or host is None:
            continue  # no patches, or an unknown host (reported by the set's checks)
        root, schema, fields = kind
        virt_type = host_virt_type(host)
        spec = item.obj.spec
        facts = Facts(item.obj.metadata.name, virt_type, pool_paths.get(spec.host, {}))
        pointers = {f.name: f.path.removeprefix("/").replace("/", ".") for f in fields}
        owned = {path: f"the field {name}: set {pointers[name]} instead"
                 for path, name in owned_paths(fields, spec, facts, declared(spec)).items()}
        owned |= {f"/{root}/{path}": what for path, what in IDENTITY.items()}
        problems = []
        for i, patch in enumerate(patches):
            if patch.root != root:
                problems.append(_at(item, i, f"xpath {patch.xpath!r} must start at this object's root "
                                    f"element: /{root}/…", "xpath"))
                continue
            hit = conflict(patch, owned)
            if hit is not None:
                path, use = hit
                problems.append(_at(item, i, f"xmlPatch {patch.describe()}: {path} is {use} "
                                    "(xmlPatches are for the XML no field models)"))
        out += problems
        if problems:
            continue
        try:
            failing = _first_failing(_builder(item, virt_type, pool_paths.get(spec.host, {})), patches, schema)
        except ToolMissing as exc:
            out.append(_at(item, 0, f"the patched {root} document was not checked against libvirt's schema: "
                           f"{exc}; libvirt still checks it when it is defined", severity="warning"))
            continue
        if failing is not None:
            i, message = failing
            out.append(_at(item, i, f"with xmlPatch {patches[i].describe()} the {root} definition fails "
                           f"libvirt's schema ({TOOL}): {message}"))
    return out
