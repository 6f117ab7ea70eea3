"""libvirt secret objects: observed, defined with their value, deleted.

virtsync's secrets are private (libvirt never hands their value back) and persistent; its
ownership line lives in the secret's <description>, with a digest of the value it set, so a
changed value is seen without reading it.
"""

from __future__ import annotations

import re

import libvirt

from controller.fields.xmlutil import parse
from controller.hypervisor.errors import libvirt_call
from controller.model.state import ObservedSecret
from controller.spec.secrets import usage_key

_OWNER = re.compile(r"virtsync:owner instance=(\S+) name=(\S+) digest=(\S+)")
_USAGE_ELEMENT = {"volume": "volume", "ceph": "name", "iscsi": "target", "tls": "name", "vtpm": "name"}


def escape(text: str) -> str:
    """XML text escape (xml.sax.saxutils' would pull urllib and http into every observe)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def observe_secrets(conn: libvirt.virConnect, host: str) -> dict[str, ObservedSecret] | None:
    """Secrets by usage; None when the driver has none (the test driver)."""
    try:
        found = conn.listAllSecrets(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return None
        raise
    out: dict[str, ObservedSecret] = {}
    with libvirt_call(host, "read secrets"):
        for sec in found:
            root = parse(sec.XMLDesc(0))
            usage = root.find("usage")
            kind = usage.get("type", "") if usage is not None else ""
            ident = (usage.findtext(_USAGE_ELEMENT.get(kind, "name")) or "") if usage is not None else ""
            m = _OWNER.search(root.findtext("description") or "")
            out[usage_key(kind, ident)] = ObservedSecret(
                sec.UUIDString(), kind, ident, m.group(1) if m else None, m.group(2) if m else None,
                m.group(3) if m else None)
    return out


def secret_xml(uuid: str, usage: str, usage_id: str, instance: str, name: str, digest: str) -> str:
    tag = _USAGE_ELEMENT[usage]
    return (f"<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid>"
            f"<description>virtsync:owner instance={escape(instance)} name={escape(name)} "
            f"digest={digest}</description>"
            f"<usage type='{usage}'><{tag}>{escape(usage_id)}</{tag}></usage></secret>")


def define_secret(conn: libvirt.virConnect, host: str, xml: str, value: str) -> None:
    with libvirt_call(host, "define secret"):
        conn.secretDefineXML(xml, 0).setValue(value.encode(), 0)


def delete_secret(conn: libvirt.virConnect, host: str, uuid: str) -> None:
    with libvirt_call(host, "delete secret"):
        conn.secretLookupByUUIDString(uuid).undefine()
