"""`serve`'s light resync reads over a connection of its own: a pass (one long call, see
service/resync.py) neither waits for the reconciles' calls on the host's first connection nor
holds them up (issue 17: at 1,000 guests a pass under load stalled every repair on the host)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from controller.hypervisor.events import start_event_loop
from controller.service.runner import Service, ServiceOptions
from controller.spec.loader import load_specs
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.service, pytest.mark.timeout(120)]


def test_a_light_resync_pass_does_not_wait_for_a_call_on_the_reconciles_connection(
        hermetic_host: HermeticHost, tmp_path: Path) -> None:
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / "specs.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lane}}
spec: {{uri: "{hermetic_host.uri}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: quiet}}
spec: {{host: lane, state: stopped, memory: 32MiB}}
""")
    specs = load_specs([specs_dir]).raise_for_errors()
    raw = hermetic_host.connect()
    try:  # a domain for the pass to fingerprint
        raw.defineXML("<domain type='qemu'><name>quiet</name><memory unit='MiB'>32</memory>"
                      "<os><type>hvm</type></os></domain>")
    finally:
        raw.close()
    start_event_loop()
    svc = Service(ServiceOptions(paths=[str(specs_dir)], coordination=f"file://{tmp_path / 'coord'}"))
    host = specs.hosts[0]
    conn = svc.engine.connection(host)
    try:
        svc.light.run_pass(specs, lambda _name: True)  # opens its connection; learns only
        reconciles = conn.get()  # lane 0: the reconciles' and the events' connection
        # A reconcile's call in progress on lane 0 (calls on one connection take turns).
        busy = threading.Thread(target=reconciles._runner.call, args=("a reconcile's call", time.sleep, 3.0))
        busy.start()
        time.sleep(0.2)
        started = time.monotonic()
        svc.light.run_pass(specs, lambda _name: True)
        took = time.monotonic() - started
        busy.join()
    finally:
        conn.close()
        svc.locks.close()
    assert svc.light.stats.error == ""
    assert svc.light.stats.objects >= 1  # the domain was fingerprinted
    assert took < 1.5, f"the pass waited {took:.1f}s for the reconciles' call"
