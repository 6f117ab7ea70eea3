"""Writes virtsync.json, the Grafana dashboard of the monitoring kit, beside this file.

Edit the panels here and run `python3 deploy/grafana/make_dashboard.py`; a test checks that the
committed JSON is what this writes, that every query's metrics exist in /metrics, and runs every
query through a real Prometheus. Stdlib only."""
# ruff: noqa: E501  (PromQL queries read best on one line)

import json
import sys
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
J = 'job=~"$job"'
H = 'job=~"$job", host=~"$host"'
panels = []
pid = [0]
def nid():
    pid[0] += 1
    return pid[0]
def row(title, y):
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
def target(expr, legend="", ref="A", instant=False, fmt=None):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t["instant"] = True
        t["range"] = False
    if fmt:
        t["format"] = fmt
    return t
def stat(title, expr, x, y, w=4, unit="none", thresholds=None, desc="", mappings=None):
    p = {"type": "stat", "title": title, "id": nid(), "datasource": DS, "description": desc,
         "gridPos": {"h": 4, "w": w, "x": x, "y": y},
         "targets": [target(expr, instant=True)],
         "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "colorMode": "background", "graphMode": "none", "textMode": "value"},
         "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                      "thresholds": {"mode": "absolute", "steps": thresholds or [
                                          {"color": "green", "value": None}]}}, "overrides": []}}
    panels.append(p)
def ts(title, targets, x, y, w=12, h=8, unit="none", desc="", stack=False, draw="line"):
    panels.append({"type": "timeseries", "title": title, "id": nid(), "datasource": DS, "description": desc,
                   "gridPos": {"h": h, "w": w, "x": x, "y": y}, "targets": targets,
                   "fieldConfig": {"defaults": {"unit": unit, "custom": {
                       "drawStyle": draw, "fillOpacity": 20 if stack else 0,
                       "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}, "overrides": []},
                   "options": {"legend": {"displayMode": "table", "placement": "right",
                                          "calcs": ["lastNotNull", "max"]},
                               "tooltip": {"mode": "multi", "sort": "desc"}}})
GREEN = {"color": "green", "value": None}
y = 0
row("Fleet", y)
y += 1
stat("Service up", f'min(up{{{J}}})', 0, y, desc="Every virtsync target answers its scrape (1) or not (0).",
     thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
     mappings=[{"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}])
stat("Hosts reachable", f'sum(virtsync_host_up{{{H}}})', 4, y, desc="libvirt hosts the service can reach.")
stat("Hosts unreachable", f'count(virtsync_host_up{{{H}}} == 0) or vector(0)', 8, y,
     thresholds=[GREEN, {"color": "red", "value": 1}])
stat("Drifting objects", f'sum(virtsync_drift_objects{{{H}}}) or vector(0)', 12, y,
     desc="Objects whose hosts differ from the specs (drift, missing, extra or failed).",
     thresholds=[GREEN, {"color": "orange", "value": 1}])
stat("Work queue", f'sum(virtsync_queue_depth{{{J}}})', 16, y, desc="Keys waiting to be reconciled.",
     thresholds=[GREEN, {"color": "orange", "value": 20}])
stat("Specs refused (24h)", f'sum(increase(virtsync_spec_load_errors_total{{{J}}}[24h]))', 20, y,
     desc="Invalid or untrusted spec sets; the last good ones stay in force.",
     thresholds=[GREEN, {"color": "orange", "value": 1}])
y += 4
stat("Thrashing objects", f'sum(virtsync_thrashing_objects{{{H}}}) or vector(0)', 0, y,
     desc="Objects changed back out of band again and again: virtsync backs off.",
     thresholds=[GREEN, {"color": "red", "value": 1}])
stat("Oldest full sync", f'max(time() - virtsync_last_successful_sync_timestamp_seconds{{{H}}})', 4, y,
     unit="s", desc="Age of the oldest last full reconcile among the hosts.",
     thresholds=[GREEN, {"color": "orange", "value": 1800}, {"color": "red", "value": 3600}])
stat("Failed actions (24h)", f'sum(increase(virtsync_actions_total{{{H}, outcome="failed"}}[24h])) or vector(0)',
     8, y, thresholds=[GREEN, {"color": "red", "value": 1}])
stat("Reconcile errors (1h)", f'sum(increase(virtsync_errors_total{{{H}}}[1h])) or vector(0)', 12, y,
     thresholds=[GREEN, {"color": "orange", "value": 1}])
stat("Stale snapshots", f'count((time() - virtsync_snapshot_newest_timestamp_seconds{{{H}}}) / '
     f'virtsync_snapshot_period_seconds{{{H}}} >= 1.5) or vector(0)', 16, y,
     desc="Guest × policy pairs whose newest snapshot is 1.5 schedule periods old or older (or missing).",
     thresholds=[GREEN, {"color": "orange", "value": 1}])
stat("Stale backups", f'count((time() - virtsync_backup_newest_timestamp_seconds{{{H}}}) / '
     f'virtsync_backup_period_seconds{{{H}}} >= 1.5) or vector(0)', 20, y,
     desc="Guest × backup policy pairs whose newest backup is 1.5 schedule periods old or older (or missing).",
     thresholds=[GREEN, {"color": "orange", "value": 1}])
y += 4
row("Per host", y)
y += 1
ts("Drifting objects by host", [target(f'virtsync_drift_objects{{{H}}}', "{{host}}")], 0, y,
   desc="From virtsync_drift_objects: drift, missing, extra or failed objects.")
ts("Host reachable", [target(f'virtsync_host_up{{{H}}}', "{{host}}")], 12, y,
   desc="1: the service reaches the host's libvirt; 0: it does not.")
y += 8
ts("Reconcile latency p95 by host", [target(
    f'histogram_quantile(0.95, sum by (le, host) (rate(virtsync_reconcile_duration_seconds_bucket{{{H}}}[$__rate_interval])))',
    "{{host}}")], 0, y, unit="s")
ts("Reconcile latency by kind", [
    target(f'histogram_quantile(0.5, sum by (le, kind) (rate(virtsync_reconcile_duration_seconds_bucket{{{H}}}[$__rate_interval])))', "p50 {{kind}}", "A"),
    target(f'histogram_quantile(0.95, sum by (le, kind) (rate(virtsync_reconcile_duration_seconds_bucket{{{H}}}[$__rate_interval])))', "p95 {{kind}}", "B"),
    target(f'sum by (kind) (rate(virtsync_reconcile_duration_seconds_sum{{{H}}}[$__rate_interval])) / '
           f'sum by (kind) (rate(virtsync_reconcile_duration_seconds_count{{{H}}}[$__rate_interval]))', "mean {{kind}}", "C"),
], 12, y, unit="s")
y += 8
ts("Time since last full sync", [target(f'time() - virtsync_last_successful_sync_timestamp_seconds{{{H}}}', "{{host}}")],
   0, y, unit="s")
ts("Reconcile errors by host", [target(f'sum by (host, kind) (increase(virtsync_errors_total{{{H}}}[$__rate_interval]))',
                                      "{{host}} {{kind}}")], 12, y, draw="bars", stack=True)
y += 8
row("Actions", y)
y += 1
ts("Actions by outcome", [target(f'sum by (outcome) (increase(virtsync_actions_total{{{H}}}[$__rate_interval]))',
                                 "{{outcome}}")], 0, y, draw="bars", stack=True,
   desc="created, updated, deleted, skipped, failed.")
ts("Actions by host and operation", [target(
    f'sum by (host, op) (increase(virtsync_actions_total{{{H}}}[$__rate_interval]))', "{{host}} {{op}}")],
   12, y, draw="bars", stack=True)
y += 8
panels.append({"type": "table", "title": "Failed actions (range)", "id": nid(), "datasource": DS,
               "gridPos": {"h": 7, "w": 24, "x": 0, "y": y},
               "targets": [target(f'sum by (host, kind, op) (increase(virtsync_actions_total{{{H}, outcome="failed"}}[$__range])) > 0',
                                  instant=True, fmt="table")],
               "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
               "fieldConfig": {"defaults": {}, "overrides": []}, "options": {"showHeader": True}})
y += 7
row("Snapshot and backup freshness", y)
y += 1
def freshness_table(title, kind, x):
    newest, period = f"virtsync_{kind}_newest_timestamp_seconds", f"virtsync_{kind}_period_seconds"
    panels.append({"type": "table", "title": title, "id": nid(), "datasource": DS,
                   "description": f"Age of the newest {kind} in schedule periods: warning from 1.5, critical from 3 "
                                  f"(as `virtsync drift`); a guest without any {kind} of the policy counts as critical.",
                   "gridPos": {"h": 9, "w": 12, "x": x, "y": y},
                   "targets": [
                       target(f'(time() - {newest}{{{H}}}) / {period}{{{H}}}', "", "A", instant=True, fmt="table"),
                       target(f'time() - {newest}{{{H}}} > 0 and {newest}{{{H}}} > 0', "", "B", instant=True,
                              fmt="table")],
                   "transformations": [{"id": "merge", "options": {}},
                                       {"id": "organize", "options": {
                                           "excludeByName": {"Time": True, "job": True, "instance": True},
                                           "renameByName": {"Value #A": "periods old", "Value #B": "age"}}}],
                   "fieldConfig": {"defaults": {}, "overrides": [
                       {"matcher": {"id": "byName", "options": "periods old"}, "properties": [
                           {"id": "decimals", "value": 1},
                           {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                           {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                               GREEN, {"color": "orange", "value": 1.5}, {"color": "red", "value": 3}]}}]},
                       {"matcher": {"id": "byName", "options": "age"}, "properties": [{"id": "unit", "value": "s"}]}]},
                   "options": {"showHeader": True, "sortBy": [{"displayName": "periods old", "desc": True}]}})
freshness_table("Newest snapshot per guest and policy", "snapshot", 0)
freshness_table("Newest backup per guest and policy", "backup", 12)
y += 9
ts("Failed backups", [target(f'sum by (host, guest, policy) (increase(virtsync_backup_failures_total{{{H}}}[$__rate_interval]))',
                             "{{host}} {{guest}} {{policy}}")], 0, y, w=24, h=6, draw="bars", stack=True,
   desc="Backups that failed (each is retried with back-off and alerts).")
y += 6
dash = {
    "title": "virtsync", "uid": "virtsync-fleet", "tags": ["virtsync", "libvirt", "gitops"],
    "description": "virtsync serve: fleet overview, per-host drift and reconcile latency, actions by outcome, "
                   "snapshot and backup freshness, failed backups. Every query uses metrics of virtsync's /metrics.",
    "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"}, "timezone": "",
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                  "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1},
        {"name": "job", "label": "Job", "type": "query", "datasource": DS,
         "query": {"query": "label_values(virtsync_queue_depth, job)", "refId": "job"},
         "definition": "label_values(virtsync_queue_depth, job)", "refresh": 2, "includeAll": True,
         "multi": True, "allValue": ".+", "current": {}, "sort": 1},
        {"name": "host", "label": "Host", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(virtsync_host_up{job=~"$job"}, host)', "refId": "host"},
         "definition": 'label_values(virtsync_host_up{job=~"$job"}, host)', "refresh": 2, "includeAll": True,
         "multi": True, "allValue": ".+", "current": {}, "sort": 1}]},
    "annotations": {"list": []},
    "links": [],
    "panels": panels,
}

def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("virtsync.json")
    out.write_text(json.dumps(dash, indent=2) + "\n")


if __name__ == "__main__":
    main()
