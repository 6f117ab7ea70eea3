"""`virtsync serve` with a kind: Secret: the console password reaches the guest's definition and a
changed Secret file is applied, while /status, the metrics and the service's log hold only its
digest. The libvirt test driver is enough here (the service's own process keeps its state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.service_helpers import ServeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.service]

FIRST = "first-Pa55-c0nsole"
SECOND = "second-Pa55-c0nsole"


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "host.xml").write_text("<node></node>\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "console.secret").write_text(FIRST + "\n")
    (specs / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "test://{tmp_path}/host.xml"}}
---
apiVersion: virtsync/v1
kind: Secret
metadata: {{name: console}}
spec: {{fromFile: console.secret}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: desk}}
spec:
  host: lab
  state: stopped
  memory: 64MiB
  graphics: {{type: vnc, passwordSecretRef: console}}
""")
    return specs


def test_a_secret_applied_by_the_service_is_in_no_status_metric_or_log(tmp_path: Path) -> None:
    specs = _tree(tmp_path)
    svc = ServeProcess([str(specs), "--resync", "1h"], tmp_path / "serve.log").start()
    try:
        wait_for(lambda: svc.objects().get("Guest/desk", {}).get("status") == "in-sync", 20, "the guest defined", svc)
        (specs / "console.secret").write_text(SECOND + "\n")  # a file edit: the service reacts to it
        wait_for(lambda: "update" in svc.logs() and svc.objects()["Guest/desk"]["status"] == "in-sync", 20,
                 "the new password applied", svc)
        seen = str(svc.get("/status")) + svc.logs() + (svc.get("/metrics", raw=True) or b"").decode()
        updates = [e for e in svc.log_events() if e.get("event") == "action" and e.get("name") == "desk"
                   and e.get("op") == "update"]
        assert updates, "a new value in the Secret's file alone is a change of the guest"
        for value in (FIRST, SECOND):
            assert value not in seen, "no value in /status, /metrics or the log"
    finally:
        svc.stop()
