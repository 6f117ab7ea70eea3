"""Prometheus metrics of the service (a private registry, served at /metrics).

deploy/prometheus and deploy/grafana query these names: tests check that each one they use
is exported here, so rename one only together with the kit."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram(
            "virtsync_reconcile_duration_seconds", "Time of one reconcile", ["host", "kind"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.actions = Counter("virtsync_actions_total", "Actions carried out",
                               ["host", "kind", "op", "outcome"], registry=r)
        self.drift = Gauge("virtsync_drift_objects", "Objects drifting from the specs", ["host"],
                           registry=r)
        self.queue_depth = Gauge("virtsync_queue_depth", "Keys waiting in the work queue", registry=r)
        self.last_sync = Gauge("virtsync_last_successful_sync_timestamp_seconds",
                               "When a host was last fully reconciled", ["host"], registry=r)
        self.errors = Counter("virtsync_errors_total", "Reconcile errors", ["host", "kind"], registry=r)
        self.spec_errors = Counter("virtsync_spec_load_errors_total", "Spec sets refused", registry=r)
        self.up = Gauge("virtsync_host_up", "Host reachable (1) or not (0)", ["host"], registry=r)
        self.replica_hosts = Gauge("virtsync_replica_hosts", "Hosts this serve replica holds (--replica-id)",
                                   ["replica"], registry=r)
        self.thrashing = Gauge("virtsync_thrashing_objects",
                               "Objects backing off because they were changed back out of band again and again",
                               ["host"], registry=r)
        # Freshness as raw times, so alert rules compare against the clock at evaluation and
        # not at the last reconcile: stale from 1.5 periods (warning), 3 (critical), as `drift`.
        self.snapshot_newest = Gauge("virtsync_snapshot_newest_timestamp_seconds",
                                     "When a policy's newest snapshot of a guest was taken (0: none)",
                                     ["host", "guest", "policy"], registry=r)
        self.snapshot_period = Gauge("virtsync_snapshot_period_seconds",
                                     "The snapshot policy's schedule period", ["host", "guest", "policy"],
                                     registry=r)
        self._snapshot_series: dict[str, set[tuple[str, str]]] = {}
        self.backup_newest = Gauge("virtsync_backup_newest_timestamp_seconds",
                                   "When a backup policy's newest backup of a guest was taken (0: none)",
                                   ["host", "guest", "policy"], registry=r)
        self.backup_period = Gauge("virtsync_backup_period_seconds",
                                   "The backup policy's schedule period", ["host", "guest", "policy"], registry=r)
        self.backup_failures = Counter("virtsync_backup_failures_total", "Backups that failed",
                                       ["host", "guest", "policy"], registry=r)
        self._backup_series: dict[str, set[tuple[str, str]]] = {}
        self._before_render: list[Callable[[], None]] = []

    def set_snapshot_freshness(self, host: str, rows: Iterable[tuple[str, str, float, float]]) -> None:
        """A host's (guest, policy, newest timestamp or 0, period) rows; series of guests or
        policies no longer there are removed, so no alert fires for what is gone."""
        _set_freshness(self.snapshot_newest, self.snapshot_period, self._snapshot_series, host, rows)

    def set_backup_freshness(self, host: str, rows: Iterable[tuple[str, str, float, float]]) -> None:
        """The same rows for backup policies (virtsync_backup_*)."""
        _set_freshness(self.backup_newest, self.backup_period, self._backup_series, host, rows)

    def before_render(self, fn: Callable[[], None]) -> None:
        """Refresh a value that changes with time alone (a back-off ending) right before a scrape."""
        self._before_render.append(fn)

    def render(self) -> bytes:
        for fn in self._before_render:
            fn()
        return bytes(generate_latest(self.registry))


def _set_freshness(newest_gauge: Gauge, period_gauge: Gauge, series: dict[str, set[tuple[str, str]]], host: str,
                   rows: Iterable[tuple[str, str, float, float]]) -> None:
    now: set[tuple[str, str]] = set()
    for guest, policy, newest, period in rows:
        newest_gauge.labels(host, guest, policy).set(newest)
        period_gauge.labels(host, guest, policy).set(period)
        now.add((guest, policy))
    for guest, policy in series.get(host, set()) - now:
        newest_gauge.remove(host, guest, policy)
        period_gauge.remove(host, guest, policy)
    series[host] = now
