"""The service's status page for people: one self-contained HTML page.

Hosts → objects (state, addresses, pending restarts, drift field by field, the last change and
its commit, snapshot/backup freshness), a timeline of recent actions, an inline SVG chart of
reconcile latency and the service's events. Everything is inline: a Content-Security-Policy
(script and style allowed by their hashes, nothing to connect to but the page's own origin)
makes the browser refuse anything from outside. Filters by host and by status, and the
refresh, are a small inline script; without scripts the page still reads and refreshes itself.
Dark mode follows the browser (prefers-color-scheme). Pure: the caller hands in a StatusView.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import datetime
from typing import Any

from controller.model.records import record
from controller.model.state import ResourceKey
from controller.plan.actions import FieldChange, HostPlan, ObjectDrift, Pending, Plan

# Statuses that want someone's attention (the "needs attention" filter).
ATTENTION = ("drift", "missing", "extra", "error", "pending-restart")
STATUS_ORDER = ("error", "drift", "missing", "extra", "pending-restart", "in-sync", "unmanaged")
CHART_SAMPLES = 60  # reconciles drawn in the latency chart


@record
class ActionEntry:
    """One action the service carried out (or failed to)."""

    at: datetime
    key: ResourceKey
    op: str
    outcome: str  # created | updated | deleted | skipped | failed
    detail: str = ""
    seconds: float = 0.0
    commit: str = ""


@record
class ReconcileSample:
    """How long one reconcile of one key took."""

    at: datetime
    key: ResourceKey
    seconds: float
    ok: bool = True


@record
class StatusView:
    """Everything the page shows, gathered by the service (report/ does no I/O)."""

    plan: Plan
    now: datetime
    commit: str = ""
    loaded_at: datetime | None = None
    spec_error: Sequence[str] = ()
    events: Sequence[tuple[datetime, str, str]] = ()  # newest first: (at, level, message)
    actions: Sequence[ActionEntry] = ()  # newest first
    last_change: Mapping[ResourceKey, ActionEntry] = field(default_factory=dict)  # this service's
    owner_commits: Mapping[ResourceKey, str] = field(default_factory=dict)  # from ownership records
    reconciles: Sequence[ReconcileSample] = ()  # oldest first
    last_sync: Mapping[str, datetime | None] = field(default_factory=dict)
    suspended: bool = False
    refresh: int = 5  # seconds between refreshes


_CSS = """:root{color-scheme:light dark;--bg:#f6f7f9;--fg:#1d1f23;--muted:#5c6370;--card:#fff;
--line:#e1e4e8;--ok:#1a7f37;--bad:#c0271d;--warn:#9a6700;--accent:#0b62d6;--chip:#eef1f5;--bar:#4c8bf5}
@media (prefers-color-scheme:dark){:root{--bg:#0f1115;--fg:#e6e8eb;--muted:#9aa3ae;--card:#181b21;
--line:#2b3038;--ok:#3fb950;--bad:#ff6b5e;--warn:#d8a521;--accent:#6ea8fe;--chip:#242932;--bar:#6ea8fe}}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;
background:var(--bg);color:var(--fg)}header,main{max-width:1400px;margin:0 auto;padding:.8em 1.4em}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.3em 1em}
h1{font-size:1.35em;margin:0}h2{font-size:1.1em;margin:0}h3{font-size:1em;margin:1.2em 0 .4em}
.meta,small{color:var(--muted)}code{font-family:ui-monospace,"SFMono-Regular",Menlo,monospace;font-size:.92em}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7em 1em;margin:.7em 0}
.summary{display:flex;flex-wrap:wrap;gap:.6em}.summary .card{margin:0;flex:0 1 9em}
.summary b{display:block;font-size:1.5em}.filters{display:flex;flex-wrap:wrap;gap:.4em;align-items:center}
.filters button{font:inherit;color:inherit;background:var(--chip);border:1px solid var(--line);
border-radius:999px;padding:.2em .8em;cursor:pointer}
.filters button[aria-pressed=true]{background:var(--accent);border-color:var(--accent);color:var(--bg)}
.host-head{display:flex;flex-wrap:wrap;gap:.2em 1em;align-items:baseline}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid var(--line);padding:.35em .5em;
text-align:left;vertical-align:top}th{color:var(--muted);font-weight:600}tr:last-child td{border-bottom:0}
.badge{display:inline-block;border-radius:4px;padding:0 .45em;font-weight:600;white-space:nowrap;
background:var(--chip)}.ok,.in-sync,.up{color:var(--ok)}
.drift,.missing,.extra,.error,.down,.failed,.critical{color:var(--bad)}
.pending-restart,.warning,.suspended,.skipped{color:var(--warn)}.unmanaged,.none{color:var(--muted)}
.chg{margin:.1em 0}.chg code{font-weight:600}.val{white-space:pre-wrap;word-break:break-word}
.timeline{list-style:none;margin:0;padding:0 0 0 1em;border-left:2px solid var(--line)}
.timeline li{margin:.25em 0;position:relative}.timeline li::before{content:"";position:absolute;
left:-1.38em;top:.5em;width:.6em;height:.6em;border-radius:50%;background:var(--line)}
.timeline li.t-failed::before{background:var(--bad)}.timeline li.t-ok::before{background:var(--ok)}
.timeline li.t-skipped::before{background:var(--warn)}
.chart svg{width:100%;height:auto;max-height:220px}.chart .bar{fill:var(--bar)}.chart .bar.err{fill:var(--bad)}
.chart .axis{stroke:var(--line)}.chart text{fill:var(--muted);font-size:11px}
.empty{color:var(--muted);font-style:italic}.stale{color:var(--warn)}[hidden]{display:none!important}
@media (max-width:700px){header,main{padding:.6em .7em}.summary .card{flex:1 1 28%;padding:.4em .6em}
table.objects thead{display:none}
table.objects tr{display:block;border-bottom:1px solid var(--line);padding:.3em 0}
table.objects td{display:block;border:0;padding:.12em .2em}
table.objects td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-weight:600}}"""

# The filters (by host and by status, kept in the URL's #fragment so a refresh or a shared link
# keeps them) and the refresh: the page fetches itself and swaps its live part, so a filter
# survives it; a failed fetch (the service down, a 401) shows since when the page is stale.
_JS = """(function(){
var state={host:'all',status:'all'};
function readHash(){var h=location.hash.replace(/^#/,'').split('&');h.forEach(function(p){
var kv=p.split('=');if(kv.length==2&&(kv[0]=='host'||kv[0]=='status')){state[kv[0]]=decodeURIComponent(kv[1]);}});}
function writeHash(){var h='host='+encodeURIComponent(state.host)+'&status='+encodeURIComponent(state.status);
if(history.replaceState){history.replaceState(null,'','#'+h);}}
function statusMatch(s){if(state.status=='all'){return true;}
if(state.status=='attention'){return ['drift','missing','extra','error','pending-restart'].indexOf(s)>=0;}
return s==state.status;}
function apply(){
document.querySelectorAll('[data-filter-host]').forEach(function(b){
b.setAttribute('aria-pressed',String(b.getAttribute('data-filter-host')==state.host));});
document.querySelectorAll('[data-filter-status]').forEach(function(b){
b.setAttribute('aria-pressed',String(b.getAttribute('data-filter-status')==state.status));});
document.querySelectorAll('section.host').forEach(function(sec){
var hostOk=state.host=='all'||sec.getAttribute('data-host')==state.host;
var shown=0;sec.querySelectorAll('tr.obj').forEach(function(tr){
var ok=statusMatch(tr.getAttribute('data-status'));tr.hidden=!ok;if(ok){shown++;}});
var none=sec.querySelector('.no-match');if(none){none.hidden=shown>0;}
sec.hidden=!hostOk;});
document.querySelectorAll('.timeline li[data-host], tr.event[data-host]').forEach(function(el){
var h=el.getAttribute('data-host');el.hidden=!(state.host=='all'||h==''||h==state.host);});}
document.addEventListener('click',function(ev){var b=ev.target.closest('button');if(!b){return;}
if(b.hasAttribute('data-filter-host')){state.host=b.getAttribute('data-filter-host');}
else if(b.hasAttribute('data-filter-status')){state.status=b.getAttribute('data-filter-status');}
else{return;}writeHash();apply();});
function refresh(){
fetch(location.pathname+location.search,{cache:'no-store',credentials:'same-origin'}).then(function(r){
if(!r.ok){throw new Error('HTTP '+r.status);}return r.text();}).then(function(text){
var doc=new DOMParser().parseFromString(text,'text/html');
['live','filters'].forEach(function(id){var mine=document.getElementById(id),fresh=doc.getElementById(id);
if(mine&&fresh){mine.innerHTML=fresh.innerHTML;}});
lastOk=new Date();document.getElementById('stale').hidden=true;apply();}).catch(function(err){
var s=document.getElementById('stale');s.hidden=false;
s.textContent='stale: not refreshed since '+lastOk.toLocaleTimeString()+' ('+err.message+')';});}
var lastOk=new Date();
readHash();apply();document.documentElement.setAttribute('data-ready','1');
var every=parseInt(document.querySelector('main').getAttribute('data-refresh'),10);
if(every>0){setInterval(refresh,every*1000);}
})();"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# default-src 'none': no script, style, font, image or frame but these; fetch to the origin only.
CSP = (f"default-src 'none'; script-src {_hash(_JS)}; style-src {_hash(_CSS)}; img-src data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'")
# The HTTP header adds what a <meta> policy cannot say: no other site may frame the page.
CSP_HEADER = CSP + "; frame-ancestors 'none'"

_e = html.escape


def _val(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_val(x) for x in value) or "[]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _ago(now: datetime, at: datetime | None) -> str:
    if at is None:
        return "never"
    s = max(0, int((now - at).total_seconds()))
    if s < 90:
        return f"{s}s ago"
    if s < 5400:
        return f"{s // 60}m ago"
    if s < 172800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none yet"
    s = int(seconds)
    return (f"{s}s" if s < 90 else f"{s // 60}m" if s < 5400 else f"{s // 3600}h" if s < 172800
            else f"{s // 86400}d") + " old"


def _time(at: datetime) -> str:
    return f"<time datetime='{_e(at.isoformat())}'>{_e(at.strftime('%H:%M:%S'))}</time>"


def _change(c: FieldChange) -> str:
    path = c.path.removeprefix("/spec/")
    live = "" if c.live is None or c.live == c.defined else f" · live <span class='val'>{_e(_val(c.live))}</span>"
    note = f" <small>({_e(c.note)})</small>" if c.note else ""
    return (f"<div class='chg' data-field='{_e(path)}'><code>{_e(path)}</code>: "
            f"want <span class='val'>{_e(_val(c.desired))}</span> · defined "
            f"<span class='val'>{_e(_val(c.defined))}</span>{live} <small>[{_e(str(c.impact))}]</small>"
            f"{note}</div>")


def _freshness(info: Mapping[str, Any]) -> str:
    """Snapshot and backup freshness, one chip per policy; the same shape for both
    ({policy, status, newest, ageSeconds}), so backups show as soon as the status has them."""
    chips = []
    for label, what in (("snapshot", "snapshots"), ("backup", "backups")):
        for f in info.get(what) or ():
            if not isinstance(f, Mapping):
                continue
            status = str(f.get("status", ""))
            chips.append(f"<div class='fresh' data-kind='{label}'>{label} <code>{_e(str(f.get('policy', '')))}"
                         f"</code> <span class='badge {_e(status)}'>{_e(status)}</span> "
                         f"<small>{_e(_age(f.get('ageSeconds')))}</small></div>")
    return "".join(chips) or "<span class='none'>no policy</span>"


def _state(o: ObjectDrift) -> str:
    info = o.info or {}
    parts = []
    if "state" in info:
        parts.append(f"<span class='power'>{_e(str(info['state']))}</span>")
    addrs = info.get("addresses")
    if addrs:
        parts.append("<div class='addrs'>" + "<br>".join(f"<code>{_e(str(a))}</code>" for a in addrs) + "</div>")
    if info.get("uptimeSeconds") is not None:
        parts.append(f"<small>up {_e(_age(float(info['uptimeSeconds'])).removesuffix(' old'))}</small>")
    if info.get("agent") not in (None, "none"):
        parts.append(f"<small>agent {_e(str(info['agent']))}</small>")
    return " ".join(parts) or "<span class='none'>—</span>"


def _last_change(entry: ActionEntry | None, owner_commit: str, now: datetime) -> str:
    """This service's last action on the object, else the commit its ownership record names
    (what virtsync last changed it to, by whichever run: known after a restart too)."""
    commit = (entry.commit if entry is not None else "") or owner_commit
    shown = (f"<small>commit</small> <code class='commit' title='{_e(commit)}'>{_e(commit[:10])}</code>"
             if commit else "")
    if entry is None:
        return (shown + " <small>(ownership record)</small>") if commit else "<span class='none'>none seen</span>"
    return (f"<span class='op'>{_e(entry.op)}</span> <small>{_e(_ago(now, entry.at))}</small>"
            + (f"<br>{shown}" if shown else ""))


def _row(o: ObjectDrift, pending: Pending | None, last: ActionEntry | None, commit: str, now: datetime) -> str:
    if o.status == "missing":
        drift = "<span class='missing'>not defined on the host</span>"
    else:
        drift = "".join(_change(c) for c in o.changes)
    if pending is not None:
        drift += (f"<div class='pending'><span class='pending-restart'>restart pending:</span> "
                  f"{_e(pending.reason)}</div>" + "".join(_change(c) for c in pending.changes))
    if o.message:
        drift += f"<div class='msg'>{_e(o.message)}</div>"
    mode = "" if o.reconcile == "enforce" else f" <small>[{_e(o.reconcile)}]</small>"
    return (f"<tr class='obj' data-status='{_e(o.status)}' data-kind='{_e(o.key.kind)}' data-name='{_e(o.key.name)}'>"
            f"<td data-label='Object'>{_e(o.key.kind)} <code>{_e(o.key.name)}</code>{mode}</td>"
            f"<td data-label='Status'><span class='badge {_e(o.status)}'>{_e(o.status)}</span></td>"
            f"<td data-label='State'>{_state(o)}</td>"
            f"<td data-label='Drift' class='drift-cell'>{drift or '<span class=none>—</span>'}</td>"
            f"<td data-label='Last change'>{_last_change(last, commit, now)}</td>"
            + (f"<td data-label='Snapshots / backups'>{_freshness(o.info or {})}</td></tr>"
               if o.key.kind == "Guest" else "<td></td></tr>"))


def _host(hp: HostPlan, view: StatusView) -> str:
    synced = view.last_sync.get(hp.host)
    state = (f"<span class='badge down'>unreachable</span> <span class='down'>{_e(hp.error)}</span>"
             if hp.error else "<span class='badge up'>up</span>")
    counts = Counter(o.status for o in hp.drift)
    counts["unmanaged"] += len(hp.unmanaged)
    shown = " · ".join(f"<span class='{_e(s)}'>{counts[s]} {_e(s)}</span>" for s in STATUS_ORDER if counts[s])
    pending = {p.key: p for p in hp.pending}
    out = [f"<section class='card host' data-host='{_e(hp.host)}'><div class='host-head'>"
           f"<h2>Host <code>{_e(hp.host)}</code></h2> {state}<span class='meta'>{_e(hp.uri)}"
           + (f" · last full sync {_e(_ago(view.now, synced))}" if synced else " · not fully synced yet")
           + f"</span><span class='meta'>{shown}</span></div>"]
    if not hp.drift and not hp.unmanaged:
        out.append("<p class='empty'>no objects" + (" known: the host could not be read" if hp.error else "")
                   + "</p></section>")
        return "".join(out)
    out.append("<table class='objects'><thead><tr><th>Object</th><th>Status</th><th>State</th><th>Drift</th>"
               "<th>Last change</th><th>Snapshots / backups</th></tr></thead><tbody>")
    for o in sorted(hp.drift, key=lambda o: (STATUS_ORDER.index(o.status) if o.status in STATUS_ORDER else 0,
                                             o.key.kind, o.key.name)):
        out.append(_row(o, pending.get(o.key), view.last_change.get(o.key), view.owner_commits.get(o.key, ""),
                        view.now))
    for k in hp.unmanaged:
        out.append(f"<tr class='obj' data-status='unmanaged' data-kind='{_e(k.kind)}' data-name='{_e(k.name)}'>"
                   f"<td data-label='Object'>{_e(k.kind)} <code>{_e(k.name)}</code></td>"
                   "<td data-label='Status'><span class='badge unmanaged'>unmanaged</span></td>"
                   "<td></td><td><small>not virtsync's: left alone</small></td><td></td><td></td></tr>")
    out.append("</tbody></table>")
    out.append("<p class='empty no-match' hidden>nothing here matches the filter</p>")
    for note in hp.notes:
        out.append(f"<p class='meta'>{_e(note)}</p>")
    out.append("</section>")
    return "".join(out)


def _chart(samples: Sequence[ReconcileSample]) -> str:
    """Bars of the last reconciles' durations (failures in red), scaled to the slowest."""
    shown = list(samples)[-CHART_SAMPLES:]
    if not shown:
        return "<p class='empty'>no reconcile yet</p>"
    w, h, left, bottom = 600, 160, 44, 18
    top = max(s.seconds for s in shown) or 0.001
    step = (w - left) / CHART_SAMPLES
    bars = []
    for i, s in enumerate(shown):
        bh = max(1.0, (h - bottom - 8) * s.seconds / top)
        x = left + i * step
        bars.append(f"<rect class='bar{'' if s.ok else ' err'}' x='{x:.1f}' y='{h - bottom - bh:.1f}' "
                    f"width='{max(1.0, step - 2):.1f}' height='{bh:.1f}'><title>{_e(str(s.key))}: "
                    f"{s.seconds:.3f} s at {_e(s.at.strftime('%H:%M:%S'))}{'' if s.ok else ' (failed)'}"
                    "</title></rect>")
    ordered = sorted(s.seconds for s in shown)
    p50 = ordered[len(ordered) // 2]
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (f"<svg viewBox='0 0 {w} {h}' role='img' aria-label='reconcile latency, last {len(shown)} reconciles'>"
            f"<line class='axis' x1='{left}' y1='{h - bottom}' x2='{w}' y2='{h - bottom}'/>"
            f"<line class='axis' x1='{left}' y1='8' x2='{left}' y2='{h - bottom}'/>"
            f"<text x='{left - 4}' y='14' text-anchor='end'>{_fmt_s(top)}</text>"
            f"<text x='{left - 4}' y='{h - bottom}' text-anchor='end'>0</text>"
            f"<text x='{left}' y='{h - 4}'>{_e(shown[0].at.strftime('%H:%M:%S'))}</text>"
            f"<text x='{max(left + len(shown) * step, left + 130):.1f}' y='{h - 4}' text-anchor='end'>"
            f"{_e(shown[-1].at.strftime('%H:%M:%S'))}</text>"
            + "".join(bars) + "</svg>"
            f"<p class='meta'>last {len(shown)} reconciles: median {_fmt_s(p50)}, p95 {_fmt_s(p95)}, "
            f"slowest {_fmt_s(top)}; {sum(1 for s in shown if not s.ok)} failed</p>")


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _timeline(view: StatusView) -> str:
    if not view.actions:
        return "<p class='empty'>no action yet</p>"
    items = []
    for a in view.actions:
        cls = "t-failed" if a.outcome == "failed" else "t-skipped" if a.outcome == "skipped" else "t-ok"
        commit = f" <small>commit</small> <code>{_e(a.commit[:10])}</code>" if a.commit else ""
        detail = f" — <span class='msg'>{_e(a.detail)}</span>" if a.detail else ""
        items.append(f"<li class='{cls}' data-host='{_e(a.key.host)}'>{_time(a.at)} "
                     f"<code>{_e(a.key.host)}</code> {_e(a.key.kind)} <code>{_e(a.key.name)}</code> "
                     f"<b>{_e(a.op)}</b> <span class='{_e(a.outcome)}'>{_e(a.outcome)}</span> "
                     f"<small>{_fmt_s(a.seconds)}</small>{commit}{detail}</li>")
    return "<ol class='timeline'>" + "".join(items) + "</ol>"


def _filters(plan: Plan) -> str:
    statuses = Counter(o.status for hp in plan.hosts for o in hp.drift)
    statuses["unmanaged"] += sum(len(hp.unmanaged) for hp in plan.hosts)
    attention = sum(statuses[s] for s in ATTENTION)
    out = ["<span class='meta'>Host</span><button type='button' data-filter-host='all'>all</button>"]
    for hp in plan.hosts:
        bad = sum(1 for o in hp.drift if o.status in ATTENTION) + (1 if hp.error else 0)
        out.append(f"<button type='button' data-filter-host='{_e(hp.host)}'>{_e(hp.host)}"
                   + (f" <span class='badge drift'>{bad}</span>" if bad else "") + "</button>")
    out.append("<span class='meta'>&nbsp;Status</span><button type='button' data-filter-status='all'>all</button>"
               f"<button type='button' data-filter-status='attention'>needs attention ({attention})</button>")
    for s in STATUS_ORDER:
        if statuses[s]:
            out.append(f"<button type='button' data-filter-status='{s}'>{s} ({statuses[s]})</button>")
    return "".join(out)


def render_status_page(view: StatusView) -> str:
    plan = view.plan
    objects = [o for hp in plan.hosts for o in hp.drift]
    counts = Counter(o.status for o in objects)
    down = sum(1 for hp in plan.hosts if hp.error)
    pending = sum(len(hp.pending) for hp in plan.hosts)
    loaded = f", loaded {_ago(view.now, view.loaded_at)}" if view.loaded_at else ""
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<meta name='color-scheme' content='light dark'><link rel='icon' href='data:,'>",  # no favicon request
        f"<noscript><meta http-equiv='refresh' content='{view.refresh}'></noscript>" if view.refresh > 0 else "",
        f"<title>virtsync — {_e(plan.instance)}</title><style>{_CSS}</style></head>",
        f"<body><header><h1>virtsync <small>instance {_e(plan.instance)}</small></h1>",
        f"<span class='meta'>commit <code>{_e(view.commit[:12] or 'none')}</code>{_e(loaded)}</span>",
        "<span class='badge suspended'>SUSPENDED: reporting only</span>" if view.suspended else "",
        f"<span id='stale' class='stale' hidden></span></header><main data-refresh='{view.refresh}'>",
        f"<nav id='filters' class='filters' aria-label='filters'>{_filters(plan)}</nav><div id='live'>",
        f"<p class='meta'>as of {_e(view.now.isoformat(timespec='seconds'))} (times are UTC)</p>",
        "<div class='summary'>"
        f"<div class='card'><b>{len(plan.hosts) - down}/{len(plan.hosts)}</b>hosts up</div>"
        f"<div class='card'><b>{sum(1 for o in objects if o.key.kind == 'Guest')}</b>guests</div>"
        f"<div class='card'><b class='{'drift' if counts['drift'] + counts['missing'] + counts['extra'] else 'ok'}'>"
        f"{counts['drift'] + counts['missing'] + counts['extra']}</b>drifting</div>"
        f"<div class='card'><b class='{'pending-restart' if pending else 'ok'}'>{pending}</b>pending restarts</div>"
        f"<div class='card'><b class='{'error' if counts['error'] else 'ok'}'>{counts['error']}</b>errors</div>"
        "</div>",
    ]
    if view.spec_error:
        out.append("<div class='card'><b class='error'>The newest specs are invalid; the last good "
                   "commit stays in force.</b><ul>"
                   + "".join(f"<li><code>{_e(m)}</code></li>" for m in view.spec_error[:20]) + "</ul></div>")
    if not plan.hosts:
        out.append("<p class='empty'>no host yet</p>")
    out.extend(_host(hp, view) for hp in plan.hosts)
    out.append("<div class='card'><h3>Recent actions</h3>" + _timeline(view) + "</div>")
    out.append("<div class='card chart'><h3>Reconcile latency</h3>" + _chart(view.reconciles) + "</div>")
    out.append("<div class='card'><h3>Service events</h3><table class='events'><tbody>")
    for at, level, message in view.events:
        out.append(f"<tr class='event' data-host=''><td>{_time(at)}</td><td><span class='{_e(level)}'>"
                   f"{_e(level)}</span></td><td>{_e(message)}</td></tr>")
    if not view.events:
        out.append("<tr><td class='empty'>no event yet</td></tr>")
    out.append("</tbody></table></div></div></main>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(x for x in out if x) + "\n"
