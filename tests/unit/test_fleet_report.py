"""Merging agents' /status documents into one drift report (drift --from-agents)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller.report.drift import render_json, render_text
from controller.report.fleet import merged_report

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _status(host: str, status: str = "in-sync", error: str | None = None) -> dict[str, Any]:
    obj = {"host": host, "kind": "Guest", "name": f"g-{host}", "status": status, "reconcile": "enforce",
           "changes": [{"path": "/spec/memory", "desired": "1GiB", "defined": "2GiB", "live": None,
                        "impact": "live"}] if status == "drift" else []}
    return {"kind": "drift", "instance": "lab", "commit": "abc", "hosts": [
        {"host": host, "uri": f"qemu+tcp://{host}/system", "error": error, "objects": [] if error else [obj],
         "unmanaged": [], "pending": []}]}


def test_agents_reports_merge_into_one_fleet_report_that_keeps_their_drift() -> None:
    report = merged_report([("http://a:8080", _status("a")), ("http://b:8080", _status("b", "drift"))], NOW)
    doc = render_json(report)
    assert [h["host"] for h in doc["hosts"]] == ["a", "b"]
    assert doc["instance"] == "lab" and doc["commit"] == "abc"
    assert report.has_drift and not report.has_errors
    change = doc["hosts"][1]["objects"][0]["changes"][0]
    assert change == {"path": "/spec/memory", "desired": "1GiB", "defined": "2GiB", "live": None, "impact": "live"}
    assert "memory" in render_text(report) and "desired=1GiB" in render_text(report)


def test_an_agent_that_cannot_be_read_is_an_unreachable_host_named_after_it() -> None:
    report = merged_report([("http://a:8080", _status("a")), ("http://b:8080", "cannot read its /status: refused"),
                            ("http://c:8080", {"kind": "something else"})], NOW)
    errors = {h.host: h.error for h in report.plan.hosts if h.error}
    assert errors == {"agent http://b:8080": "cannot read its /status: refused",
                      "agent http://c:8080": "its /status is not a drift document"}
    assert report.has_errors  # drift exits 1, not 0


def test_a_host_two_agents_report_is_taken_from_the_one_that_could_observe_it() -> None:
    report = merged_report([("http://x", _status("a", error="no answer")), ("http://y", _status("a", "drift"))], NOW)
    (host,) = report.plan.hosts
    assert not host.error and host.drift[0].status == "drift"
