"""Secrets kept in git encrypted with age, on a real host: one age-encrypted Secret (made by the
real `age` tool) is a firmware-only KVM guest's VNC password and part of its cloud-init user-data.
libvirt has the password (`virsh dumpxml --security-info`), the seed ISO has the user-data (that is
what a seed is for), and no output of virtsync (stdout, stderr with its log, a saved plan, a drift
report, the ownership record) holds the plaintext."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from controller.images.seed import read_seed_iso
from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.trust, pytest.mark.timeout(120)]


def _specs(tmp: Path, uri: str) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{uri}"
  storage: {{allowedDirs: ["{tmp}"]}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: agepool}}
spec: {{host: lab, path: "{tmp}/pool"}}
---
apiVersion: virtsync/v1
kind: Secret
metadata: {{name: console}}
spec: {{fromFile: console.age, encryption: age}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: agevm}}
spec:
  host: lab
  state: running
  memory: 64MiB
  disks:
    - {{name: root, pool: agepool, size: 16MiB}}
  graphics: {{type: vnc, listen: 127.0.0.1, passwordSecretRef: console}}
  cloudInit:
    userData: |
      #cloud-config
      chpasswd: {{expire: false}}
      password: ${{secret:console}}
  restartPolicy: never
"""


def test_an_age_encrypted_secret_reaches_the_console_and_the_seed_and_no_output(
        tmp_path: Path, hermetic_host: HermeticHost) -> None:
    t0 = time.monotonic()
    host = hermetic_host
    password = "a" + secrets.token_hex(3) + "z"  # VNC passwords: 8 characters
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["age-keygen", "-o", str(keys / "key.txt")], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(keys / "key.txt")], check=True, capture_output=True,
                               text=True).stdout.strip()
    specs = tmp_path / "specs"
    specs.mkdir()
    (tmp_path / "pool").mkdir()
    (specs / "lab.yaml").write_text(_specs(tmp_path, host.uri))
    subprocess.run(["age", "-r", recipient, "-a", "-o", str(specs / "console.age")],
                   input=(password + "\n").encode(), check=True, capture_output=True)  # a pipe, no plaintext file
    ident = ("--age-identity", str(keys / "key.txt"))

    missing = virtsync("validate", str(specs))
    assert missing.returncode == 1 and f"{specs / 'lab.yaml'}:16:" in missing.stderr
    assert "no age identity: give --age-identity FILE or VIRTSYNC_AGE_IDENTITY_FILE" in missing.stderr
    runs = [missing, virtsync("validate", str(specs), *ident),
            virtsync("-v", "plan", str(specs), *ident, "--out", str(tmp_path / "plan.json"))]
    ok(runs[1])
    ok(runs[2], 2)
    audit = tmp_path / "audit.jsonl"
    runs.append(virtsync("-v", "apply", str(tmp_path / "plan.json"), "--yes", "--audit-log", str(audit), *ident))
    ok(runs[-1])
    assert audit.read_text().count("\n") >= 1, "the changes are in the audit log"

    xml = host.virsh("dumpxml", "--security-info", "agevm")
    graphics = ET.fromstring(xml).find("devices/graphics")
    assert graphics is not None and graphics.get("passwd") == password
    assert host.virsh("domstate", "agevm").strip() == "running"
    seed = tmp_path / "pool" / "agevm-cidata.iso"
    assert seed.is_file(), "the seed ISO is in the guest's pool"
    assert f"password: {password}\n" in read_seed_iso(seed.read_bytes())["user-data"]

    runs += [virtsync("plan", str(specs), *ident), virtsync("plan", str(specs), "--format", "json", *ident),
             virtsync("drift", str(specs), "--format", "json", *ident),
             virtsync("drift", str(specs), "--format", "html", "-o", str(tmp_path / "drift.html"), *ident)]
    assert "No changes" in ok(runs[-4]), "the password and the seed read back as wanted"
    assert json.loads(ok(runs[-2]))["inSync"] is True

    seen = {f"{' '.join(r.args[3:5])} #{i}": r.stdout + r.stderr for i, r in enumerate(runs)}
    seen["saved plan"] = (tmp_path / "plan.json").read_text()
    seen["drift report"] = (tmp_path / "drift.html").read_text()
    seen["ownership record"] = host.virsh("dumpxml", "--inactive", "agevm")  # without --security-info
    seen["volumes"] = host.virsh("vol-list", "agepool", "--details")
    seen["audit log"] = audit.read_text()
    leaks = [name for name, text in seen.items() if password in text]
    assert not leaks, f"the plaintext is in {leaks}"
    on_disk = [str(p) for p in tmp_path.rglob("*") if p.is_file() and p != seed
               and password.encode() in p.read_bytes()]
    assert not on_disk, f"the plaintext was written to {on_disk}"
    elapsed = time.monotonic() - t0
    print(f"\nage secrets e2e: {elapsed:.1f} s")
    assert elapsed < 30
