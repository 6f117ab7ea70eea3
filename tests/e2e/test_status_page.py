"""The status page of `virtsync serve` in headless Chromium, driven over the DevTools protocol.

`virtsync serve` (with a bearer token) runs a real libvirtd host and a test-driver host; one guest
is changed out of band and left drifting (its spec says `reconcile: report`). Chromium, started
and stopped by this test, loads the page with the token, and the test reads the rendered DOM,
clicks the host and status filters with real mouse events, waits for the page's own refresh,
switches to dark mode, and saves screenshots at a desktop width (1280) and a phone width (390)
under artifacts/. Every request the browser made must have gone to the service itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket  # websocket-client (the dev extras): the DevTools protocol's transport

from tests.e2e.service_helpers import ROOT, ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.ecosystem, pytest.mark.timeout(120)]
ARTIFACTS = ROOT / "artifacts"
TOKEN = "st4tus-page-t0ken"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class TokenServe(ServeProcess):
    """serve with --token-file: every request but /healthz carries the bearer token."""

    def get(self, path: str, raw: bool = False) -> Any:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                body = resp.read()
        except OSError:
            return None
        return body if raw else json.loads(body)


class DevTools:
    """A small Chrome DevTools Protocol client: one browser websocket, one page session."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.seq = 0
        self.session = ""
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> Any:
        self.seq += 1
        msg: dict[str, Any] = {"id": self.seq, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.seq:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 browser=True)["sessionId"]

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")

    def wait_js(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except AssertionError:  # the page is between documents (navigating)
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} ({expression})")

    def viewport(self, width: int, height: int, *, mobile: bool) -> None:
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": mobile})

    def click(self, selector: str) -> None:
        """A real left click (pointer events from the browser's input pipeline) at the element's centre."""
        box = self.js(f"(function(){{var el=document.querySelector({json.dumps(selector)});"
                      "if(!el){return null;}el.scrollIntoView({block:'center'});var r=el.getBoundingClientRect();"
                      "return [r.left+r.width/2, r.top+r.height/2];})()")
        assert box, f"nothing to click: {selector}"
        x, y = box
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: Path, width: int, *, mobile: bool) -> None:
        """The whole page at this width (the viewport grown to the content's height)."""
        self.viewport(width, 800, mobile=mobile)
        height = int(self.js("Math.ceil(document.documentElement.scrollHeight)"))
        self.viewport(width, min(max(height, 400), 6000), mobile=mobile)
        shot = self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def problems(self) -> list[str]:
        """Script exceptions, console errors and the browser's own errors (a refused policy, a failed load)."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(str(params.get("exceptionDetails", {}).get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(str(params["entry"].get("text")))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the browser may be gone already: its pid is stopped anyway
            self.send("Browser.close", browser=True)
        self.ws.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    """Headless Chromium on a private profile, its DevTools port chosen by itself (port 0)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium package is missing (scripts/install-system-deps.sh installs it)"
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--remote-debugging-address=127.0.0.1", "about:blank"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    tools: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        wait_for(lambda: port_file.is_file() and len(port_file.read_text().split()) >= 2, 30,
                 "Chromium's DevTools port")
        port, path = port_file.read_text().split()[:2]
        tools = DevTools(f"ws://127.0.0.1:{port}{path}")
        tools.open_page()
        yield tools
    finally:
        if tools is not None:
            tools.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def _specs(d: Path, uri: str, side: Path, db_reconcile: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{uri}"}}
---
apiVersion: virtsync/v1
kind: Host
metadata: {{name: side}}
spec: {{uri: "test://{side}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: quiet}}
spec: {{host: side, state: stopped, memory: 64MiB}}
""")
    (d / "guests.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: web}}
spec: {{host: lab, state: paused, memory: 64MiB}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: db}}
spec: {{host: lab, state: stopped, memory: 64MiB, reconcile: {db_reconcile}}}
""")
    return d


def _commit(repo: Path) -> str:
    """The spec directory as a git repository of one commit: the service applies that commit."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(repo.parent)}
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "lab"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True, timeout=30)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def _visible(tools: DevTools, selector: str) -> list[str]:
    """data-name of the rows matching selector that the browser lays out (not hidden)."""
    return list(tools.js(f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
                         ".filter(function(el){return el.getClientRects().length>0;})"
                         ".map(function(el){return el.getAttribute('data-name');})"))


def test_status_page_shows_drift_and_its_filters_hide_in_sync_objects_in_chromium(
    tmp_path: Path, hermetic_host: HermeticHost, chromium: DevTools,
) -> None:
    side = tmp_path / "side.xml"
    side.write_text("<node></node>\n")
    specs = _specs(tmp_path / "specs", hermetic_host.uri, side, "enforce")
    commit = _commit(specs)
    (tmp_path / "token").write_text(TOKEN + "\n")
    svc = TokenServe([str(specs), "--token-file", str(tmp_path / "token")], tmp_path / "serve.log").start()
    try:
        wait_for(lambda: {k: o["status"] for k, o in svc.objects().items()}
                 == {"Guest/web": "in-sync", "Guest/db": "in-sync", "Guest/quiet": "in-sync"},
                 60, "all three guests created and in sync", svc)
        acts = svc.status()["service"]["recentActions"]  # what the timeline shows, as JSON
        assert any(a["name"] == "web" and a["op"] == "start" and a["commit"] == commit for a in acts), acts
        # db only reported from now on, then changed out of band: it stays drifting
        _specs(specs, hermetic_host.uri, side, "report")
        wait_for(lambda: svc.objects()["Guest/db"]["reconcile"] == "report", 20, "db report-only", svc)
        # as `virsh edit` would: the definition rewritten with more memory (libvirt sends an event)
        xml = hermetic_host.virsh("dumpxml", "--inactive", "db")
        assert "<memory unit='KiB'>65536</memory>" in xml, xml
        edited = tmp_path / "db.xml"
        edited.write_text(xml.replace("<memory unit='KiB'>65536</memory>", "<memory unit='KiB'>98304</memory>")
                          .replace("<currentMemory unit='KiB'>65536</currentMemory>",
                                   "<currentMemory unit='KiB'>98304</currentMemory>"))
        hermetic_host.virsh("define", str(edited))
        db = wait_for(lambda: (o := svc.objects()["Guest/db"])["status"] == "drift" and o, 20, "db drifting", svc)
        drifted = {c["path"].removeprefix("/spec/") for c in db["changes"]}
        assert "memory" in drifted, db

        with urllib.request.urlopen(svc.url + "/healthz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(svc.url + "/", timeout=5)
        assert refused.value.code == 401, "the page must want the token"
        page = urllib.request.Request(svc.url + "/", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(page, timeout=5) as resp:
            policy = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, policy

        tools = chromium
        tools.send("Network.enable")
        tools.send("Page.enable")
        tools.send("Log.enable")
        tools.send("Runtime.enable")
        tools.send("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}})
        tools.viewport(1280, 900, mobile=False)
        tools.send("Page.navigate", {"url": svc.url + "/"})
        tools.wait_js("document.documentElement.getAttribute('data-ready')==='1'", 20, "the page's script")

        # the drifted guest's row names the drifted fields, with the desired and the defined value
        row = tools.js("(function(){var r=document.querySelector(\"section.host[data-host='lab'] "
                       "tr.obj[data-name='db']\");return r&&{status:r.getAttribute('data-status'),"
                       "fields:Array.from(r.querySelectorAll('[data-field]')).map(function(e){"
                       "return e.getAttribute('data-field');}),text:r.innerText};})()")
        assert row is not None and row["status"] == "drift", row
        assert set(row["fields"]) == drifted and "memory" in row["fields"], row
        assert "want" in row["text"] and "defined" in row["text"], row
        # the guest virtsync started shows its state and its last change with the commit it came from
        web = tools.js("document.querySelector(\"tr.obj[data-name='web']\").innerText")
        assert "paused" in web and "start" in web and commit[:10] in web, web
        assert commit[:12] in tools.js("document.querySelector('header').innerText")
        # the timeline holds the service's own actions, the chart its reconciles
        assert tools.js("document.querySelectorAll('.timeline li').length") >= 2
        assert tools.js("document.querySelectorAll('.chart svg rect.bar').length") >= 1

        ARTIFACTS.mkdir(exist_ok=True)
        shots = {w: ARTIFACTS / f"status-page-{w}px.png" for w in (1280, 390)}
        dark = ARTIFACTS / "status-page-1280px-dark.png"
        for p in (*shots.values(), dark):
            p.unlink(missing_ok=True)
        tools.screenshot(shots[1280], 1280, mobile=False)
        assert _visible(tools, "tr.obj") == ["db", "web", "quiet"]  # attention first within a host

        # status filter: only what needs attention stays; in-sync guests are hidden
        tools.click("button[data-filter-status='drift']")
        assert _visible(tools, "tr.obj") == ["db"]
        assert tools.js("location.hash") == "#host=all&status=drift"
        # host filter on top: the other host's section alone, its in-sync guest hidden
        tools.click("button[data-filter-host='side']")
        hosts = tools.js("Array.from(document.querySelectorAll('section.host')).filter(function(s){"
                         "return s.getClientRects().length>0;}).map(function(s){return s.getAttribute('data-host');})")
        assert hosts == ["side"]
        assert _visible(tools, "tr.obj") == []
        assert tools.js("document.querySelector(\"section.host[data-host='side'] .no-match\")"
                        ".getClientRects().length>0")
        tools.click("button[data-filter-status='all']")
        assert _visible(tools, "tr.obj") == ["quiet"]
        # back to the drifted guest's host and status; the page's own refresh (a fetch with the
        # browser's token) swaps the content and the filter still holds
        tools.click("button[data-filter-host='lab']")
        tools.click("button[data-filter-status='attention']")
        assert _visible(tools, "tr.obj") == ["db"]
        stamp = tools.js("document.querySelector('#live .meta').textContent")
        tools.wait_js(f"document.querySelector('#live .meta').textContent!=={json.dumps(stamp)}", 15,
                      "the page's refresh")
        assert tools.js("document.getElementById('stale').hidden") is True
        assert _visible(tools, "tr.obj") == ["db"]

        # phone width: the rows become cards, nothing is wider than the screen
        tools.click("button[data-filter-status='all']")
        tools.click("button[data-filter-host='all']")
        tools.screenshot(shots[390], 390, mobile=True)
        assert tools.js("document.documentElement.scrollWidth") <= 390
        assert tools.js("getComputedStyle(document.querySelector('table.objects thead')).display") == "none"

        # dark mode follows the browser's preference
        light = tools.js("getComputedStyle(document.body).backgroundColor")
        tools.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        assert tools.js("getComputedStyle(document.body).backgroundColor") == "rgb(15, 17, 21)" != light
        tools.screenshot(dark, 1280, mobile=False)

        for p in (*shots.values(), dark):
            assert p.is_file() and p.stat().st_size > 10_000, p
        problems = tools.problems()
        assert not problems, f"the browser refused or failed something: {problems}"
        outside = [u for u in tools.requested_urls() if not u.startswith(svc.url + "/")]
        assert not outside, f"the page loaded things from elsewhere: {outside}"
        assert len(tools.requested_urls()) >= 2  # the page and at least one refresh

        # a new service process has no action of its own to show: the last change's commit then
        # comes from the ownership records on the host
        svc.stop()
        svc.start()
        wait_for(lambda: svc.objects().get("Guest/db", {}).get("status") == "drift", 30, "db drifting again", svc)
        tools.send("Page.navigate", {"url": svc.url + "/"})
        for name in ("web", "db"):
            text = tools.wait_js(f"(function(){{var r=document.querySelector(\"tr.obj[data-name='{name}']\");"
                                 "return r&&r.innerText.indexOf('ownership record')>=0&&r.innerText;})()", 20,
                                 f"{name}'s commit from its ownership record")
            assert commit[:10] in text, text
    finally:
        svc.stop()
