"""Storage pool and volume XML."""

from __future__ import annotations

from lxml import etree

from controller.hypervisor.xmlutil import parse, tostring


def read_pool(xml: str) -> tuple[str, str, str, str | None]:
    """(name, uuid, type, target path)."""
    root = parse(xml)
    return (root.findtext("name") or "", root.findtext("uuid") or "", root.get("type", ""),
            root.findtext("target/path"))


def pool_xml(name: str, path: str) -> str:
    root = etree.Element("pool", type="dir")
    etree.SubElement(root, "name").text = name
    target = etree.SubElement(root, "target")
    etree.SubElement(target, "path").text = path
    return tostring(root)


def volume_xml(name: str, capacity: int, fmt: str | None,
               backing: tuple[str, str] | None = None) -> str:
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    if fmt:
        target = etree.SubElement(root, "target")
        etree.SubElement(target, "format", type=fmt)
    if backing is not None:
        bs = etree.SubElement(root, "backingStore")
        etree.SubElement(bs, "path").text = backing[0]
        etree.SubElement(bs, "format", type=backing[1])
    return tostring(root)


def volume_format(xml: str) -> str | None:
    fmt = parse(xml).find("target/format")
    return fmt.get("type") if fmt is not None else None
