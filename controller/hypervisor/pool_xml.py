"""Storage pool and volume XML."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import libvirt
from lxml import etree

from controller.fields.patches import apply_patches
from controller.fields.xmlutil import parse, tostring
from controller.spec.patches import XmlPatch


def read_pool(xml: str) -> tuple[str, str, str, str | None]:
    """(name, uuid, type, target path)."""
    root = parse(xml)
    return (root.findtext("name") or "", root.findtext("uuid") or "", root.get("type", ""),
            root.findtext("target/path"))


def pool_definition(pool: Any) -> str:
    """A pool's persistent definition (drivers without the inactive flag, like test, have only one)."""
    try:
        return str(pool.XMLDesc(libvirt.VIR_STORAGE_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        return str(pool.XMLDesc(0))


POOL_SKELETON = "<pool type='dir'><name/><target><path/></target></pool>"


def pool_xml(name: str, path: str, base: str | None = None, pool_type: str = "dir",
             patches: Sequence[XmlPatch] = (), uuid: str | None = None) -> str:
    """A pool definition: ``base`` (an existing definition) with the spec's fields written into
    it, or, without ``base``, a new pool (with ``uuid``, if given)."""
    root = parse(base if base is not None else POOL_SKELETON)
    if base is None and uuid is not None:
        etree.SubElement(root, "uuid").text = uuid
    edit_pool(root, name, path, pool_type, patches)
    return tostring(root)


def edit_pool(root: etree._Element, name: str, path: str, pool_type: str = "dir",
              patches: Sequence[XmlPatch] = ()) -> None:
    """Write name, type and target path into a pool XML tree, in place: everything else (its
    UUID, <source>, the target's <permissions>…) stays as it is. The spec's xmlPatches come
    last, on every write."""
    root.set("type", pool_type)
    name_el = root.find("name")
    if name_el is None:
        name_el = etree.Element("name")
        root.insert(0, name_el)
    name_el.text = name
    target = root.find("target")
    if target is None:
        target = etree.SubElement(root, "target")
    path_el = target.find("path")
    if path_el is None:
        path_el = etree.Element("path")
        target.insert(0, path_el)
    path_el.text = path
    apply_patches(root, patches)


def volume_xml(name: str, capacity: int, fmt: str | None,
               backing: tuple[str, str] | None = None) -> str:
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    if fmt:
        target = etree.SubElement(root, "target")
        etree.SubElement(target, "format", type=fmt)
        if fmt == "qcow2":
            # qcow2 v3: libvirt 9.0 otherwise makes v2 files, which cannot carry the dirty
            # bitmaps incremental backups need (and lack lazy refcounts, zero clusters).
            etree.SubElement(target, "compat").text = "1.1"
    if backing is not None:
        bs = etree.SubElement(root, "backingStore")
        etree.SubElement(bs, "path").text = backing[0]
        etree.SubElement(bs, "format", type=backing[1])
    return tostring(root)


def volume_format(xml: str) -> str | None:
    fmt = parse(xml).find("target/format")
    return fmt.get("type") if fmt is not None else None
