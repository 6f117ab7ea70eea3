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


def find_owner(root: etree._Element) -> Owner | None:
    """The ownership record inside an object's XML, if any."""
    return parse_owner(root.find(f"metadata/{{{NAMESPACE}}}owner"))


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
