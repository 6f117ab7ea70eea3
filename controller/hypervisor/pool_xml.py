"""Storage pool and volume XML."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import libvirt
from lxml import etree

from controller.fields.patches import apply_patches
from controller.fields.xmlutil import parse, tostring
from controller.spec.models import StoragePoolSpec
from controller.spec.patches import XmlPatch
from controller.spec.pool_sources import PoolSource
from controller.spec.secrets import libvirt_secret_uuid


def read_pool(xml: str) -> tuple[str, str, str, str | None]:
    """(name, uuid, type, target path)."""
    root = parse(xml)
    return (root.findtext("name") or "", root.findtext("uuid") or "", root.get("type", ""),
            root.findtext("target/path"))


# What <source><device path> means, by pool type: the device, the iSCSI target, or the devices.
_DEVICE_IS = {"fs": "device", "disk": "device", "iscsi": "target", "iscsi-direct": "target",
              "logical": "devices", "zfs": "devices"}


def read_source(xml: str) -> dict[str, Any]:
    """A pool's <source> in the spec's spelling (spec.source): what export writes and the plan
    compares. An auth's secret is its UUID (``secretUuid``) or usage (``secretUsage``)."""
    root = parse(xml)
    src = root.find("source")
    ptype = root.get("type", "")
    out: dict[str, Any] = {}
    if src is None:
        return out
    devices = [d.get("path", "") for d in src.iterfind("device")]
    role = _DEVICE_IS.get(ptype)
    if devices and role == "devices":
        out["devices"] = devices
    elif devices and role is not None:
        out[role] = devices[0]
    fmt = src.find("format")
    if fmt is not None and fmt.get("type"):
        out["format"] = fmt.get("type")
    hosts = list(src.iterfind("host"))
    if ptype == "rbd":
        out["monitors"] = [{"host": h.get("name", ""), **({"port": int(h.get("port", ""))} if h.get("port") else {})}
                           for h in hosts]
    elif hosts:
        out["host"] = hosts[0].get("name", "")
        if hosts[0].get("port"):
            out["port"] = int(hosts[0].get("port", ""))
    for tag, key in (("dir", "dir"),):
        el = src.find(tag)
        if el is not None and el.get("path"):
            out[key] = el.get("path")
    if src.findtext("name"):
        out["name"] = src.findtext("name")
    iqn = src.find("initiator/iqn")
    if iqn is not None and iqn.get("name"):
        out["initiator"] = iqn.get("name")
    auth = src.find("auth")
    if auth is not None:
        secret = auth.find("secret")
        entry: dict[str, Any] = {"username": auth.get("username", "")}
        if secret is not None and secret.get("uuid"):
            entry["secretUuid"] = secret.get("uuid")
        elif secret is not None and secret.get("usage"):
            entry["secretUsage"] = secret.get("usage")
        out["auth"] = entry
    return out


def pool_definition(pool: Any) -> str:
    """A pool's persistent definition (drivers without the inactive flag, like test, have only one)."""
    try:
        return str(pool.XMLDesc(libvirt.VIR_STORAGE_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        return str(pool.XMLDesc(0))


def pool_xml(name: str, spec: StoragePoolSpec, base: str | None = None, uuid: str | None = None,
             patches: Sequence[XmlPatch] | None = None) -> str:
    """A pool definition: ``base`` (an existing definition) with the spec's fields written into
    it, or, without ``base``, a new pool (with ``uuid``, if given) and its <source>. ``patches``:
    instead of the spec's xmlPatches (validate tries them one by one)."""
    root = parse(base if base is not None else "<pool><name/></pool>")
    if base is None and uuid is not None:
        etree.SubElement(root, "uuid").text = uuid
    if base is None and spec.source is not None:
        root.append(source_xml(spec.type, spec.source))
    edit_pool(root, name, spec, patches)
    return tostring(root)


def source_xml(pool_type: str, source: PoolSource) -> etree._Element:
    """<source> of a new pool of ``pool_type``, in the order libvirt's storagepool schema takes."""
    src = etree.Element("source")
    if pool_type == "rbd":
        etree.SubElement(src, "name").text = source.name
        for m in source.monitors:
            host = etree.SubElement(src, "host", name=m.host)
            if m.port is not None:
                host.set("port", str(m.port))
    elif source.host is not None:
        host = etree.SubElement(src, "host", name=source.host)
        if source.port is not None:
            host.set("port", str(source.port))
    if source.dir is not None:
        etree.SubElement(src, "dir", path=source.dir)
    for dev in [source.device or source.target] if (source.device or source.target) else source.devices:
        etree.SubElement(src, "device", path=dev or "")
    if source.name is not None and pool_type != "rbd":
        etree.SubElement(src, "name").text = source.name
    if source.format is not None:
        etree.SubElement(src, "format", type=source.format)
    elif pool_type == "logical":
        etree.SubElement(src, "format", type="lvm2")
    if source.initiator is not None:
        etree.SubElement(etree.SubElement(src, "initiator"), "iqn", name=source.initiator)
    if source.auth is not None:
        auth = etree.SubElement(src, "auth", type="ceph" if pool_type == "rbd" else "chap",
                                username=source.auth.username)
        etree.SubElement(auth, "secret", uuid=libvirt_secret_uuid(source.auth.secret_ref))
    return src


def default_target(spec: StoragePoolSpec) -> str | None:
    """The target path libvirt's schema needs where the spec gives none: libvirt's own defaults."""
    name = spec.source.name if spec.source is not None else None
    return {"logical": f"/dev/{name}", "iscsi": "/dev/disk/by-path", "disk": "/dev"}.get(spec.type)


def edit_pool(root: etree._Element, name: str, spec: StoragePoolSpec,
              patches: Sequence[XmlPatch] | None = None) -> None:
    """Write name, type and target path into a pool XML tree, in place: everything else (its
    UUID, <source>, the target's <permissions>…) stays as it is. The spec's xmlPatches come
    last, on every write."""
    root.set("type", spec.type)
    name_el = root.find("name")
    if name_el is None:
        name_el = etree.Element("name")
        root.insert(0, name_el)
    name_el.text = name
    path = spec.path or default_target(spec)
    if path is not None:
        target = root.find("target")
        if target is None:
            target = etree.SubElement(root, "target")
        path_el = target.find("path")
        if path_el is None:
            path_el = etree.Element("path")
            target.insert(0, path_el)
        path_el.text = path
    apply_patches(root, spec.xml_patches if patches is None else patches)


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


def encrypted_volume_xml(name: str, capacity: int, fmt: str, secret_uuid: str) -> str:
    """A new LUKS volume: qcow2 with encrypt.format luks inside, or raw as a LUKS container (libvirt
    runs qemu-img with the passphrase of libvirt secret ``secret_uuid``)."""
    root = parse(volume_xml(name, capacity, fmt))
    target = root.find("target")
    assert target is not None
    enc = etree.SubElement(target, "encryption", format="luks")
    etree.SubElement(enc, "secret", type="passphrase", uuid=secret_uuid)
    return tostring(root)


def volume_encryption(xml: str) -> tuple[str, str | None] | None:
    """(format, secret UUID) of an encrypted volume's <encryption>, or None."""
    enc = parse(xml).find("target/encryption")
    if enc is None:
        return None
    secret = enc.find("secret")
    return enc.get("format", ""), secret.get("uuid") if secret is not None else None
