"""The placement lock: guests with a hostSelector get their host from placement.lock.yaml.

`virtsync place` writes it; it is committed next to the specs, so every run and
every agent sees the same placement.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from ruamel.yaml import YAML

from controller.errors import Diagnostic
from controller.spec.models import Guest
from controller.spec.specset import Located

LOCK_NAME = "placement.lock.yaml"


def lock_path(paths: Sequence[str | Path]) -> Path | None:
    """The lock of a spec tree: in the first directory given (or beside the first file)."""
    if not paths:
        return None
    first = Path(paths[0])
    return (first if first.is_dir() else first.parent) / LOCK_NAME


def read_lock(path: Path | None) -> tuple[dict[str, str], list[Diagnostic]]:
    if path is None or not path.is_file():
        return {}, []
    try:
        data = YAML(typ="safe", pure=True).load(path.read_text())
    except Exception as exc:  # ruamel raises many types; any of them means "not a lock file"
        return {}, [Diagnostic(str(path), 1, 1, f"not a placement lock: {exc}")]
    placements = data.get("placements") if isinstance(data, dict) else None
    if not isinstance(placements, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in placements.items()):
        return {}, [Diagnostic(str(path), 1, 1, "a placement lock needs 'placements: {guest: host}'")]
    return dict(placements), []


def write_lock(path: Path, placements: dict[str, str]) -> None:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buf = io.StringIO()
    buf.write("# Written by `virtsync place`: which host each guest with a hostSelector runs on.\n"
              "# Commit it with the specs; edit it by hand only to move a guest on purpose.\n")
    yaml.dump({"apiVersion": "virtsync/v1", "kind": "PlacementLock", "placements": dict(sorted(placements.items()))},
              buf)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)


def apply_lock(items: list[Located], placements: dict[str, str], required: bool) -> tuple[list[Located],
                                                                                         list[Diagnostic]]:
    """Guests with a hostSelector and no host get the locked host; unplaced ones are errors if required."""
    out: list[Located] = []
    problems: list[Diagnostic] = []
    for item in items:
        g = item.obj
        if isinstance(g, Guest) and g.spec.host is None and g.spec.host_selector is not None:
            host = placements.get(g.metadata.name)
            if host is not None:
                spec = g.spec.model_copy(update={"host": host})
                item = Located(g.model_copy(update={"spec": spec}), item.file, item.doc)
            elif required:
                line, col = item.where("spec", "hostSelector")
                problems.append(Diagnostic(item.file, line, col, f"guest {g.metadata.name!r} has no host yet: "
                                           "run `virtsync place` to choose one (it writes " + LOCK_NAME + ")"))
        out.append(item)
    return out, problems
