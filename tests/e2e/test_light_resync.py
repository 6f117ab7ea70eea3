"""`serve`'s light resync on a real libvirtd host: changes libvirt sends no lifecycle event for
(`setmem --config`, `autostart`, `net-update --config`) are repaired within 15 s, while the
full resync is an hour away; /status says when each object was last compared."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.service, pytest.mark.timeout(240)]

SEEN_WITHIN = 15.0


def _specs(d: Path, uri: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "specs.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lr}}
spec: {{uri: "{uri}"}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: lrnet}}
spec:
  host: lr
  mode: nat
  bridge: virbr-lr
  autostart: true
  ipv4:
    address: 192.168.210.1/24
    dhcp:
      start: 192.168.210.10
      end: 192.168.210.99
      hosts: [{{mac: "52:54:00:21:00:01", ip: 192.168.210.11, name: quiet}}]
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: quiet}}
spec:
  host: lr
  state: paused
  memory: 64MiB
  maxMemory: 128MiB
  autostart: false
  interfaces: [{{network: lrnet, mac: "52:54:00:21:00:01", bootRom: false}}]
""")
    return d


@pytest.fixture
def serving(tmp_path: Path, hermetic_host: HermeticHost) -> Iterator[tuple[ServeProcess, HermeticHost]]:
    specs = _specs(tmp_path / "specs", hermetic_host.uri)
    # The full resync an hour away: only the light resync can see what follows.
    svc = ServeProcess([str(specs), "--resync", "1h", "--light-resync", "2s"], tmp_path / "serve.log")
    svc.start()
    try:
        wait_for(lambda: svc.objects().get("Guest/quiet", {}).get("status") == "in-sync"
                 and svc.objects().get("Network/lrnet", {}).get("status") == "in-sync", 90,
                 "first convergence", svc)
        # The start's own lifecycle events queue reconciles that trail the first convergence:
        # let them finish, so that what repairs the changes below is the light resync alone.
        passes = _passes_after(svc, time.time())
        wait_for(passes, 30, "two light passes after the first convergence", svc)
        yield svc, hermetic_host
    finally:
        svc.stop()


def _passes_after(svc: ServeProcess, since: float) -> object:
    def done() -> bool:
        st = svc.status()["service"]
        at = st["lightResync"]["lastPassAt"]
        return (st["queueDepth"] == 0 and at is not None
                and datetime.fromisoformat(at).timestamp() > since + 2 * st["lightResync"]["intervalSeconds"])
    return done


def _seen(svc: ServeProcess, kind: str, name: str, after: float) -> list[dict[str, object]]:
    """The light resync's log lines for the object since ``after`` (logged before it is queued)."""
    return [e for e in svc.log_events() if e.get("event") == "changed without an event"
            and e.get("kind") == kind and e.get("name") == name
            and datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp() >= after]


def _repaired(svc: ServeProcess, what: str, check: object, started: float) -> float:
    wait_for(check, SEEN_WITHIN, what, svc)  # type: ignore[arg-type]
    return time.monotonic() - started


def test_changes_without_an_event_are_repaired_within_15_s(serving: tuple[ServeProcess, HermeticHost]) -> None:
    svc, host = serving
    took: dict[str, float] = {}

    # 1. setmem --config: the persistent definition only (no event on QEMU).
    t0, wall = time.monotonic(), time.time()
    host.virsh("setmem", "quiet", "48M", "--config")
    assert "49152" in host.virsh("dumpxml", "--inactive", "quiet")
    took["setmem --config"] = _repaired(
        svc, "memory repaired",
        lambda: "<currentMemory unit='KiB'>65536</currentMemory>" in host.virsh("dumpxml", "--inactive", "quiet"),
        t0)
    assert _seen(svc, "Guest", "quiet", wall - 1), "the light resync did not see the change"

    # 2. autostart of the guest, which the spec says is off.
    t0, wall = time.monotonic(), time.time()
    host.virsh("autostart", "quiet")
    took["autostart"] = _repaired(
        svc, "autostart off again",
        lambda: "disable" in next(line for line in host.virsh("dominfo", "quiet").splitlines()
                                  if line.startswith("Autostart")), t0)
    assert _seen(svc, "Guest", "quiet", wall - 1)

    # 3. net-update --config: a DHCP host the spec does not have, in the persistent definition only.
    t0, wall = time.monotonic(), time.time()
    host.virsh("net-update", "lrnet", "add", "ip-dhcp-host",
               "<host mac='52:54:00:21:00:99' ip='192.168.210.50' name='stray'/>", "--config")
    assert "192.168.210.50" in host.virsh("net-dumpxml", "--inactive", "lrnet")
    took["net-update --config"] = _repaired(
        svc, "the stray DHCP host removed",
        lambda: "192.168.210.50" not in host.virsh("net-dumpxml", "--inactive", "lrnet"), t0)
    assert _seen(svc, "Network", "lrnet", wall - 1)

    print("\nrepaired after (s): " + ", ".join(f"{k} {v:.1f}" for k, v in took.items()))
    status = svc.status()["service"]
    assert status["lightResync"]["intervalSeconds"] == 2.0 and status["lightResync"]["queuedTotal"] >= 3
    compared = {f"{o['kind']}/{o['name']}": o for o in status["objects"]}
    # The guest was compared in full after its last out-of-band change, and fingerprinted since.
    last = datetime.fromisoformat(compared["Guest/quiet"]["lastCompared"]).timestamp()
    assert last >= wall - 60 and compared["Guest/quiet"]["lastChecked"] is not None

    def network_compared_since_its_change() -> bool:
        objs = {f"{o['kind']}/{o['name']}": o for o in svc.status()["service"]["objects"]}
        return datetime.fromisoformat(objs["Network/lrnet"]["lastCompared"]).timestamp() >= wall - 1
    wait_for(network_compared_since_its_change, 5, "the network's lastCompared after its repair", svc)
