"""A Host's tls files (client certificates for qemu+tls://): resolved relative to the spec file
when the specs load, like cloud-init files (spec/references.py), and checked to be readable.

Only the paths are kept: the files are read by libvirt when it connects, never by virtsync,
so no certificate or key content reaches plans, reports or logs.
"""

from __future__ import annotations

import os
from pathlib import Path

from controller.errors import Diagnostic
from controller.spec.models import Host, HostTls
from controller.spec.specset import Located

_FIELDS = (("ca_file", "caFile"), ("cert_file", "certFile"), ("key_file", "keyFile"))


def resolve_tls(item: Located) -> tuple[Located, list[Diagnostic]]:
    """``item`` with its Host's tls paths made absolute; a missing or unreadable file is a
    problem at its field."""
    host = item.obj
    if not isinstance(host, Host) or host.spec.tls is None:
        return item, []
    base = Path(item.file).resolve().parent
    tls = host.spec.tls
    problems: list[Diagnostic] = []
    paths: dict[str, str] = {}
    for attr, field in _FIELDS:
        text = getattr(tls, attr)
        path = (base / Path(text).expanduser()).resolve()
        paths[attr] = str(path)
        why = None
        if not path.exists():
            why = "no such file"
        elif not path.is_file():
            why = "not a regular file"
        elif not os.access(path, os.R_OK):
            why = "not readable"
        if why is not None:
            line, col = item.where("spec", "tls", field)
            problems.append(Diagnostic(item.file, line, col,
                                       f"host {host.metadata.name}: tls {field} {text}: {why}"))
    if problems:
        return item, problems
    spec = host.spec.model_copy(update={"tls": HostTls(**paths)})
    return Located(host.model_copy(update={"spec": spec}), item.file, item.doc), []
