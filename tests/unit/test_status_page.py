"""The status page generator (report/status_page.py): pure HTML from a StatusView.

What a browser would refuse or mis-read is checked here on the text; the page in a real browser
(filters, refresh, dark mode, screenshots) is tests/e2e/test_status_page.py."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

from controller.model.state import ResourceKey
from controller.plan.actions import FieldChange, HostPlan, Impact, ObjectDrift, Pending, Plan
from controller.report.status_page import CSP, CSP_HEADER, ActionEntry, ReconcileSample, StatusView, render_status_page

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EVIL = "x'\"><script>alert(1)</script>"


def _view(**kw: object) -> StatusView:
    web = ResourceKey("kvm1", "Guest", "web")
    db = ResourceKey("kvm1", "Guest", "db")
    hp = HostPlan("kvm1", "qemu:///system", "",
                  pending=(Pending(db, "memory waits for a restart",
                                   (FieldChange("/spec/memory", "2GiB", "1GiB", impact=Impact.NEXT_BOOT),)),),
                  drift=(ObjectDrift(web, "drift", (FieldChange("/spec/vcpus", 4, 2, 2),),
                                     info={"state": "running", "addresses": ["192.168.150.12"],
                                           "snapshots": [{"policy": "nightly", "status": "warning",
                                                          "newest": None, "ageSeconds": 7200}],
                                           "backups": [{"policy": "weekly", "status": "critical",
                                                        "newest": None, "ageSeconds": None}]}),
                         ObjectDrift(db, "pending-restart", info={"state": "running"})))
    down = HostPlan("kvm2", "qemu+ssh://kvm2/system", "", error="connection refused")
    act = ActionEntry(NOW - timedelta(minutes=2), web, "update", "updated", "", 0.3, "0123456789abcdef")
    args: dict[str, object] = dict(
        plan=Plan((hp, down), "prod", ""), now=NOW, commit="0123456789abcdef", actions=[act],
        last_change={web: act}, reconciles=[ReconcileSample(NOW, web, 0.25), ReconcileSample(NOW, db, 1.5, False)])
    args.update(kw)
    return StatusView(**args)  # type: ignore[arg-type]


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_user_input_is_escaped_in_text_and_attributes() -> None:
    evil = ResourceKey(EVIL, "Guest", EVIL)
    hp = HostPlan(EVIL, EVIL, "", drift=(ObjectDrift(evil, "drift", (FieldChange(f"/spec/{EVIL}", EVIL, 1),),
                                                     message=EVIL, info={"addresses": [EVIL]}),))
    page = render_status_page(StatusView(
        Plan((hp,), EVIL, ""), NOW, commit=EVIL, events=[(NOW, "error", EVIL)],
        actions=[ActionEntry(NOW, evil, EVIL, "failed", EVIL, 1.0, EVIL)], reconciles=[ReconcileSample(NOW, evil, 1)],
        last_change={evil: ActionEntry(NOW, evil, EVIL, "updated", commit=EVIL)}))
    assert "<script>alert" not in page
    assert page.count("<script>") == 1  # the page's own
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # no attribute value is broken out of: every quote of the input is an entity
    assert "x'\"" not in page and "x&#x27;&quot;&gt;" in page


def test_the_inline_script_and_style_are_what_the_content_security_policy_allows() -> None:
    page = render_status_page(_view())
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert script and style
    assert f"script-src {_hash(script.group(1))};" in CSP and f"style-src {_hash(style.group(1))};" in CSP
    assert f"content=\"{CSP}\"" in page
    assert CSP_HEADER.startswith(CSP) and CSP_HEADER.endswith("frame-ancestors 'none'")
    assert "default-src 'none'" in CSP and "connect-src 'self'" in CSP
    assert " style=" not in page  # inline style attributes would be refused by that policy


def test_nothing_is_loaded_from_outside() -> None:
    page = render_status_page(_view())
    assert re.findall(r"\b(?:src|href)\s*=\s*['\"]?([^'\" >]*)", page) == ["data:,"]  # the empty favicon
    assert page.count("<link") == 1 and "@import" not in page and "url(" not in page
    assert not re.search(r"https?://", page.replace("qemu+ssh://kvm2", "")), "a URL in the page"


def test_drift_pending_restart_freshness_and_an_unreachable_host_are_shown() -> None:
    page = render_status_page(_view())
    row = re.search(r"<tr class='obj' data-status='drift'.*?</tr>", page, re.S)
    assert row is not None
    assert "data-field='vcpus'" in row.group(0) and "want <span class='val'>4</span>" in row.group(0)
    assert "192.168.150.12" in row.group(0) and "0123456789" in row.group(0)  # address, last change's commit
    assert "snapshot <code>nightly</code> <span class='badge warning'>warning</span>" in row.group(0)
    assert "backup <code>weekly</code> <span class='badge critical'>critical</span>" in row.group(0)
    pending = re.search(r"<tr class='obj' data-status='pending-restart'.*?</tr>", page, re.S)
    assert pending is not None and "memory waits for a restart" in pending.group(0)
    assert "data-field='memory'" in pending.group(0)
    assert "no policy" in pending.group(0)  # the freshness slot of a guest without a policy
    assert "<section class='card host' data-host='kvm2'>" in page and "connection refused" in page
    assert "data-filter-host='kvm2'" in page and "data-filter-status='drift'" in page


def test_without_an_action_of_its_own_the_last_change_is_the_ownership_records_commit() -> None:
    db = ResourceKey("kvm1", "Guest", "db")
    page = render_status_page(_view(owner_commits={db: "fedcba9876543210"}))
    row = re.search(r"<tr class='obj' data-status='pending-restart'.*?</tr>", page, re.S)
    assert row is not None and "fedcba9876" in row.group(0) and "(ownership record)" in row.group(0)
    web = re.search(r"<tr class='obj' data-status='drift'.*?</tr>", page, re.S)
    assert web is not None and "update" in web.group(0) and "(ownership record)" not in web.group(0)
    bare = re.search(r"<tr class='obj' data-status='pending-restart'.*?</tr>", render_status_page(_view()), re.S)
    assert bare is not None and "none seen" in bare.group(0)


def test_the_latency_chart_draws_one_bar_per_reconcile_and_marks_failures() -> None:
    page = render_status_page(_view())
    svg = re.search(r"<svg .*?</svg>", page, re.S)
    assert svg is not None
    assert svg.group(0).count("<rect class='bar'") == 1 and svg.group(0).count("<rect class='bar err'") == 1
    assert "median" in page and "1 failed" in page
    assert "no reconcile yet" in render_status_page(_view(reconciles=[]))
