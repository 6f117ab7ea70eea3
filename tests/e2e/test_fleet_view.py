"""`virtsync drift --from-agents`: one fleet report merged from the agents' /status, judged like a
local drift (exit 2 on drift, 1 when an agent cannot be read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.hosts.hermetic import HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.service, pytest.mark.timeout(300)]


def test_drift_from_agents_merges_their_reports_and_names_an_agent_that_is_down(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    hosts = {name: hermetic_host_factory(name) for name in ("fa", "fb")}
    specs = tmp_path / "specs"
    specs.mkdir()

    def write(reconcile: str) -> None:
        (specs / "fleet.yaml").write_text("---\n".join(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: g-{name}}}
spec: {{host: {name}, state: stopped, memory: 64MiB, reconcile: {reconcile}}}
""" for name, host in hosts.items()))

    write("enforce")
    ok(virtsync("apply", str(specs), "--yes"))
    write("report")  # the agents only report: a change out of band stays
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-agents\n")
    agents = {name: ServeProcess([str(specs), "--this-host", name, "--token-file", str(token)],
                                 tmp_path / f"{name}.log") for name in hosts}
    try:
        for svc in agents.values():
            svc.start()
        urls = [svc.url for svc in agents.values()]
        last: list[str] = []

        def in_sync() -> bool:
            proc = virtsync("drift", "--from-agents", *urls, "--token-file", str(token))
            last[:] = [proc.stdout + proc.stderr]
            return proc.returncode == 0

        try:
            wait_for(in_sync, 30, "both agents report their host in sync")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast drift:\n{last[0] if last else ''}") from None
        # Out of band, on fb only: report-only, so it stays drifted.
        xml = hosts["fb"].virsh("dumpxml", "--inactive", "g-fb").replace("65536", "98304")
        (tmp_path / "g.xml").write_text(xml)
        hosts["fb"].virsh("define", str(tmp_path / "g.xml"))
        hosts["fb"].virsh("start", "g-fb")  # a lifecycle event: the agent looks again at once
        hosts["fb"].virsh("destroy", "g-fb")

        def drifted() -> dict[str, Any] | None:
            proc = virtsync("drift", "--from-agents", *urls, "--token-file", str(token), "--format", "json")
            return json.loads(proc.stdout) if proc.returncode == 2 else None

        doc = wait_for(drifted, 30, "the merged report shows fb's drift")
        by_host = {h["host"]: h for h in doc["hosts"]}
        assert sorted(by_host) == ["fa", "fb"]
        objs = {o["name"]: o for o in by_host["fb"]["objects"]}
        assert objs["g-fb"]["status"] == "drift"
        assert [c["path"] for c in objs["g-fb"]["changes"]] == ["/spec/memory"]
        text = ok(virtsync("drift", "--from-agents", *urls, "--token-file", str(token)), 2)
        assert "Host fa:" in text and "Host fb:" in text and "DRIFT" in text and "g-fb" in text
        # Without the token the agents refuse: said, and exit 1.
        denied = virtsync("drift", "--from-agents", *urls)
        assert denied.returncode == 1 and "HTTP 401" in denied.stdout and "--token-file" in denied.stdout
        agents["fa"].stop()
        down = virtsync("drift", "--from-agents", *urls, "--token-file", str(token))
        assert down.returncode == 1, down.stdout + down.stderr
        assert f"Host agent {urls[0]}: UNREACHABLE" in down.stdout and "Host fb:" in down.stdout
    finally:
        for svc in agents.values():
            svc.stop()
