"""The monitoring kit under deploy/: alert rules, their promtool tests, the Grafana dashboard,
and a real Prometheus (Debian's package) scraping `virtsync serve` on loopback."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from tests.e2e.service_helpers import ServeProcess, free_port, wait_for
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.ecosystem, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "virtsync-rules.yml"
RULE_TESTS = PROM_DIR / "virtsync-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "virtsync.json"

# PromQL words that are not metric names (functions are told apart by the "(" after them).
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                "bool", "offset", "inf", "nan"}
# What the dashboard's Grafana variables stand for when a query is sent to Prometheus itself.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$job": "virtsync", "$host": ".+"}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/install-system-deps.sh test installs prometheus)")
    return path


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not inside strings,
    label matchers, ranges or grouping clauses, not functions and not keywords."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if not call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def rule_exprs() -> list[tuple[str, str]]:
    doc = YAML(typ="safe").load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"{p['title']} {t['refId']}", t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":  # label_values(METRIC{…}, label)
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", v["definition"])
            assert inner, v["definition"]
            out.append((f"variable {v['name']}", inner.group(1)))
    return out


def exported_names(text: str) -> set[str]:
    """Every sample name /metrics can carry, from its families' types (a labelled family
    without samples yet is still listed with its HELP and TYPE)."""
    names = set()
    for fam in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "summary": ["_sum", "_count", "_created", ""]}.get(fam.type, [""])
        names |= {fam.name + s for s in suffixes}
    return names


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = _need("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in check.stdout
    example = subprocess.run([promtool, "check", "config", "prometheus.example.yml"], cwd=PROM_DIR,
                             capture_output=True, text=True, timeout=60)
    assert example.returncode == 0, example.stdout + example.stderr
    test = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=PROM_DIR, capture_output=True,
                          text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout
    # every alert of the rules has a unit test that expects it to fire
    tests = YAML(typ="safe").load(RULE_TESTS.read_text())["tests"]
    firing = {a["alertname"] for t in tests for a in t["alert_rule_test"] if a.get("exp_alerts")}
    assert {name for name, _ in rule_exprs()} == firing


def test_metric_name_extraction_reads_names_and_skips_functions_labels_and_keywords() -> None:
    expr = ('sum by (host, le) (rate(virtsync_x_bucket{job=~"$job", host="a"}[5m])) / on(host) '
            'virtsync_y > 0 and up unless absent(foo_total offset 5m)')
    assert metric_names(expr) == {"virtsync_x_bucket", "virtsync_y", "up", "foo_total"}


def test_committed_dashboard_is_what_its_generator_writes(tmp_path: Path) -> None:
    out = tmp_path / "virtsync.json"
    made = subprocess.run([sys.executable, str(DASHBOARD.with_name("make_dashboard.py")), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert out.read_text() == DASHBOARD.read_text(), "stale: run python3 deploy/grafana/make_dashboard.py"


def test_dashboard_panels_fit_the_grid_and_use_only_its_own_variables() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in dash["templating"]["list"]}
    builtin = {"__rate_interval", "__range", "__interval"}
    taken: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", t["expr"]))
            assert used <= variables | builtin, (p["title"], used - variables - builtin)
    assert {"fleet", "per host", "actions", "snapshot and backup freshness"} <= {
        p["title"].lower() for p in dash["panels"] if p["type"] == "row"}


def test_snapshot_freshness_series_of_a_guest_no_longer_selected_are_removed() -> None:
    from controller.service.metrics import Metrics

    m = Metrics()
    m.set_snapshot_freshness("kvm1", [("web", "hourly", 1000.0, 3600.0), ("db", "hourly", 0.0, 3600.0)])
    m.set_snapshot_freshness("kvm2", [("cache", "nightly", 5.0, 86400.0)])
    m.set_snapshot_freshness("kvm1", [("web", "hourly", 4600.0, 3600.0)])
    samples = {(s.name, s.labels["host"], s.labels["guest"]): s.value
               for f in text_string_to_metric_families(m.render().decode()) for s in f.samples
               if s.name.startswith("virtsync_snapshot_")}
    assert samples == {
        ("virtsync_snapshot_newest_timestamp_seconds", "kvm1", "web"): 4600.0,
        ("virtsync_snapshot_period_seconds", "kvm1", "web"): 3600.0,
        ("virtsync_snapshot_newest_timestamp_seconds", "kvm2", "cache"): 5.0,
        ("virtsync_snapshot_period_seconds", "kvm2", "cache"): 86400.0,
    }


@pytest.fixture
def test_driver_serve(tmp_path: Path) -> Iterator[ServeProcess]:
    """serve on a test-driver host with a guest under an hourly snapshot policy."""
    (tmp_path / "host.xml").write_text("<node/>\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "test://{tmp_path}/host.xml"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: web, labels: {{backup: hourly}}}}
spec: {{host: lab, state: stopped, memory: 64MiB}}
---
apiVersion: virtsync/v1
kind: SnapshotPolicy
metadata: {{name: hourly}}
spec:
  selector: {{matchLabels: {{backup: hourly}}}}
  schedule: {{every: 1h}}
  retain: {{hourly: 2}}
""")
    svc = ServeProcess([str(specs), "--resync", "10m"], tmp_path / "serve.log")
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def test_every_metric_the_rules_and_the_dashboard_query_is_exported(test_driver_serve: ServeProcess) -> None:
    svc = test_driver_serve
    # the first full pass has run: the per-host series and the snapshot freshness are there
    def metrics() -> str | None:
        text = svc.get("/metrics", raw=True).decode()
        return text if 'virtsync_snapshot_period_seconds{guest="web"' in text else None

    text = wait_for(metrics, 30, "snapshot freshness in /metrics", svc)
    exported = exported_names(text) | {"up"}  # up: Prometheus's own, per scraped target
    used: dict[str, set[str]] = {}
    for where, expr in rule_exprs() + dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for n in names:
            used.setdefault(n, set()).add(where)
    missing = {n: sorted(w) for n, w in used.items() if n not in exported}
    assert not missing, f"queried but not in /metrics: {missing}"
    # the kit covers what it promises
    for name in ("virtsync_drift_objects", "virtsync_host_up", "virtsync_actions_total",
                 "virtsync_reconcile_duration_seconds_bucket", "virtsync_snapshot_newest_timestamp_seconds",
                 "virtsync_snapshot_period_seconds", "virtsync_thrashing_objects", "up",
                 "virtsync_backup_newest_timestamp_seconds", "virtsync_backup_period_seconds",
                 "virtsync_backup_failures_total"):
        assert name in used, name
    # a guest of an hourly policy without any snapshot: newest 0 (critical), period 3600
    samples = {(s.name, s.labels.get("guest"), s.labels.get("policy")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("virtsync_snapshot_newest_timestamp_seconds", "web", "hourly")] == 0
    assert samples[("virtsync_snapshot_period_seconds", "web", "hourly")] == 3600


# ------------------------------------------------------------ a real Prometheus


class Prometheus:
    """Debian's prometheus on loopback with a private config and data dir, stopped by pid."""

    def __init__(self, workdir: Path, target: str):
        self.port = free_port()
        self.dir = workdir
        self.config = workdir / "prometheus.yml"
        self.config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: virtsync
    static_configs:
      - targets: ["{target}"]
""")
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [_need("prometheus"), f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: self._ready(), 30, f"prometheus ready\n{self.log_path}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
            return r.status == 200

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the error in the body
            doc = json.loads(exc.read())
        return doc

    def value(self, query: str) -> float | None:
        doc = self.api("query", query=query)
        assert doc["status"] == "success", doc
        result = doc["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self._log.close()


@pytest.fixture
def served_host(tmp_path: Path, hermetic_host: HermeticHost) -> Iterator[tuple[ServeProcess, HermeticHost]]:
    specs = tmp_path / "specs"
    specs.mkdir()
    # no NIC: the firmware of a diskless guest then idles instead of spinning in iPXE
    (specs / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: mon}}
spec: {{uri: "{hermetic_host.uri}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: web}}
spec: {{host: mon, state: running, memory: 64MiB}}
""")
    # --thrash-limit 1: a second repair within the window is thrashing
    svc = ServeProcess([str(specs), "--resync", "10m", "--thrash-limit", "1"], tmp_path / "serve.log")
    svc.start()
    try:
        wait_for(lambda: svc.objects().get("Guest/web", {}).get("status") == "in-sync", 60, "first convergence", svc)
        yield svc, hermetic_host
    finally:
        svc.stop()


@pytest.fixture
def prometheus(tmp_path: Path, served_host: tuple[ServeProcess, HermeticHost]) -> Iterator[Prometheus]:
    _need("prometheus")
    (tmp_path / "prom").mkdir()
    prom = Prometheus(tmp_path / "prom", f"127.0.0.1:{served_host[0].port}")
    try:
        yield prom.start()
    finally:
        prom.stop()


def _domstate(host: HermeticHost) -> str:
    return host.virsh("domstate", "web").strip()


def test_prometheus_sees_drift_rise_after_an_out_of_band_change_fall_after_the_repair_and_thrashing_alert(
    served_host: tuple[ServeProcess, HermeticHost], prometheus: Prometheus,
) -> None:
    svc, host = served_host
    drift = 'virtsync_drift_objects{job="virtsync", host="mon"}'
    wait_for(lambda: prometheus.value('up{job="virtsync"}') == 1, 30, "up == 1 through Prometheus")
    wait_for(lambda: prometheus.value(drift) == 0, 30, "drift 0 through Prometheus")
    assert prometheus.value('virtsync_host_up{job="virtsync", host="mon"}') == 1

    # Repairs paused (SIGUSR1: suspended, report only), as in a maintenance window: an
    # out-of-band stop stays, and is drift.
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: svc.status()["service"]["suspended"] is True, 10, "suspended", svc)
    host.virsh("destroy", "web")
    wait_for(lambda: prometheus.value(drift) == 1, 30, "drift 1 through Prometheus", svc)
    assert _domstate(host) == "shut off"  # not repaired while suspended
    # the drift alert is pending (it fires after 15 minutes of drift)
    alerts = wait_for(lambda: [a for a in prometheus.api("alerts")["data"]["alerts"]
                               if a["labels"]["alertname"] == "VirtsyncDriftPresent"], 15, "pending drift alert")
    assert alerts[0]["state"] == "pending" and alerts[0]["labels"]["host"] == "mon"

    # Resumed: the service repairs the guest and the metric falls back.
    svc.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: prometheus.value(drift) == 0, 60, "drift back to 0 through Prometheus", svc)
    assert _domstate(host) == "running"
    assert prometheus.value('sum(virtsync_actions_total{job="virtsync", host="mon", op="start"})') >= 1
    # a pending alert whose expression is no longer true is dropped
    wait_for(lambda: not [a for a in prometheus.api("alerts")["data"]["alerts"]
                          if a["labels"]["alertname"] == "VirtsyncDriftPresent"], 15, "drift alert gone")

    # Changed back out of band again: the second repair in the window is thrashing, and its
    # alert (no `for:`) fires.
    host.virsh("destroy", "web")
    thrash = 'virtsync_thrashing_objects{job="virtsync", host="mon"}'
    wait_for(lambda: prometheus.value(thrash) == 1, 30, "thrashing 1 through Prometheus", svc)
    assert _domstate(host) == "running"
    firing = wait_for(lambda: [a for a in prometheus.api("alerts")["data"]["alerts"]
                               if a["labels"]["alertname"] == "VirtsyncThrashing" and a["state"] == "firing"],
                      15, "thrashing alert firing")
    assert firing[0]["labels"]["host"] == "mon" and firing[0]["labels"]["severity"] == "warning"

    # Every rule evaluates against real data without error, and Prometheus accepts every
    # query of the dashboard.
    groups = prometheus.api("rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(rule_exprs())
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    for where, expr in dashboard_exprs():
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        doc = prometheus.api("query", query=expr, time=str(time.time()))
        assert doc["status"] == "success", (where, expr, doc)
    # the latency histogram carries the host label the dashboard's per-host panel groups by
    assert prometheus.value('count(virtsync_reconcile_duration_seconds_count{job="virtsync", host="mon"})')
