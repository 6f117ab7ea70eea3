"""docs/fields.md, written from the registry: every field of every kind, its impact, how it lands."""

from __future__ import annotations

from typing import Any

from controller.fields import guest, network, pool, volume
from controller.fields.base import Field
from controller.fields.devices import DISK_CONTROL, DISK_FIELDS, NIC_CONTROL, NIC_FIELDS
from controller.fields.guest import GUEST_FIELDS
from controller.fields.network import NETWORK_FIELDS
from controller.fields.pool import POOL_FIELDS, VOLUME_FIELDS
from controller.fields.volume import VOLUME_OBJECT_FIELDS

IMPACT_WORDS = {"live": "live", "next-boot": "next boot", "recreate": "recreate", "create": "at creation",
                "delete": "delete"}

# (title, pointer prefix shown, fields)
TABLES: tuple[tuple[str, tuple[Field[Any], ...], dict[str, str], str], ...] = (
    ("Guest", GUEST_FIELDS, guest.CONTROL, "/spec/"),
    ("Guest disks (`spec.disks[]`, keyed by name)", DISK_FIELDS, DISK_CONTROL, "/spec/disks/N/"),
    ("Guest NICs (`spec.interfaces[]`, keyed by MAC, else network and position)", NIC_FIELDS, NIC_CONTROL,
     "/spec/interfaces/N/"),
    ("Network", NETWORK_FIELDS, network.CONTROL, "/spec/"),
    ("StoragePool", POOL_FIELDS, pool.CONTROL, "/spec/"),
    ("Volume (a guest disk's volume in a pool)", VOLUME_FIELDS, {}, ""),
    ("Volume (`kind: Volume`)", VOLUME_OBJECT_FIELDS, volume.CONTROL, "/spec/"),
)

HEADER = """# Fields and how a change lands

Generated from the field registry (`controller/fields/`) by `virtsync schema`; a test keeps it
current. Impacts: **live** — applied to the running object and its definition; **next boot** —
written to the definition (a running guest then shows *pending restart*, a status, unless its
`restartPolicy` allows a restart); **recreate** — undefined and defined again under the same UUID
(volumes and NVRAM kept, XML virtsync does not model kept); **at creation** — set when the object
is made. Only declared fields are compared. Where the impact depends on the case (*depends*), the
"how" column says on what. The "libvirt call" column names the call that makes a change live on a
running object (plans name it per change, `[live: …]`), or why the change waits for the next boot
(`[next boot: …]` in plans).
"""


def _impact(f: Field[Any]) -> str:
    word = IMPACT_WORDS[str(f.impact)]
    return f"{word} (depends)" if f.impact_of is not None else word


def _call(f: Field[Any], boots: bool) -> str:
    """The live calls a field names, and (when it may wait) why: for the next boot of a guest
    (``boots``), or for a new definition (every kind)."""
    calls = ", ".join(f"`{c}`" for c in f.calls)
    if f.impact == "recreate":
        waits = f"recreate: {f.next_boot_why}"
    elif boots and (f.impact != "live" or f.impact_of is not None):
        waits = f"next boot: {f.next_boot_why}"
    else:  # a network's or pool's "live (depends)": the how column says when it is not
        waits = ""
    if f.impact in ("create", "delete") or (not calls and f.impact == "live"):
        waits = ""
    return "; ".join(p for p in (calls, waits) if p).replace("|", "/") or "—"


def _pointer(f: Field[Any]) -> str:
    return f.path.replace("{i}", "N")


def render_fields_md() -> str:
    out = [HEADER]
    for title, fields, control, prefix in TABLES:
        out += [f"## {title}", "", "| Field | Impact | libvirt call | How a change lands |", "|---|---|---|---|"]
        boots = title.startswith("Guest")
        for f in fields:
            how = f.how + (f" (planned by its own step: {f.planned_by})" if f.planned_by else "")
            out.append(f"| `{_pointer(f)}` | {_impact(f)} | {_call(f, boots)} | {how.replace('|', '/')} |")
        for name, what in control.items():
            steers = f"{what.replace('|', '/')} (steers virtsync; nothing on the host)"
            out.append(f"| `{prefix}{name}` | — | — | {steers} |")
        out.append("")
    return "\n".join(out)


def lands(kind: str) -> dict[str, str]:
    """Field name → "Impact: how", for schema descriptions of one kind's spec."""
    by_kind: dict[str, tuple[Field[Any], ...]] = {"Guest": GUEST_FIELDS, "Network": NETWORK_FIELDS,
                                                  "StoragePool": POOL_FIELDS}
    fields = by_kind[kind]
    return {f.name: f"{_impact(f)}: {f.how}" for f in fields}


def render_readme_lands() -> str:
    """The README's "How a change lands" paragraph: the fields of each impact, per kind."""
    groups: dict[str, list[str]] = {"live": [], "next-boot": [], "recreate": []}
    for title, fields, _control, _prefix in TABLES[:5]:
        kind = title.split(" (")[0]
        for f in fields:
            impact = str(f.impact)
            if impact not in groups or f.planned_by in ("status", "migration", "refused", "creation"):
                continue
            label = f"`{_pointer(f).removeprefix('/spec/')}`"
            if f.impact_of is not None:
                label += " (within its limits: see docs/fields.md)"
            groups[impact].append(f"{kind} {label}")
    return (
        "**How a change lands.** Each field is declared once in the field registry "
        "(`controller/fields/`), which says how a change of it reaches the host; "
        "[docs/fields.md](docs/fields.md) lists every field with the details. "
        "**live** (applied to the running object and its definition): " + ", ".join(groups["live"]) + ". "
        "**next boot** (written to the definition: a running guest then shows **pending restart**, a "
        "status rather than a change, unless `restartPolicy` allows a restart): "
        + ", ".join(groups["next-boot"]) + ". "
        "**recreate** (undefined and defined again under the same UUID, edited in place so XML virtsync "
        "does not model survives; volumes and NVRAM kept; a running guest waits for its restart policy): "
        + ", ".join(groups["recreate"]) + ". A pool is never moved: a changed `path` is refused.\n"
    )
