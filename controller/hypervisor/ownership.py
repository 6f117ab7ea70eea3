"""The ownership element virtsync writes into an object's libvirt <metadata>.

    <vs:owner xmlns:vs="https://virtsync.dev/xmlns/owner/v1" instance="homelab"
              kind="Guest" name="web1" digest="sha256:…" commit="3f2a…">
      <vs:applied>{"memory": "2GiB", …}</vs:applied>     last-applied spec fields (JSON)
      <vs:volume>images/web1-root.qcow2</vs:volume>     volumes the guest's spec made
    </vs:owner>

Versioned by its namespace. Storage pools have no <metadata>: their record is
an empty marker volume inside the pool (see MARKER_PREFIX).
"""

from __future__ import annotations

import json
from typing import Any

from lxml import etree

from controller.model.state import Owner

NAMESPACE = "https://virtsync.dev/xmlns/owner/v1"
PREFIX = "vs"
MARKER_PREFIX = ".virtsync-owner-"  # + instance: a pool's ownership marker volume


def owner_element(owner: Owner) -> etree._Element:
    el = etree.Element(f"{{{NAMESPACE}}}owner", nsmap={PREFIX: NAMESPACE})
    el.set("instance", owner.instance)
    el.set("kind", owner.kind)
    el.set("name", owner.name)
    el.set("digest", owner.digest)
    if owner.commit:
        el.set("commit", owner.commit)
    applied = etree.SubElement(el, f"{{{NAMESPACE}}}applied")
    applied.text = json.dumps(owner.applied, sort_keys=True, separators=(",", ":"))
    for vol in owner.volumes:
        etree.SubElement(el, f"{{{NAMESPACE}}}volume").text = vol
    return el


def owner_xml(owner: Owner) -> str:
    return etree.tostring(owner_element(owner), encoding="unicode")


def parse_owner(el: etree._Element | None) -> Owner | None:
    if el is None:
        return None
    applied_el = el.find(f"{{{NAMESPACE}}}applied")
    applied: dict[str, Any] = {}
    if applied_el is not None and applied_el.text:
        try:
            loaded = json.loads(applied_el.text)
            applied = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            applied = {}
    return Owner(
        instance=el.get("instance", ""),
        kind=el.get("kind", ""),
        name=el.get("name", ""),
        digest=el.get("digest", ""),
        commit=el.get("commit", ""),
        applied=applied,
        volumes=tuple(v.text or "" for v in el.findall(f"{{{NAMESPACE}}}volume")),
    )


# Fallback for drivers that drop <metadata> on define: the same element, serialised into the
# domain's <description> (which libvirt's drivers keep). It survives restarts like metadata does.
DESCRIPTION_PREFIX = "virtsync-owner:"


def find_owner(root: etree._Element) -> Owner | None:
    """The ownership record inside an object's XML (metadata, else the description fallback)."""
    owner = parse_owner(root.find(f"metadata/{{{NAMESPACE}}}owner"))
    if owner is not None:
        return owner
    text = root.findtext("description") or ""
    if text.startswith(DESCRIPTION_PREFIX):
        try:
            return parse_owner(etree.fromstring(text[len(DESCRIPTION_PREFIX):].encode()))
        except etree.XMLSyntaxError:
            return None
    return None


def owner_into_description(root: etree._Element, owner: Owner) -> None:
    """Record ownership in <description> (for drivers without <metadata>), in place."""
    desc = root.find("description")
    if desc is None:
        desc = etree.Element("description")
        anchor = root.find("uuid") if root.find("uuid") is not None else root.find("name")
        if anchor is not None:
            anchor.addnext(desc)
        else:
            root.insert(0, desc)
    desc.text = DESCRIPTION_PREFIX + owner_xml(owner)


def set_owner(root: etree._Element, owner: Owner) -> None:
    """Put (or replace) the ownership element in ``root``'s <metadata>, in place."""
    meta = root.find("metadata")
    if meta is None:
        meta = etree.Element("metadata")
        # libvirt wants <metadata> early; right after name/uuid/title/description.
        anchor = None
        for tag in ("description", "title", "uuid", "name"):
            anchor = root.find(tag)
            if anchor is not None:
                break
        if anchor is not None:
            anchor.addnext(meta)
        else:
            root.insert(0, meta)
    old = meta.find(f"{{{NAMESPACE}}}owner")
    if old is not None:
        meta.remove(old)
    meta.append(owner_element(owner))


def marker_volume(instance: str) -> str:
    return f"{MARKER_PREFIX}{instance}"
