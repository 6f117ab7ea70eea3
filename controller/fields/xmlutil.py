"""Small lxml helpers shared by the XML ⇄ model modules."""

from __future__ import annotations

from lxml import etree

_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)

_UNITS = {
    "b": 1, "bytes": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}


def parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode(), _PARSER)


def tostring(el: etree._Element) -> str:
    return etree.tostring(el, pretty_print=True, encoding="unicode")


def to_bytes(el: etree._Element | None, default_unit: str = "KiB") -> int | None:
    """A libvirt scaled integer (``<memory unit='KiB'>``) in bytes."""
    if el is None or el.text is None:
        return None
    unit = (el.get("unit") or default_unit).lower()
    return int(el.text.strip()) * _UNITS.get(unit, 1024)


def child(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    """The first child ``tag``, made if missing; attributes set as given."""
    el = parent.find(tag)
    if el is None:
        el = etree.SubElement(parent, tag)
    for k, v in attrs.items():
        el.set(k, v)
    return el


def set_text(parent: etree._Element, tag: str, text: str, **attrs: str) -> etree._Element:
    el = child(parent, tag, **attrs)
    el.text = text
    return el


def remove(el: etree._Element | None) -> None:
    parent = el.getparent() if el is not None else None
    if el is not None and parent is not None:
        parent.remove(el)


def insert_after(root: etree._Element, tag: str, after: tuple[str, ...]) -> etree._Element:
    """A new ``tag`` child of ``root``, right after the first of ``after`` there is (libvirt's
    element order), else at the end."""
    el = etree.Element(tag)
    for a in after:
        anchor = root.find(a)
        if anchor is not None:
            anchor.addnext(el)
            return el
    root.append(el)
    return el
