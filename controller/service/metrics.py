"""Prometheus metrics of the service (a private registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram(
            "virtsync_reconcile_duration_seconds", "Time of one reconcile", ["kind"], registry=r,
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

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
