"""One drift report from several agents' /status documents (`drift --from-agents`), pure.

Each agent (`serve --this-host`, or a serve replica) reports the hosts it reconciles in its
/status, which is a drift document (drift.schema.json) plus a `service` section. Merged, they
are the fleet's report, rendered and judged like a local `drift`: a host reported by two
agents is taken from the first that could observe it, and an agent that could not be read is
an unreachable pseudo-host named after its URL, so the run exits 1 rather than looking clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from controller.model.state import ResourceKey
from controller.plan.actions import FieldChange, HostPlan, Impact, ObjectDrift, Pending, Plan
from controller.report.drift import DriftReport


def _key(doc: dict[str, Any]) -> ResourceKey:
    return ResourceKey(str(doc["host"]), str(doc["kind"]), str(doc["name"]))


_IMPACTS = {str(i): i for i in Impact}


def _change(doc: dict[str, Any]) -> FieldChange:
    return FieldChange(str(doc["path"]), doc.get("desired"), doc.get("defined"), doc.get("live"),
                       _IMPACTS.get(str(doc.get("impact")), Impact.LIVE), str(doc.get("note", "")))


def _host(doc: dict[str, Any]) -> HostPlan:
    drift = tuple(ObjectDrift(_key(o), str(o["status"]), tuple(_change(c) for c in o.get("changes", [])),
                              str(o.get("reconcile", "enforce")), str(o.get("message", "")), dict(o.get("info") or {}))
                  for o in doc.get("objects", []))
    pending = tuple(Pending(_key(p), str(p.get("reason", "")), tuple(_change(c) for c in p.get("changes", [])))
                    for p in doc.get("pending", []))
    unmanaged = tuple(ResourceKey(str(doc["host"]), str(u["kind"]), str(u["name"])) for u in doc.get("unmanaged", []))
    return HostPlan(str(doc["host"]), str(doc.get("uri", "")), "", pending=pending, unmanaged=unmanaged,
                    error=str(doc.get("error") or ""), drift=drift)


def merged_report(statuses: Sequence[tuple[str, dict[str, Any] | str]], now: datetime) -> DriftReport:
    """``statuses``: (agent URL, its /status document, or why it could not be read)."""
    hosts: dict[str, HostPlan] = {}
    instance, commits = "", []
    for url, doc in statuses:
        if isinstance(doc, str):
            hosts[f"agent {url}"] = HostPlan(f"agent {url}", url, "", error=doc)
            continue
        if doc.get("kind") != "drift" or not isinstance(doc.get("hosts"), list):
            hosts[f"agent {url}"] = HostPlan(f"agent {url}", url, "", error="its /status is not a drift document")
            continue
        instance = instance or str(doc.get("instance") or "")
        if doc.get("commit"):
            commits.append(str(doc["commit"]))
        for h in doc["hosts"]:
            plan = _host(h)
            seen = hosts.get(plan.host)
            if seen is None or (seen.error and not plan.error):
                hosts[plan.host] = plan
    commit = commits[0] if commits and all(c == commits[0] for c in commits) else ""
    return DriftReport(Plan(tuple(hosts[name] for name in sorted(hosts)), instance or "default", ""), now, commit)
