"""cloud-init content: *File fields read relative to the spec file, and ${env:NAME} /
${file:PATH} / ${secret:NAME} references replaced, when the specs load (${secret:…} with the
value of kind: Secret NAME, so the Secrets are resolved first).

The resolved text lives only in memory: ownership records, plans, reports and
logs carry its digest (see plan/context.applied_fields).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from controller.errors import Diagnostic
from controller.spec.models import CloudInit, Guest
from controller.spec.specset import Located

_REF = re.compile(r"\$\{(env|file|secret):([^}]+)\}")
_FIELDS = ("user_data", "meta_data", "network_config")
MAX_BYTES = 1 << 20  # a NoCloud seed is small; a bigger file is a mistake


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def referenced_files(item: Located) -> set[str]:
    """Files a guest's cloudInit names (they are cloud-init, not specs, even as *.yaml)."""
    guest = item.obj
    if not isinstance(guest, Guest) or guest.spec.cloud_init is None:
        return set()
    base = Path(item.file).resolve().parent
    ci = guest.spec.cloud_init
    names = [getattr(ci, f + "_file") for f in _FIELDS]
    return {str((base / n).resolve()) for n in names if n}


def resolve_cloud_init(item: Located, env: Mapping[str, str] | None = None,
                       secrets: Mapping[str, str | None] | None = None) -> tuple[Located, list[Diagnostic]]:
    """``secrets``: each declared Secret's value by name (None: it failed to load, which is
    reported at the Secret); a ${secret:NAME} of no declared Secret is a problem here."""
    guest = item.obj
    if not isinstance(guest, Guest) or guest.spec.cloud_init is None:
        return item, []
    env = os.environ if env is None else env
    secrets = {} if secrets is None else secrets
    base = Path(item.file).resolve().parent
    ci = guest.spec.cloud_init
    problems: list[Diagnostic] = []
    values: dict[str, str | None] = {}

    def fail(field: str, message: str) -> None:
        line, col = item.where("spec", "cloudInit", field)
        problems.append(Diagnostic(item.file, line, col, message))

    def read(path_text: str, field: str) -> str | None:
        path = (base / path_text).resolve()
        try:
            if path.stat().st_size > MAX_BYTES:
                fail(field, f"{path_text}: over {MAX_BYTES} bytes")
                return None
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(field, f"cannot read {path_text}: {getattr(exc, 'strerror', None) or exc}")
            return None

    for name in _FIELDS:
        text = getattr(ci, name)
        field = _camel(name)
        file_name = getattr(ci, name + "_file")
        if file_name is not None:
            text = read(file_name, field + "File")
            field = field + "File"
        if text is None:
            values[name] = None
            continue

        def substitute(m: re.Match[str], field: str = field) -> str:
            kind, ref = m.group(1), m.group(2).strip()
            if kind == "env":
                if ref not in env:
                    fail(field, f"${{env:{ref}}}: the environment has no {ref}")
                    return ""
                return env[ref]
            if kind == "secret":
                if ref not in secrets:
                    fail(field, f"${{secret:{ref}}}: no kind: Secret named {ref!r} in the specs")
                return secrets.get(ref) or ""
            return read(ref, field) or ""

        values[name] = _REF.sub(substitute, text)
    if problems:
        return item, problems
    resolved = CloudInit(user_data=values["user_data"], meta_data=values["meta_data"],
                         network_config=values["network_config"])
    spec = guest.spec.model_copy(update={"cloud_init": resolved})
    return Located(guest.model_copy(update={"spec": spec}), item.file, item.doc), []
