"""The service's status page for people: one self-contained HTML page, no scripts
from anywhere, refreshing itself."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from controller.plan.actions import Plan

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em 2em;color:#1d1d1f;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:#555}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;
margin:.6em 0}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;
padding:.3em .5em;text-align:left;vertical-align:top}th{color:#555;font-weight:600}
.ok,.in-sync{color:#1a7f37}.drift,.missing,.extra,.error,.down{color:#b42318;font-weight:600}
.pending-restart,.warning,.suspended{color:#9a6700;font-weight:600}.unmanaged{color:#777}
code{font-family:ui-monospace,monospace;font-size:.95em}small{color:#777}"""


def _v(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(x) for x in value)
    return str(value)


def render_status_page(plan: Plan, *, commit: str, loaded_at: datetime | None,
                       spec_error: Sequence[str], events: Sequence[tuple[datetime, str, str]],
                       last_sync: dict[str, datetime | None], suspended: bool,
                       refresh: int = 5) -> str:
    e = html.escape
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{refresh}'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>virtsync — {e(plan.instance)}</title><style>{_CSS}</style></head><body>",
        f"<h1>virtsync <small>instance {e(plan.instance)}</small></h1>",
        f"<p class='meta'>Commit <code>{e(commit[:12] or 'none')}</code>"
        + (f", loaded {e(loaded_at.isoformat(timespec='seconds'))}" if loaded_at else "")
        + (" · <span class='suspended'>SUSPENDED: reporting only</span>" if suspended else "")
        + "</p>",
    ]
    if spec_error:
        out.append("<div class='card'><b class='error'>The newest specs are invalid; the last good "
                   "commit stays in force.</b><ul>"
                   + "".join(f"<li><code>{e(m)}</code></li>" for m in spec_error[:20]) + "</ul></div>")
    for hp in plan.hosts:
        synced = last_sync.get(hp.host)
        state = f"<span class='down'>unreachable: {e(hp.error)}</span>" if hp.error else (
            "<span class='ok'>up</span>")
        out.append(f"<h2>Host <code>{e(hp.host)}</code> {state}</h2><p class='meta'>{e(hp.uri)}"
                   + (f" · last full sync {e(synced.isoformat(timespec='seconds'))}" if synced else "")
                   + "</p>")
        out.append("<table><tr><th>Object</th><th>Status</th><th>Power</th><th>Drift</th><th>Mode</th></tr>")
        for o in hp.drift:
            if o.status == "missing":
                fields = "not defined on the host"
            else:
                fields = "<br>".join(
                f"<code>{e(c.path.removeprefix('/spec/'))}</code>: desired {e(_v(c.desired))}, "
                    f"defined {e(_v(c.defined))}, live {e(_v(c.live))}" for c in o.changes)
            if o.message:
                fields = (fields + "<br>" if fields else "") + e(o.message)
            power = e(str(o.info.get("state", ""))) if o.info else ""
            addrs = o.info.get("addresses") if o.info else None
            if addrs:
                power += f" <small>{e(', '.join(addrs))}</small>"
            out.append(f"<tr><td>{e(o.key.kind)} <code>{e(o.key.name)}</code></td>"
                       f"<td class='{e(o.status)}'>{e(o.status)}</td><td>{power}</td>"
                       f"<td>{fields}</td><td>{e(o.reconcile)}</td></tr>")
        for k in hp.unmanaged:
            out.append(f"<tr><td>{e(k.kind)} <code>{e(k.name)}</code></td><td class='unmanaged'>"
                       "unmanaged</td><td></td><td></td><td></td></tr>")
        out.append("</table>")
        for p in hp.pending:
            out.append(f"<p class='pending-restart'>pending: {e(p.key.kind)} <code>{e(p.key.name)}"
                       f"</code> — {e(p.reason)}</p>")
    out.append("<h2>Recent events</h2><table><tr><th>When</th><th>Level</th><th>Message</th></tr>")
    for at, level, message in events:
        out.append(f"<tr><td>{e(at.isoformat(timespec='seconds'))}</td><td class='{e(level)}'>"
                   f"{e(level)}</td><td>{e(message)}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"
