"""`virtsync serve` on real libvirtd hosts: files, git, events, faults, status."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service_helpers import NotificationSink, ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.service, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"


def write_specs(d: Path, uri: str, web_memory: str = "96MiB", extra: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "host.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: svc}}
spec: {{uri: "{uri}"}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: svcnet}}
spec:
  host: svc
  mode: nat
  bridge: virbr-svc
  ipv4:
    address: 192.168.200.1/24
    dhcp: {{start: 192.168.200.10, end: 192.168.200.99}}
""")
    (d / "guests.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: web}}
spec:
  host: svc
  state: running
  memory: {web_memory}
  maxMemory: 256MiB
  interfaces: [{{network: svcnet, mac: "52:54:00:20:00:01", bootRom: false}}]
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: watched}}
spec:
  host: svc
  state: running
  memory: 64MiB
  reconcile: report
{extra}""")
    return d


@pytest.fixture
def sink() -> Iterator[NotificationSink]:
    s = NotificationSink()
    yield s
    s.close()


@pytest.fixture
def serve_files(tmp_path: Path, hermetic_host: HermeticHost, sink: NotificationSink
                ) -> Iterator[tuple[ServeProcess, Path, HermeticHost]]:
    specs = write_specs(tmp_path / "specs", hermetic_host.uri)
    svc = ServeProcess([str(specs), "--notify", sink.url, "--resync", "10m"], tmp_path / "serve.log")
    svc.start()
    try:
        wait_for(lambda: svc.objects().get("Guest/web", {}).get("status") == "in-sync", 60,
                 "first convergence", svc)
        yield svc, specs, hermetic_host
    finally:
        svc.stop()


def _domstate(host: HermeticHost, name: str) -> str:
    return host.virsh("domstate", name).strip()


def test_editing_a_spec_file_converges_the_host(serve_files: tuple[ServeProcess, Path, HermeticHost]) -> None:
    svc, specs, host = serve_files
    assert _domstate(host, "web") == "running"
    # the report-only guest was never created: it only shows up as missing
    assert svc.objects()["Guest/watched"]["status"] == "missing"
    assert "watched" not in host.virsh("list", "--all", "--name").split()
    # an editor saving by rename
    tmp = specs / ".guests.yaml.swp"
    tmp.write_text((specs / "guests.yaml").read_text().replace("memory: 96MiB", "memory: 128MiB"))
    tmp.rename(specs / "guests.yaml")
    wait_for(lambda: "131072" in host.virsh("dumpxml", "--inactive", "web"), 10, "memory applied", svc)
    actions = wait_for(lambda: [e for e in svc.log_events() if e.get("event") == "action" and e.get("op") == "update"],
                       10, "the update's log line", svc)
    assert {"host", "kind", "name", "op", "outcome", "seconds", "reconcile_id", "commit"} <= set(actions[-1])


def test_destroyed_guest_is_started_again_and_report_guest_only_shows_drift(
    serve_files: tuple[ServeProcess, Path, HermeticHost], sink: NotificationSink,
) -> None:
    svc, specs, host = serve_files
    host.virsh("destroy", "web")
    wait_for(lambda: _domstate(host, "web") == "running", 10, "web running again", svc)
    # a report-only guest that exists and is stopped out of band: drift, never touched
    xml = specs.parent / "watched.xml"
    xml.write_text("<domain type='qemu'><name>watched</name><memory unit='MiB'>64</memory>"
                   "<os><type>hvm</type></os></domain>")
    host.virsh("define", str(xml))
    (specs / "guests.yaml").write_text((specs / "guests.yaml").read_text() + "  adopt: true\n")
    wait_for(lambda: svc.objects()["Guest/watched"]["status"] == "drift", 10, "report drift", svc)
    time.sleep(1.5)
    assert _domstate(host, "watched") == "shut off"
    changes = svc.objects()["Guest/watched"]["changes"]
    assert any(c["path"] == "/spec/state" and c["desired"] == "running" for c in changes)
    wait_for(lambda: "drift" in sink.events(), 5, "drift notification", svc)
    assert all("text" in m for m in sink.messages)


def test_bad_spec_changes_nothing_and_is_reported(
    serve_files: tuple[ServeProcess, Path, HermeticHost], sink: NotificationSink,
) -> None:
    svc, specs, host = serve_files
    before = host.virsh("dumpxml", "--inactive", "web")
    text = (specs / "guests.yaml").read_text()
    (specs / "guests.yaml").write_text(text.replace("memory: 96MiB", "memory: 200MiB")
                                       .replace("memory: 64MiB", "memory: lots"))
    wait_for(lambda: svc.status()["service"]["specError"], 10, "spec error in /status", svc)
    err = svc.status()["service"]["specError"]
    assert any("guests.yaml" in d["file"] and d["line"] > 0 and "memory" in d["message"]
               for d in err["diagnostics"])
    wait_for(lambda: "invalid-specs" in sink.events(), 5, "notification", svc)
    wait_for(lambda: any(e.get("event") == "invalid specs" for e in svc.log_events()), 10, "the log line", svc)
    time.sleep(1)
    assert host.virsh("dumpxml", "--inactive", "web") == before  # nothing of it applied
    host.virsh("destroy", "web")  # the last good specs stay in force
    wait_for(lambda: _domstate(host, "web") == "running", 10, "web running again", svc)
    assert "98304" in host.virsh("dumpxml", "--inactive", "web")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                          "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                                          "PATH": "/usr/bin:/bin", "HOME": str(repo)}).stdout.strip()


def test_following_a_git_branch_applies_good_commits_only(
    tmp_path: Path, hermetic_host: HermeticHost, sink: NotificationSink,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    write_specs(repo / "specs", hermetic_host.uri)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    svc = ServeProcess(["--git", str(repo), "--branch", "main", "--git-path", "specs",
                        "--git-interval", "1h", "--hook-secret-file", str(secret),
                        "--cache-dir", str(tmp_path / "cache"), "--notify", sink.url],
                       tmp_path / "serve.log")
    svc.start()
    try:
        first = _git(repo, "rev-parse", "HEAD")
        wait_for(lambda: svc.objects().get("Guest/web", {}).get("status") == "in-sync", 60, "sync", svc)
        assert svc.status()["commit"] == first
        assert f'commit="{first}"' in hermetic_host.virsh("dumpxml", "--inactive", "web")

        def poke() -> int:
            import urllib.request

            req = urllib.request.Request(svc.url + "/hooks/git", data=b"{}", method="POST",
                                         headers={"X-Virtsync-Secret": "s3cret"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)

        write_specs(repo / "specs", hermetic_host.uri, web_memory="112MiB")
        _git(repo, "commit", "-q", "-am", "more memory")
        good = _git(repo, "rev-parse", "HEAD")
        assert poke() == 202
        wait_for(lambda: "114688" in hermetic_host.virsh("dumpxml", "--inactive", "web"), 15, "new commit", svc)
        assert svc.status()["commit"] == good
        # a bad commit: reported with file:line and commit; nothing of it applied
        text = (repo / "specs" / "guests.yaml").read_text()
        (repo / "specs" / "guests.yaml").write_text(text.replace("memory: 112MiB", "memory: 160MiB")
                                                    .replace("state: running\n  memory: 64MiB",
                                                             "state: runing\n  memory: 64MiB"))
        _git(repo, "commit", "-q", "-am", "typo")
        bad = _git(repo, "rev-parse", "HEAD")
        assert poke() == 202
        wait_for(lambda: (svc.status()["service"]["specError"] or {}).get("commit") == bad, 15, "error", svc)
        diag = svc.status()["service"]["specError"]["diagnostics"][0]
        assert diag["file"].endswith("guests.yaml") and diag["line"] > 1 and "running" in diag["message"]
        time.sleep(1)
        assert "114688" in hermetic_host.virsh("dumpxml", "--inactive", "web")
        assert svc.status()["commit"] == good
        assert "invalid-specs" in sink.events()
        # a force-push replaces the branch: followed, not merged
        _git(repo, "reset", "-q", "--hard", first)
        write_specs(repo / "specs", hermetic_host.uri, web_memory="80MiB")
        _git(repo, "commit", "-q", "-am", "rewritten history")
        forced = _git(repo, "rev-parse", "HEAD")
        assert poke() == 202
        wait_for(lambda: "81920" in hermetic_host.virsh("dumpxml", "--inactive", "web"), 15, "force-push", svc)
        assert svc.status()["commit"] == forced
        # the hook wants the secret
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(urllib.request.Request(svc.url + "/hooks/git", data=b"", method="POST"))
        assert denied.value.code == 401  # no signature, no X-Virtsync-Secret
    finally:
        svc.stop()


def test_libvirtd_restart_is_survived_and_reconverged(
    serve_files: tuple[ServeProcess, Path, HermeticHost],
) -> None:
    svc, specs, host = serve_files
    host.kill_libvirtd()
    (specs / "guests.yaml").write_text((specs / "guests.yaml").read_text().replace("memory: 96MiB", "memory: 120MiB"))
    wait_for(lambda: svc.status()["hosts"][0]["error"], 30, "host shown unreachable", svc)
    host.restart_libvirtd()
    wait_for(lambda: "122880" in host.virsh("dumpxml", "--inactive", "web"), 60, "converged after restart", svc)
    host.virsh("destroy", "web")  # events flow again on the new connection
    wait_for(lambda: _domstate(host, "web") == "running", 15, "web restarted", svc)


@pytest.mark.parametrize("boundary", ["define-network", "define", "start"])
def test_kill_9_mid_apply_then_restart_converges_without_duplicates(
    boundary: str, tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    specs = write_specs(tmp_path / "specs", hermetic_host.uri)
    svc = ServeProcess([str(specs)], tmp_path / "serve.log")
    svc.start(extra_env={"VIRTSYNC_TEST_DIE_AFTER": boundary})
    assert svc.proc is not None
    svc.proc.wait(60)
    assert svc.proc.returncode == 137, svc.logs()[-3000:]
    svc.stop()
    svc.start()
    try:
        wait_for(lambda: svc.objects().get("Guest/web", {}).get("status") == "in-sync"
                 and svc.objects().get("Network/svcnet", {}).get("status") == "in-sync", 60,
                 "converged after the crash", svc)
        assert host_names(hermetic_host) == ["web"]
        assert hermetic_host.virsh("net-list", "--all", "--name").split() == ["svcnet"]
        assert _domstate(hermetic_host, "web") == "running"
    finally:
        svc.stop()


def host_names(host: HermeticHost) -> list[str]:
    return sorted(host.virsh("list", "--all", "--name").split())


def test_sigterm_exits_cleanly_and_sighup_reloads(
    serve_files: tuple[ServeProcess, Path, HermeticHost],
) -> None:
    svc, _specs, _host = serve_files
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any("SIGHUP" in (e.get("reason") or "") for e in svc.log_events()), 10, "reload", svc)
    assert svc.stop(signal.SIGTERM) == 0


def test_metrics_and_health_endpoints(serve_files: tuple[ServeProcess, Path, HermeticHost]) -> None:
    svc, _, _ = serve_files
    assert svc.get("/healthz", raw=True) == b"ok\n"
    assert svc.get("/readyz", raw=True) == b"ready\n"
    text = svc.get("/metrics", raw=True).decode()
    for name in ("virtsync_reconcile_duration_seconds_bucket", "virtsync_actions_total",
                 'virtsync_drift_objects{host="svc"}', "virtsync_queue_depth",
                 'virtsync_last_successful_sync_timestamp_seconds{host="svc"}'):
        assert name in text, name
    assert re.search(r'virtsync_actions_total\{.*op="start".*\} [1-9]', text)


def test_status_page_renders_in_headless_chromium(serve_files: tuple[ServeProcess, Path, HermeticHost]) -> None:
    svc, _, _ = serve_files
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is missing (scripts/install-system-deps.sh installs it)"
    wait_for(lambda: svc.objects()["Guest/watched"]["status"] == "missing", 10, "drift", svc)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    profile = svc.log_path.parent / "chromium-profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", svc.url + "/"], capture_output=True,
                         text=True, timeout=90)
    assert "Guest <code>watched</code>" in dom.stdout and "missing" in dom.stdout, dom.stderr[-2000:]
    assert "http://" not in dom.stdout.split("<body>")[0].replace(svc.url, "")  # nothing from outside
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,900", svc.url + "/"],
                   capture_output=True, timeout=90)
    assert shot.is_file() and shot.stat().st_size > 5000
    json.loads(json.dumps(svc.status()))


def test_an_object_changed_back_again_and_again_is_reported_and_left_alone(
    tmp_path: Path, hermetic_host: HermeticHost, sink: NotificationSink,
) -> None:
    specs = write_specs(tmp_path / "specs", hermetic_host.uri)
    svc = ServeProcess([str(specs), "--thrash-limit", "2", "--thrash-window", "2m", "--notify", sink.url],
                       tmp_path / "serve.log").start()
    try:
        wait_for(lambda: svc.objects().get("Guest/web", {}).get("status") == "in-sync", 60, "sync", svc)

        def starts() -> int:
            return sum(a["name"] == "web" and a["op"] == "start" for a in svc.status()["service"]["recentActions"])

        for n in range(starts() + 1, starts() + 4):
            hermetic_host.virsh("destroy", "web")
            # The next destroy waits for the repair's reconcile to end (it is recorded after its
            # re-observation): a destroy before that re-observation makes the repair not stick.
            wait_for(lambda n=n: starts() >= n and _domstate(hermetic_host, "web") == "running", 15, "repaired", svc)
        wait_for(lambda: "thrashing" in sink.events(), 10, "thrashing notification", svc)
        hermetic_host.virsh("destroy", "web")
        time.sleep(3)
        assert _domstate(hermetic_host, "web") == "shut off", "a thrashing guest must be left alone"
        events = [e["message"] for e in svc.status()["service"]["recentEvents"]]
        assert any("changed back out of band more than 2 times" in m for m in events)
    finally:
        svc.stop()


def test_the_service_runs_snapshot_policies(tmp_path: Path, hermetic_host: HermeticHost) -> None:
    specs = write_specs(tmp_path / "specs", hermetic_host.uri)
    (specs / "snap.yaml").write_text("""apiVersion: virtsync/v1
kind: StoragePool
metadata: {name: svcpool}
spec: {host: svc, path: /var/lib/libvirt/images/svcpool}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {name: snapped, labels: {backup: "yes"}}
spec:
  host: svc
  state: stopped
  memory: 64MiB
  disks: [{name: root, pool: svcpool, size: 32MiB}]
---
apiVersion: virtsync/v1
kind: SnapshotPolicy
metadata: {name: often}
spec:
  selector: {matchLabels: {backup: "yes"}}
  schedule: {every: 1h}
  retain: {hourly: 2}
""")
    svc = ServeProcess([str(specs), "--snapshot-interval", "2s"], tmp_path / "serve.log").start()
    try:
        wait_for(lambda: hermetic_host.virsh("snapshot-list", "snapped", "--name").strip().startswith("vs-often-"),
                 30, "a snapshot taken by the service", svc)
        wait_for(lambda: any(e.get("event") == "snapshot" and e.get("outcome") == "took" for e in svc.log_events()),
                 10, "the snapshot's log line", svc)  # logged once the whole pass is done
        # /status shows the newest snapshot's freshness per guest and policy
        info = wait_for(lambda: svc.objects()["Guest/snapped"].get("info", {}).get("snapshots"), 10, "freshness", svc)
        assert info[0]["policy"] == "often" and info[0]["status"] in ("ok", "critical")
    finally:
        svc.stop()
