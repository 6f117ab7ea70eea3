"""xmlPatches: the escape hatch for what the schema does not model (applied by controller/fields/patches.py).

An xpath here is a plain location path from the document's root: child steps by name, each
optionally narrowed by predicates (``[@type='usb']``, ``[2]``), the last one optionally an
attribute (``/@name``). No ``//``, ``..``, axes or wildcards: what a patch touches can then be
told from the path alone, which is what the check against the XML a modelled field owns needs.
``set`` and ``add`` make what is missing along their path, so their predicates must say how
(attribute tests ``[@name='value']`` only).
"""


import re
from typing import Literal, Self

from lxml import etree
from pydantic import Field, model_validator

from controller.model.records import record
from controller.spec.base import SpecModel
from controller.spec.types import FieldError

# Prefixes an xpath may use: libvirt's own extension namespaces.
NAMESPACES = {
    "qemu": "http://libvirt.org/schemas/domain/qemu/1.0",
    "dnsmasq": "http://libvirt.org/schemas/network/dnsmasq/1.0",
}
_NAME = r"[A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?"
_STEP = re.compile(rf"(?P<attr>@)?(?P<name>{_NAME})(?P<preds>(?:\[[^\]]*\])*)$")
_ATTR_TEST = re.compile(rf"\[@(?P<name>{_NAME})\s*=\s*(?:'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\")\]")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@record
class Step:
    name: str  # element or attribute name, maybe prefixed
    predicates: str  # "[...][...]" as written, or ""
    attribute: bool = False

    def made_with(self) -> dict[str, str] | None:
        """The attributes an element made for this step gets, or None if its predicates do not
        say (a position, a function): then it cannot be made."""
        rest, attrs = self.predicates, {}
        while rest:
            m = _ATTR_TEST.match(rest)
            if m is None:
                return None
            attrs[m["name"]] = m["sq"] if m["sq"] is not None else m["dq"]
            rest = rest[m.end():]
        return attrs


def split_steps(xpath: str) -> list[Step]:
    """The steps of a plain location path; ValueError says what is not plain."""
    if not xpath.startswith("/") or xpath.startswith("//"):
        raise ValueError(f"xpath {xpath!r} must be absolute from the root element, e.g. /domain/on_crash")
    parts: list[str] = []
    depth, quote, cur = 0, "", ""
    for ch in xpath[1:]:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "/" and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    steps = []
    for i, part in enumerate(parts):
        m = _STEP.match(part)
        if m is None:
            raise ValueError(f"xpath {xpath!r}: step {part!r} is not a child element by name (no //, .., "
                             "axes, wildcards or functions outside [predicates])")
        if m["attr"] and (i != len(parts) - 1 or m["preds"]):
            raise ValueError(f"xpath {xpath!r}: an attribute (@{m['name']}) can only be the last step")
        prefix = m["name"].partition(":")[0] if ":" in m["name"] else None
        if prefix is not None and prefix not in NAMESPACES:
            raise ValueError(f"xpath {xpath!r}: unknown prefix {prefix!r} (known: {', '.join(NAMESPACES)})")
        steps.append(Step(m["name"], m["preds"], bool(m["attr"])))
    return steps


def plain_path(steps: list[Step]) -> str:
    """The path without predicates: what the check against owned XML compares."""
    return "".join(f"/{'@' if s.attribute else ''}{s.name}" for s in steps)


def parse_fragment(xml: str) -> etree._Element:
    """The one element an ``add`` appends; ValueError if it is not exactly one well-formed element."""
    if "<!doctype" in xml.lower():
        raise ValueError("xml may not carry a DOCTYPE")  # no entities: one plain element
    try:
        return etree.fromstring(xml.strip().encode(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"xml is not one well-formed element: {exc}") from None


class XmlPatch(SpecModel):
    """One edit of the definition virtsync writes, applied after the declared fields on every write;
    one the definition does not satisfy is drift. Refused at validation: a patch on XML a field owns
    in this spec (the error names the field) — a field owns its XML when the spec declares it or
    virtsync writes it by default (memory, vcpus, firmware, a network's mode…), and the keyed
    device lists (disks, interfaces) always; one left out with no default (onCrash, cpu, boot…)
    leaves its XML to patches — and a patched definition libvirt's schema rejects."""

    op: Literal["set", "add", "remove"] = Field(
        description="set: the text of the element (or the attribute, for an xpath ending in /@name) "
        "becomes value, made if missing; add: xml is appended as a child of each element the xpath "
        "selects (made if missing), unless one that matches it is there already; remove: every element "
        "or attribute the xpath selects goes.")
    xpath: str = Field(min_length=2, description="Absolute path from the document's root element, e.g. "
                       "/domain/on_crash: child steps by name with optional [predicates], the last one "
                       "optionally an attribute (/@name); set and add make missing steps, so their "
                       "predicates may only be attribute tests [@name='value']. Prefixes: qemu:, dnsmasq:.")
    value: str | None = Field(default=None, description="For set: the text or attribute value.")
    xml: str | None = Field(default=None, description="For add: exactly one XML element.")

    @model_validator(mode="after")
    def _operands(self) -> Self:
        if self.op == "set" and self.value is None:
            raise FieldError("value", "an xmlPatch 'set' needs 'value'")
        if self.op == "add" and self.xml is None:
            raise FieldError("xml", "an xmlPatch 'add' needs 'xml' (one element)")
        if self.op != "set" and self.value is not None:
            raise FieldError("value", f"'value' is for op set, not {self.op}")
        if self.op != "add" and self.xml is not None:
            raise FieldError("xml", f"'xml' is for op add, not {self.op}")
        try:
            steps = split_steps(self.xpath)
            etree.XPath(self.xpath, namespaces=NAMESPACES)
        except ValueError as exc:
            raise FieldError("xpath", str(exc)) from None
        except etree.XPathSyntaxError as exc:
            raise FieldError("xpath", f"xpath {self.xpath!r} does not compile: {exc}") from None
        if len(steps) < 2 and self.op != "add":
            raise FieldError("xpath", f"xpath {self.xpath!r} names the root element itself: patch below it")
        if self.op == "add" and steps[-1].attribute:
            raise FieldError("xpath", "an xmlPatch 'add' selects the element to append to, not an attribute "
                             "(use set for an attribute)")
        if self.op in ("set", "add"):
            bad = next((s for s in steps if s.made_with() is None), None)
            if bad is not None:
                raise FieldError("xpath", f"xpath {self.xpath!r}: {self.op} makes missing elements, so its "
                                 f"predicates may only be attribute tests [@name='value'], not {bad.predicates}")
        if self.xml is not None:
            try:
                parse_fragment(self.xml)
            except ValueError as exc:
                raise FieldError("xml", str(exc)) from None
        return self

    @property
    def steps(self) -> list[Step]:
        return split_steps(self.xpath)

    @property
    def root(self) -> str:
        return self.steps[0].name

    def describe(self) -> str:
        """For plans and drift: the patch in one line."""
        if self.op == "set":
            return f"set {self.xpath} = {self.value}"
        return f"{self.op} {self.xpath}"
