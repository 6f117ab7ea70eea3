"""Plans for people (terraform-like text, Markdown for pull requests) and machines (JSON)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from controller.model.state import ResourceKey
from controller.plan.actions import Action, CreateVolume, FieldChange, HostPlan, Impact, Plan

# plan --diff: per (object, op) of an action that defines XML, the unified diff of that XML
# (built by controller/apply/definitions.py; rendered here, never computed).
Diffs = Mapping[tuple[ResourceKey, str], str]
_DIFF_COLOR = {"+": "32", "-": "31", "@": "36"}

PLAN_SCHEMA_VERSION = 1
_SYMBOL = {Impact.CREATE: "+", Impact.DELETE: "-", Impact.RECREATE: "-/+"}
_COLOR = {"+": "32", "-": "31", "-/+": "35", "~": "33", "!": "31"}
_IMPACT_LABEL = {Impact.LIVE: "live", Impact.NEXT_BOOT: "next boot", Impact.RECREATE: "recreate",
                 Impact.CREATE: "create", Impact.DELETE: "delete"}


def symbol(action: Action) -> str:
    return _SYMBOL.get(action.impact, "~")


def _paint(text: str, sym: str, color: bool) -> str:
    return f"\x1b[{_COLOR.get(sym, '0')}m{text}\x1b[0m" if color else text


def _value(v: Any) -> str:
    """A field's shown value (the registry's ``show``) as text: one spelling for every field, in
    YAML's words (true, not Python's True; items as key=value, not a dict's repr)."""
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return " ".join(f"{k}={_nested(x)}" for k, x in v.items()) or "{}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


value_text = _value  # drift's report spells values the same way


def _nested(v: Any) -> str:
    return "{" + _value(v) + "}" if isinstance(v, dict) and v else _value(v)


def change_line(c: FieldChange) -> str:
    path = c.path.removeprefix("/spec/") or "/"
    note = f"  ({c.note})" if c.note else ""
    # how it lands, from the field registry: the libvirt call, or why it waits for a boot
    if c.call:
        note += f"  [live: {c.call}]"
    elif c.waits:
        note += f"  [next boot: {c.waits}]"
    if c.impact == Impact.CREATE and c.defined is None:
        return f"{path}: {_value(c.desired)}{note}"
    live = f" (running: {_value(c.live)})" if c.live is not None and c.live != c.defined else ""
    return f"{path}: {_value(c.defined)} → {_value(c.desired)}{live}{note}"


def summary(plan: Plan) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for a in plan.actions:
        if isinstance(a, CreateVolume):
            counts["volumes"] += 1
        elif a.impact == Impact.CREATE:
            counts["create"] += 1
        elif a.impact == Impact.DELETE:
            counts["delete"] += 1
        elif a.impact == Impact.RECREATE:
            counts["recreate"] += 1
        else:
            counts["change"] += 1
    return {
        "create": counts["create"],
        "change": counts["change"],
        "recreate": counts["recreate"],
        "delete": counts["delete"],
        "volumes": counts["volumes"],
        "pending": sum(len(h.pending) for h in plan.hosts),
        "errors": sum(len(h.errors) + (1 if h.error else 0) for h in plan.hosts),
    }


def _diff_lines(diff: str, color: bool) -> list[str]:
    out = []
    for line in diff.splitlines():
        code = _DIFF_COLOR.get(line[:1]) if color and not line.startswith(("+++", "---")) else None
        out.append("        " + (f"\x1b[{code}m{line}\x1b[0m" if code else line))
    return out


def render_text(plan: Plan, color: bool = False, diffs: Diffs | None = None) -> str:
    lines: list[str] = []
    for hp in plan.hosts:
        lines.append(f"Host {hp.host} ({hp.uri})")
        if hp.error:
            lines.append(_paint(f"  ! unreachable: {hp.error}", "!", color))
            lines.append("")
            continue
        for note in hp.notes:
            lines.append(f"  note: {note}")
        if not hp.actions:
            lines.append("  no changes")
        for a in hp.actions:
            sym = symbol(a)
            head = f"  {sym} {a.op} {a.key.kind} {a.key.name}"
            if a.impact not in (Impact.CREATE, Impact.DELETE):
                head += f" ({_IMPACT_LABEL[a.impact]})"
            lines.append(_paint(head, sym, color) + (f"  — {a.reason}" if a.reason else ""))
            for c in a.changes:
                if c.path != "/spec" or a.impact != Impact.CREATE:
                    lines.append(f"        {change_line(c)}")
            if diffs and diffs.get((a.key, a.op)):
                lines.extend(_diff_lines(diffs[(a.key, a.op)], color))
        for p in hp.problems:
            lines.append(_paint(f"  ! {p.severity}: {p.key.kind} {p.key.name}: {p.message}", "!", color))
        if hp.pending:
            lines.append("  pending (a status: defined, waits for a restart):")
            for pend in hp.pending:
                lines.append(f"    {pend.key.kind} {pend.key.name}: {pend.reason}")
                for c in pend.changes:
                    lines.append(f"        {change_line(c)}")
        if hp.unmanaged:
            names = ", ".join(f"{k.kind} {k.name}" for k in hp.unmanaged)
            lines.append(f"  unmanaged (left alone): {names}")
        lines.append("")
    s = summary(plan)
    if not plan.has_changes and s["errors"]:  # what an error stopped was not compared: no claim of a match
        tail = "No changes planned where virtsync could compare."
    elif not plan.has_changes:
        tail = "No changes. The hosts match the specs."
    else:
        tail = (f"Plan: {s['create']} to create, {s['change']} to change, {s['recreate']} to "
                f"recreate, {s['delete']} to delete ({s['volumes']} volumes to make).")
    if s["pending"]:
        tail += f" {s['pending']} pending restart(s)."
    if s["errors"]:
        tail += f" {s['errors']} error(s)."
    lines.append(tail)
    return "\n".join(lines) + "\n"


def render_markdown(plan: Plan, diffs: Diffs | None = None) -> str:
    s = summary(plan)
    out = ["## virtsync plan", ""]
    out.append(f"**{s['create']}** to create · **{s['change']}** to change · **{s['recreate']}** "
               f"to recreate · **{s['delete']}** to delete · {s['pending']} pending restart · "
               f"{s['errors']} errors")
    out.append("")
    for hp in plan.hosts:
        out.append(f"### Host `{hp.host}`")
        out.append("")
        if hp.error:
            out.append(f"> **unreachable:** {_md(hp.error)}")
            out.append("")
            continue
        if hp.actions:
            out.append("| | Object | Action | Impact | Changes |")
            out.append("|---|---|---|---|---|")
            for a in hp.actions:
                changes = "<br>".join(_md(change_line(c)) for c in a.changes
                                      if c.path != "/spec") or _md(a.reason)
                out.append(f"| `{symbol(a)}` | {a.key.kind} `{a.key.name}` | {a.op} | "
                           f"{_IMPACT_LABEL[a.impact]} | {changes} |")
        else:
            out.append("No changes.")
        for a in hp.actions:
            diff = (diffs or {}).get((a.key, a.op))
            if diff:  # folded: a pull-request comment stays readable
                fence = "~~~~" if "```" in diff else "```"
                out += ["", f"<details><summary>XML diff: {a.key.kind} <code>{a.key.name}</code> ({a.op})</summary>",
                        "", f"{fence}diff", diff, fence, "", "</details>"]
        for p in hp.problems:
            out.append(f"- **{p.severity}** {p.key.kind} `{p.key.name}`: {_md(p.message)}")
        for pend in hp.pending:
            out.append(f"- pending: {pend.key.kind} `{pend.key.name}` — {_md(pend.reason)}")
        out.append("")
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _action_json(a: Action, diffs: Diffs | None) -> dict[str, Any]:
    doc = a.as_json()
    if diffs is not None and (a.key, a.op) in diffs:
        doc["xmlDiff"] = diffs[(a.key, a.op)]
    return doc


def host_json(hp: HostPlan, diffs: Diffs | None = None) -> dict[str, Any]:
    return {
        "host": hp.host,
        "uri": hp.uri,
        "fingerprint": hp.fingerprint,
        "error": hp.error or None,
        "notes": list(hp.notes),
        "actions": [_action_json(a, diffs) for a in hp.actions],
        "pending": [p.as_json() for p in hp.pending],
        "problems": [p.as_json() for p in hp.problems],
        "unmanaged": [{"kind": k.kind, "name": k.name} for k in hp.unmanaged],
    }


def render_json(plan: Plan, extra: dict[str, Any] | None = None, diffs: Diffs | None = None) -> dict[str, Any]:
    return {
        "schemaVersion": PLAN_SCHEMA_VERSION,
        "kind": "plan",
        "instance": plan.instance,
        "specDigest": plan.spec_digest,
        "prune": plan.prune,
        "hasChanges": plan.has_changes,
        "hasErrors": plan.has_errors,
        "summary": summary(plan),
        "hosts": [host_json(h, diffs) for h in plan.hosts],
        **(extra or {}),
    }
