"""xmlPatches applied to a definition, compared with an observed one, and checked against owned XML.

Pure (lxml only). The patches are applied after every declared field on every write (new
definitions, updates, recreates), so each must be idempotent:

- ``set`` makes the text (or attribute) of every element the xpath selects ``value``; when it
  selects nothing, the missing elements along the path are made (under the first match of the
  longest existing part), with the attributes their ``[@name='value']`` predicates name.
- ``add`` appends the fragment to every element the xpath selects (made like set's when missing),
  unless that element already has a child that *matches* the fragment: the same tag, the
  fragment's attributes with the same values, its text, and for each of its children a matching
  child. Matching, not equality, because libvirt adds to what it is given (an <address>, default
  attributes), and an add must neither pile up copies nor show as drift after libvirt's define.
- ``remove`` removes every element or attribute the xpath selects.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree

from controller.fields.base import Facts, Field
from controller.fields.xmlutil import parse
from controller.model.records import record
from controller.spec.patches import NAMESPACES, Step, XmlPatch, parse_fragment, plain_path

# ---------------------------------------------------------------- applying


def _select(root: etree._Element, xpath: str) -> list[Any]:
    found = root.getroottree().xpath(xpath, namespaces=NAMESPACES)
    return list(found) if isinstance(found, list) else []


def _qname(name: str) -> str:
    prefix, _, local = name.rpartition(":")
    return f"{{{NAMESPACES[prefix]}}}{local}" if prefix else name


def _make(root: etree._Element, steps: list[Step]) -> list[etree._Element]:
    """The elements ``steps`` (element steps only) select, made where missing."""
    if not steps or root.tag != _qname(steps[0].name):
        return []
    current = [root]
    for i in range(1, len(steps)):
        found = [e for e in _select(root, "".join(f"/{s.name}{s.predicates}" for s in steps[:i + 1]))
                 if isinstance(e, etree._Element)]
        if not found:
            attrs = steps[i].made_with() or {}
            found = [etree.SubElement(current[0], _qname(steps[i].name), {_qname(k): v for k, v in attrs.items()})]
        current = found
    return current


def _apply_one(root: etree._Element, patch: XmlPatch) -> None:
    steps = patch.steps
    if patch.op == "remove":
        for node in _select(root, patch.xpath):
            if isinstance(node, etree._Element):
                parent = node.getparent()
                if parent is not None:
                    parent.remove(node)
            elif getattr(node, "is_attribute", False):
                owner = node.getparent()
                if owner is not None and node.attrname in owner.attrib:
                    del owner.attrib[node.attrname]
        return
    if patch.op == "set":
        assert patch.value is not None
        if steps[-1].attribute:
            for el in _make(root, steps[:-1]):
                el.set(_qname(steps[-1].name), patch.value)
        else:
            for el in _make(root, steps):
                el.text = patch.value
        return
    assert patch.xml is not None
    fragment = parse_fragment(patch.xml)
    for parent in _make(root, steps):
        if not any(matches(c, fragment) for c in parent if isinstance(c.tag, str)):
            parent.append(copy.deepcopy(fragment))


def apply_patches(root: etree._Element, patches: Sequence[XmlPatch]) -> None:
    """Apply ``patches`` in order to a definition, in place."""
    for patch in patches:
        _apply_one(root, patch)


def write_patches(root: etree._Element, spec: Any, _facts: Facts) -> None:
    """The registry writer of every kind's ``xmlPatches``."""
    apply_patches(root, spec.xml_patches)


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def matches(have: etree._Element, want: etree._Element) -> bool:
    """``have`` holds all of ``want``: tag, attributes, text, and (recursively) its children."""
    if have.tag != want.tag or any(have.get(k) != v for k, v in want.attrib.items()):
        return False
    if _text(want) and _text(have) != _text(want):
        return False
    kids = [c for c in have if isinstance(c.tag, str)]
    return all(any(matches(h, w) for h in kids) for w in want if isinstance(w.tag, str))


# ---------------------------------------------------------------- comparing


@record
class Unsatisfied:
    """A patch the observed document does not satisfy, for drift: what it wants and what is there."""

    index: int
    patch: XmlPatch
    have: Any  # the observed value(s); None when the path is missing

    @property
    def pointer(self) -> str:
        return f"/spec/xmlPatches/{self.index}"

    @property
    def want(self) -> Any:
        if self.patch.op == "set":
            return self.patch.value
        return "present" if self.patch.op == "add" else "absent"

    @property
    def note(self) -> str:
        return self.patch.describe()


def _value(node: Any) -> str:
    return str(node) if not isinstance(node, etree._Element) else _text(node)


def unsatisfied(root: etree._Element, patches: Sequence[XmlPatch]) -> list[Unsatisfied]:
    """The patches an observed definition does not satisfy: a set whose value differs (or whose
    path is missing), an add whose element is missing, a remove whose target exists."""
    out = []
    for i, patch in enumerate(patches):
        found = _select(root, patch.xpath)
        if patch.op == "set":
            values = [_value(n) for n in found]
            if not values or any(v != patch.value for v in values):
                out.append(Unsatisfied(i, patch, (values[0] if len(values) == 1 else values) or None))
        elif patch.op == "add":
            assert patch.xml is not None
            fragment = parse_fragment(patch.xml)
            parents = [p for p in found if isinstance(p, etree._Element)]
            if not parents or not all(any(matches(c, fragment) for c in p if isinstance(c.tag, str))
                                      for p in parents):
                out.append(Unsatisfied(i, patch, "missing"))
        elif found:
            out.append(Unsatisfied(i, patch, "present"))
    return out


def unsatisfied_in(xml: str, patches: Sequence[XmlPatch]) -> list[Unsatisfied]:
    return unsatisfied(parse(xml), patches) if patches and xml else []


# ---------------------------------------------------------------- owned XML


def owned_paths(fields: Sequence[Field[Any]], spec: Any, facts: Facts, declared: set[str]) -> dict[str, str]:
    """XML path → the field that owns it in this spec on this kind of host.

    A field owns its ``xpaths`` where it applies (its host kinds and ``when``) and the spec gives
    it a value: the spec declares it, or its wanted value is not None (a default virtsync writes
    into every definition: memory, vcpus, firmware, a network's mode…), or it has no single value
    (the keyed device lists, disks and interfaces: their XML is virtsync's). A field that is None
    unless declared (onCrash, cpu, boot, graphics…) leaves its XML to patches until declared."""
    out: dict[str, str] = {}
    for f in fields:
        if not f.xpaths or not f.applies(spec, facts):
            continue
        given = f.is_declared(spec) if f.is_declared is not None else f.name in declared
        if given or f.want is None or f.want(spec, facts) is not None:
            for path in f.xpaths:
                out.setdefault(path, f.name)
    return out


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _fragment_paths(base: str, el: etree._Element) -> list[str]:
    here = f"{base}/{_plain_tag(el)}"
    out = [here]
    for c in el:
        if isinstance(c.tag, str):
            out += _fragment_paths(here, c)
    return out


def _plain_tag_name(name: str) -> str:
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        prefix = next((p for p, u in NAMESPACES.items() if u == ns), ns)
        return f"{prefix}:{local}"
    return name


def _plain_tag(el: etree._Element) -> str:
    return _plain_tag_name(str(el.tag))


def conflict(patch: XmlPatch, owned: Mapping[str, str]) -> tuple[str, str] | None:
    """(owned path, field) a patch would touch, or None. Refused: a target at or below an owned
    path; a remove or set of an ancestor of one; an add whose element holds an owned element (at
    or below it). Owned attributes do not count in what an add brings: it appends a new element
    and never changes an attribute of an existing one (a second <ip> beside the network's own)."""
    target = plain_path(patch.steps)
    for path, name in owned.items():
        if _within(target, path) or (patch.op in ("remove", "set") and _within(path, target)):
            return path, name
    if patch.op == "add" and patch.xml is not None:
        for inner in _fragment_paths(target, parse_fragment(patch.xml)):
            for path, name in owned.items():
                if _within(inner, path):  # inner names elements only
                    return path, name
    return None
