"""What a real host cannot provide is refused when the plan is made, from its capability probe:
passthrough on a host without VFIO (the hermetic hosts have none), before anything is defined."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.devices]


def test_a_hostdev_is_refused_at_plan_time_on_a_real_host_without_vfio(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    specs = tmp_path / "hostdev"
    specs.mkdir()
    (specs / "g.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{host.uri}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: passthrough}}
spec:
  host: lab
  state: stopped
  memory: 64MiB
  hostdevs: [{{pci: "0000:03:00.0"}}]
""")
    out = virtsync("plan", str(specs))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "host lab (QEMU) cannot pass devices through: it has no VFIO" in out.stdout + out.stderr
    ok(virtsync("apply", str(specs), "--yes"), 1)
    assert "passthrough" not in host.virsh("list", "--all", "--name"), "nothing was defined"
