"""The drift report: desired vs defined vs live per object, plus unmanaged objects.

Built from the plan's per-object standings (the same diff), rendered as text,
JSON, Markdown or a self-contained HTML page.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.plan.actions import FieldChange, ObjectDrift, Plan
from controller.report.plan_render import value_text

DRIFT_SCHEMA_VERSION = 1
DRIFTING = ("drift", "missing", "extra")  # what makes `drift` exit 2


@dataclass(frozen=True)
class DriftReport:
    plan: Plan
    generated_at: datetime
    commit: str = ""

    @property
    def objects(self) -> list[ObjectDrift]:
        return [o for h in self.plan.hosts for o in h.drift]

    @property
    def has_drift(self) -> bool:
        return any(o.status in DRIFTING for o in self.objects)

    @property
    def has_errors(self) -> bool:
        return self.plan.has_errors or any(o.status == "error" for o in self.objects)

    def counts(self) -> dict[str, int]:
        c = Counter(o.status for o in self.objects)
        keys = ("in-sync", "drift", "missing", "extra", "pending-restart", "error")
        out = {k: c.get(k, 0) for k in keys}
        out["unmanaged"] = sum(len(h.unmanaged) for h in self.plan.hosts)
        out["unreachable"] = sum(1 for h in self.plan.hosts if h.error)
        return out


def _v(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ",".join(str(x) for x in v) or "[]"
    return value_text(v)  # the plan's spelling: true, key=value items (never a Python repr)


def _field(c: FieldChange) -> str:
    path = c.path.removeprefix("/spec/")
    return f"{path} ({c.note})" if c.note else path


def render_text(report: DriftReport) -> str:
    lines = []
    for hp in report.plan.hosts:
        if hp.error:
            lines.append(f"Host {hp.host}: UNREACHABLE — {hp.error}")
            continue
        c = Counter(o.status for o in hp.drift)
        lines.append(f"Host {hp.host}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())))
        for o in hp.drift:
            for what in ("snapshots", "backups"):
                for snap in o.info.get(what, []) if o.info else []:
                    if snap["status"] != "ok":
                        age = f"newest {snap['ageSeconds'] // 3600}h old" if snap["ageSeconds"] is not None else "none"
                        lines.append(f"  {what.upper()} {snap['status'].upper():8} {o.key.kind} {o.key.name}: "
                                     f"policy {snap['policy']}, {age}")
            if o.status == "in-sync":
                continue
            mode = f" [{o.reconcile}]" if o.reconcile != "enforce" else ""
            lines.append(f"  {o.status.upper():15} {o.key.kind} {o.key.name}{mode}"
                         + (f" — {o.message}" if o.message else ""))
            for ch in o.changes:
                lines.append(f"      {_field(ch):32} desired={_v(ch.desired)}  "
                             f"defined={_v(ch.defined)}  live={_v(ch.live)}")
        for k in hp.unmanaged:
            lines.append(f"  {'UNMANAGED':15} {k.kind} {k.name}")
    counts = report.counts()
    lines.append("")
    lines.append("Summary: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    unreachable = report.counts()["unreachable"]
    if report.has_drift:
        lines.append("Drift found." + (f" {unreachable} host(s) could not be checked." if unreachable else ""))
    elif unreachable:
        lines.append(f"Not known: {unreachable} host(s) could not be checked.")
    else:
        lines.append("In sync.")
    return "\n".join(lines) + "\n"


def render_json(report: DriftReport) -> dict[str, Any]:
    return {
        "schemaVersion": DRIFT_SCHEMA_VERSION,
        "kind": "drift",
        "instance": report.plan.instance,
        "generatedAt": report.generated_at.isoformat(),
        "commit": report.commit or None,
        "inSync": not report.has_drift,
        "hasErrors": report.has_errors,
        "summary": report.counts(),
        "hosts": [
            {
                "host": h.host,
                "uri": h.uri,
                "error": h.error or None,
                "objects": [o.as_json() for o in h.drift],
                "unmanaged": [{"kind": k.kind, "name": k.name} for k in h.unmanaged],
                "pending": [p.as_json() for p in h.pending],
            }
            for h in report.plan.hosts
        ],
    }


def render_markdown(report: DriftReport) -> str:
    out = ["## virtsync drift report", ""]
    counts = report.counts()
    out.append(" · ".join(f"**{n}** {k}" for k, n in counts.items() if n) or "nothing")
    out.append("")
    for hp in report.plan.hosts:
        out.append(f"### Host `{hp.host}`")
        out.append("")
        if hp.error:
            out.append(f"> **unreachable:** {hp.error}")
            out.append("")
            continue
        out.append("| Object | Status | Field | Desired | Defined | Live |")
        out.append("|---|---|---|---|---|---|")
        for o in hp.drift:
            rows = o.changes or (None,)
            for ch in rows:
                cells = (["", "", "", ""] if ch is None else
                         [_field(ch), _v(ch.desired), _v(ch.defined), _v(ch.live)])
                cells = [x.replace("|", "\\|") for x in cells]
                out.append(f"| {o.key.kind} `{o.key.name}` | {o.status} | " + " | ".join(cells) + " |")
        for k in hp.unmanaged:
            out.append(f"| {k.kind} `{k.name}` | unmanaged | | | | |")
        out.append("")
    return "\n".join(out)


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}.in-sync{color:#276b27}
.drift,.missing,.extra,.error{color:#a31515;font-weight:bold}.pending-restart{color:#9a6700}
.unmanaged{color:#666}code{font-family:ui-monospace,monospace}"""


def render_html(report: DriftReport) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>virtsync drift report</title>",
             f"<style>{_CSS}</style></head><body><h1>virtsync drift report</h1>",
             f"<p>Generated {e(report.generated_at.isoformat())}; instance "
             f"<code>{e(report.plan.instance)}</code>"
             + (f"; commit <code>{e(report.commit)}</code>" if report.commit else "") + ".</p>",
             "<p>" + ", ".join(f"{n} {e(k)}" for k, n in report.counts().items() if n) + "</p>"]
    for hp in report.plan.hosts:
        parts.append(f"<h2>Host <code>{e(hp.host)}</code> <small>{e(hp.uri)}</small></h2>")
        if hp.error:
            parts.append(f"<p class='error'>unreachable: {e(hp.error)}</p>")
            continue
        parts.append("<table><tr><th>Object</th><th>Status</th><th>Field</th><th>Desired</th>"
                     "<th>Defined</th><th>Live</th></tr>")
        for o in hp.drift:
            rows = o.changes or (None,)
            for ch in rows:
                cells = ("", "", "", "") if ch is None else (
                    _field(ch), _v(ch.desired), _v(ch.defined), _v(ch.live))
                parts.append(f"<tr><td>{e(o.key.kind)} <code>{e(o.key.name)}</code></td>"
                             f"<td class='{e(o.status)}'>{e(o.status)}</td>"
                             + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        for k in hp.unmanaged:
            parts.append(f"<tr><td>{e(k.kind)} <code>{e(k.name)}</code></td>"
                         "<td class='unmanaged'>unmanaged</td><td></td><td></td><td></td><td></td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
