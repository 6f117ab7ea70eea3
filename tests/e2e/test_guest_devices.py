"""Guest devices through virtsync's own CLI on a real hermetic libvirtd host (issue 12).

tests/e2e/test_device_hosts.py proves the host-side parts with raw XML; here the same devices
come from spec fields, applied by `virtsync apply` and checked on the host and inside the Linux
test guest: an emulated TPM (`tpm`, state kept over a recreate), a virtiofs share
(`filesystems`), a VNC password from a `kind: Secret` changed live, an encrypted vTPM whose key
is a libvirt secret virtsync defines, and OVMF secure boot (`secureBoot`). Then `export` of the
host and `plan` of the exported tree: nothing to do.

One host for the module (`hypervisor: qemu`: TCG, since KVM here boots no Linux and has no
SMM). The guests are shared between checks where a check needs a running guest only; every
virtsync command's output is kept, and no Secret value may appear in any of it.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import virtsync
from tests.hosts import devices as dv
from tests.hosts.hermetic import HermeticHost, HermeticHostError, HostFactory
from tests.hosts.linux_guest import ensure_test_guest, guest_sh, link_or_copy, wait_for_agent

pytestmark = [pytest.mark.e2e, pytest.mark.devices, pytest.mark.timeout(300)]

AGENT_TIMEOUT = 120
HOST = "lab"


@dataclass
class Lab:
    """The module's host, its spec tree, and every virtsync command run against it."""

    host: HermeticHost
    tmp: Path
    specs: Path
    kernel: Path
    initrd: Path
    runs: list[tuple[str, str]] = field(default_factory=list)  # (command, everything it printed)
    secrets: set[str] = field(default_factory=set)  # every Secret value the specs ever held

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = virtsync(*args)
        self.runs.append((" ".join(args), proc.stdout + proc.stderr))
        assert proc.returncode == code, (
            f"virtsync {' '.join(args)}: exit {proc.returncode}, expected {code}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def plan(self, *paths: Path, code: int = 0) -> str:
        return self.run("plan", *(str(p) for p in paths or (self.specs,)), code=code).stdout

    def plan_json(self, code: int = 0) -> dict[str, object]:
        doc: dict[str, object] = json.loads(self.run("plan", str(self.specs), "--format", "json", code=code).stdout)
        return doc

    def apply(self, *extra: str) -> str:
        return self.run(*extra, "apply", str(self.specs), "--yes").stdout

    def write(self, name: str, text: str) -> Path:
        path = self.specs / name
        path.write_text(text)
        return path

    def secret_file(self, name: str, value: str) -> None:
        self.secrets.add(value)
        (self.specs / name).write_text(value + "\n")

    def outputs_holding_secrets(self, extra: dict[str, str] | None = None) -> list[str]:
        """The commands (or files) whose output holds a Secret value: must be none."""
        found = []
        for what, text in [*self.runs, *(extra or {}).items()]:
            found += [f"{what!r} printed {value!r}" for value in self.secrets if value in text]
        return found

    def state(self, name: str) -> str:
        return self.host.virsh("domstate", name).strip()

    def domid(self, name: str) -> str:
        return self.host.virsh("domid", name).strip()


def _header(name: str, kind: str) -> str:
    return f"---\napiVersion: virtsync/v1\nkind: {kind}\nmetadata: {{name: {name}}}\n"


@pytest.fixture(scope="module")
def lab(hermetic_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    # The bzImage: booted through PVH with a TPM, the guest kernel finds no TPM (devices.py).
    kernel, initrd = ensure_test_guest(pvh=False)
    tmp = tmp_path_factory.mktemp("gd")
    kernel, initrd = link_or_copy(kernel, tmp / "boot"), link_or_copy(initrd, tmp / "boot")
    specs = tmp / "specs"
    specs.mkdir()
    factory = HostFactory(tmp)
    try:
        host = factory("host")
        lab = Lab(host, tmp, specs, kernel, initrd)
        lab.write(
            "host.yaml",
            _header(HOST, "Host")
            + f'spec:\n  uri: "{host.uri}"\n  hypervisor: qemu\n  storage: {{allowedDirs: ["{tmp}"]}}\n',
        )
        t0 = time.monotonic()
        yield lab
        print(f"\nmodule ran {time.monotonic() - t0:.1f} s on its host")
        for name in host.virsh("list", "--all", "--name").split():
            dv.remove_domain(host, name)
        with contextlib.suppress(HermeticHostError):
            for uuid in re.findall(r"^\s*([0-9a-f-]{36})\s", host.virsh("secret-list"), re.M):
                host.virsh("secret-undefine", uuid)
    finally:
        factory.close()


def _domain_diag(lab: Lab, name: str) -> str:
    """What helps when a guest does not come up: its QEMU log's tail."""
    log = lab.host.path_outside(f"/var/log/libvirt/qemu/{name}.log")
    with contextlib.suppress(OSError):
        return f"\n--- {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    return ""


# ---- 1 + 2: the Linux test guest with a vTPM and a virtiofs share ------------------------------


def _linux_guest(lab: Lab, firmware: str) -> str:
    return _header("tpmfs", "Guest") + f"""spec:
  host: {HOST}
  state: running
  memory: 256MiB
  firmware: {firmware}
  agent: true
  boot:
    kernel: "{lab.kernel}"
    initrd: "{lab.initrd}"
    cmdline: "console=ttyS0 virtsync.hostname=tpmfs"
  tpm: {{model: tpm-crb}}
  filesystems:
    - {{source: "{lab.tmp / 'share'}", target: share}}
  restartPolicy: onChange
  shutdownTimeout: 10s
"""


@pytest.fixture(scope="module")
def linux_guest(lab: Lab) -> str:
    """The Linux test guest `tpmfs` with tpm-crb and a virtiofs share, applied and answering."""
    (lab.tmp / "share").mkdir()
    lab.write("guest-tpmfs.yaml", _linux_guest(lab, "bios"))
    t0 = time.monotonic()
    lab.apply()
    try:
        waited = wait_for_agent(lab.host, "tpmfs", AGENT_TIMEOUT)
    except Exception as e:
        raise AssertionError(str(e) + _domain_diag(lab, "tpmfs")) from e
    print(f"\ntpmfs applied and its agent answering after {time.monotonic() - t0:.1f} s ({waited:.1f} s boot, TCG)")
    return "tpmfs"


def test_vtpm_from_spec_survives_a_recreate_with_its_nv_memory(lab: Lab, linux_guest: str) -> None:
    host, name = lab.host, linux_guest
    assert dv.guest_tpm(host, name) == {"dev": "/dev/tpm0", "major": "2", "driver": "tpm_crb"}
    uuid = dv.domain_uuid(host, name)
    state = dv.swtpm_state_file(host, uuid)
    assert state.is_file(), f"no swtpm state at {state}"
    token = secrets.token_bytes(8)
    dv.tpm_nv_define(host, name, len(token))
    dv.tpm_nv_write(host, name, token)
    assert dv.tpm_nv_read(host, name, len(token)) == token
    assert "No changes" in lab.plan()

    # A firmware change needs a new definition: virtsync undefines (keeping the TPM state and
    # the NVRAM) and defines the guest again under the same UUID.
    lab.write("guest-tpmfs.yaml", _linux_guest(lab, "uefi"))
    plan = lab.plan(code=2)
    assert "-/+ recreate Guest tpmfs" in plan and "firmware: bios → uefi" in plan, plan
    old_id = lab.domid(name)
    t0 = time.monotonic()
    lab.apply()
    wait_for_agent(host, name, AGENT_TIMEOUT)
    took = time.monotonic() - t0
    assert dv.domain_uuid(host, name) == uuid, "the recreate changed the UUID (and so lost the TPM)"
    assert lab.domid(name) != old_id, "the guest was not restarted"
    assert dv.firmware_of(host.virsh("dumpxml", name)).loader, "the recreated guest runs no UEFI firmware"
    assert state.is_file(), "the recreate deleted the swtpm state"
    # The NV index written before the recreate is in the TPM the new definition's guest sees.
    assert dv.guest_tpm(host, name)["dev"] == "/dev/tpm0"
    assert dv.tpm_nv_read(host, name, len(token)) == token
    assert "No changes" in lab.plan()
    print(f"\nvTPM: recreate (bios -> uefi, same UUID {uuid}) and boot in {took:.1f} s; NV value read back; "
          f"state {state.stat().st_size} B digest {dv.file_digest(state)[:12]}")


def test_machine_change_pc_to_q35_is_a_recreate_that_keeps_the_guest(lab: Lab) -> None:
    """A tree of its own: its failed apply must not fail the other tests' applies."""
    host, tree = lab.host, lab.tmp / "machine"
    tree.mkdir(exist_ok=True)
    (tree / "host.yaml").write_text((lab.specs / "host.yaml").read_text())

    def guest(machine: str) -> None:
        (tree / "guest-m1.yaml").write_text(_header("m1", "Guest") + f"""spec:
  host: {HOST}
  state: running
  memory: 64MiB
  machine: {machine}
  restartPolicy: onChange
  shutdownTimeout: 2s
""")

    try:
        guest("pc")
        lab.run("apply", str(tree), "--yes")
        uuid = dv.domain_uuid(host, "m1")
        guest("q35")
        assert "-/+ recreate Guest m1" in lab.plan(tree, code=2)
        proc = virtsync("apply", str(tree), "--yes")
        assert "m1" in host.virsh("list", "--all", "--name").split(), (
            "the failed recreate left the guest undefined:\n" + proc.stderr)
        assert proc.returncode == 0, proc.stderr
        assert dv.domain_uuid(host, "m1") == uuid
        assert "pc-q35-" in host.virsh("dumpxml", "m1")
    finally:
        dv.remove_domain(host, "m1")


def test_virtiofs_share_from_spec_is_read_in_the_guest(lab: Lab, linux_guest: str) -> None:
    host, name = lab.host, linux_guest
    wait_for_agent(host, name, AGENT_TIMEOUT)  # after a recreate by the test before, too
    inactive = host.virsh("dumpxml", "--inactive", name)
    assert "<driver type='virtiofs'/>" in inactive and "<access mode='shared'/>" in inactive
    assert dv.virtiofsd_pids(host), "no virtiofsd runs for the share"
    token = secrets.token_hex(8)
    (lab.tmp / "share" / "hello.txt").write_text(token + "\n")
    dv.mount_virtiofs(host, name, "share", "/mnt/share")
    assert dv.virtiofs_mounted(host, name, "share", "/mnt/share")
    assert guest_sh(host, name, "cat /mnt/share/hello.txt").strip() == token
    assert "No changes" in lab.plan()

    # readonly virtiofs needs libvirt 11: this host's libvirt 9 is refused at plan time, naming
    # the host (a tree of its own: the other tests apply the whole tree).
    ro = lab.tmp / "readonly"
    ro.mkdir(exist_ok=True)
    (ro / "host.yaml").write_text((lab.specs / "host.yaml").read_text())
    readonly = _linux_guest(lab, "uefi").replace("target: share}", "target: share, readonly: true}")
    (ro / "guest.yaml").write_text(readonly)
    proc = lab.run("plan", str(ro), code=1)
    assert "readonly" in proc.stdout + proc.stderr and HOST in proc.stdout + proc.stderr, proc
    assert "<readonly/>" not in host.virsh("dumpxml", "--inactive", name)


def test_virtiofs_source_outside_allowed_dirs_is_refused(lab: Lab) -> None:
    tree = lab.tmp / "confined"
    tree.mkdir(exist_ok=True)
    (tree / "host.yaml").write_text((lab.specs / "host.yaml").read_text())  # allowedDirs: the module's tmp
    (tree / "guest.yaml").write_text(_header("etc1", "Guest") + f"""spec:
  host: {HOST}
  memory: 64MiB
  filesystems: [{{source: /etc, target: etc}}]
""")
    proc = virtsync("validate", str(tree))
    assert proc.returncode == 1 and "allowedDirs" in proc.stdout + proc.stderr, proc


# ---- 3: VNC password from a Secret, changed live ----------------------------------------------


def _vnc_guest() -> str:
    return _header("vnc1", "Guest") + f"""spec:
  host: {HOST}
  state: running
  memory: 64MiB
  graphics: {{type: vnc, listen: 127.0.0.1, passwordSecretRef: vnc-pass}}
""" + _header("vnc-pass", "Secret") + "spec: {fromFile: vnc-pass.txt}\n"


def _vnc_password(xml: str) -> str | None:
    g = ET.fromstring(xml).find("devices/graphics")
    return g.get("passwd") if g is not None else None


@pytest.fixture(scope="module")
def vnc_guest(lab: Lab) -> str:
    """The firmware-only guest `vnc1` with a VNC console whose password is Secret vnc-pass; the
    password is returned."""
    password = "a" + secrets.token_hex(3) + "z"  # VNC passwords: 8 characters
    lab.secret_file("vnc-pass.txt", password)
    lab.write("guest-vnc1.yaml", _vnc_guest())
    lab.apply()
    return password


def test_vnc_password_from_a_secret_changes_live_and_is_in_no_output(lab: Lab, vnc_guest: str) -> None:
    host, first, second = lab.host, vnc_guest, "b" + secrets.token_hex(3) + "y"
    assert lab.state("vnc1") == "running"
    assert _vnc_password(host.virsh("dumpxml", "--security-info", "vnc1")) == first
    assert _vnc_password(host.virsh("dumpxml", "--security-info", "--inactive", "vnc1")) == first
    assert _vnc_password(host.virsh("dumpxml", "vnc1")) is None  # libvirt hides it without the flag
    assert "No changes" in lab.plan()

    dom_id = lab.domid("vnc1")
    lab.secret_file("vnc-pass.txt", second)
    plan = lab.plan(code=2)
    assert "~ update Guest vnc1 (live)" in plan and "graphics" in plan, plan
    lab.plan_json(code=2)
    lab.run("drift", str(lab.specs), "--format", "json", code=2)
    lab.apply("--debug")  # its debug log is grepped too
    assert lab.domid("vnc1") == dom_id, "the password change restarted the guest"
    assert _vnc_password(host.virsh("dumpxml", "--security-info", "vnc1")) == second
    assert _vnc_password(host.virsh("dumpxml", "--security-info", "--inactive", "vnc1")) == second
    assert "No changes" in lab.plan()
    lab.plan_json()
    lab.run("drift", str(lab.specs), "--format", "json")
    leaks = lab.outputs_holding_secrets()
    assert not leaks, leaks
    print(f"\nVNC password changed live (domain id {dom_id}); {len(lab.runs)} virtsync outputs hold no Secret value")


# ---- 4: an encrypted vTPM, its key a libvirt secret virtsync defines ---------------------------


def _encrypted_tpm_guest() -> str:
    return _header("enc1", "Guest") + f"""spec:
  host: {HOST}
  state: running
  memory: 64MiB
  tpm: {{model: tpm-crb, encryptionSecretRef: tpm-key}}
""" + _header("tpm-key", "Secret") + "spec: {fromFile: tpm-key.txt, libvirt: {usage: vtpm}}\n"


def _secret_uuids(host: HermeticHost) -> dict[str, str]:
    """UUID -> usage of the host's libvirt secrets."""
    out = {}
    for line in host.virsh("secret-list").splitlines():
        m = re.match(r"\s*([0-9a-f-]{36})\s+(.*\S)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@pytest.fixture(scope="module")
def encrypted_tpm_guest(lab: Lab) -> str:
    """The firmware-only guest `enc1` with a vTPM encrypted by Secret tpm-key, planned and applied."""
    lab.secret_file("tpm-key.txt", secrets.token_hex(16))
    lab.write("guest-enc1.yaml", _encrypted_tpm_guest())
    plan = lab.plan(code=2)
    assert "+ define-secret Secret tpm-key" in plan and "+ define Guest enc1" in plan, plan
    # The secret is defined before the guest whose TPM names its UUID.
    assert plan.index("Secret tpm-key") < plan.index("Guest enc1"), plan
    lab.apply()
    return "enc1"


def test_encrypted_vtpm_defines_a_private_libvirt_secret_and_the_guest_starts(
    lab: Lab, encrypted_tpm_guest: str,
) -> None:
    host = lab.host
    found = _secret_uuids(host)
    assert len(found) == 1, found
    (uuid, usage), = found.items()
    assert "vtpm" in usage and "virtsync-tpm-key" in usage, usage
    secret_xml = ET.fromstring(host.virsh("secret-dumpxml", uuid))
    assert secret_xml.get("private") == "yes" and secret_xml.get("ephemeral") == "no"
    with pytest.raises(HermeticHostError):
        host.virsh("secret-get-value", uuid)  # private: libvirt hands nobody its value
    enc = ET.fromstring(host.virsh("dumpxml", "enc1")).find("devices/tpm/backend/encryption")
    assert enc is not None and enc.get("secret") == uuid
    # swtpm took the key: the guest runs, and its TPM state was made encrypted.
    assert lab.state("enc1") == "running"
    assert dv.swtpm_state_file(host, dv.domain_uuid(host, "enc1")).is_file()
    assert "No changes" in lab.plan()

    # A new value is set on the same libvirt secret (the TPM's state is not re-encrypted: the
    # running swtpm holds the key it started with).
    description = secret_xml.findtext("description") or ""
    dom_id = lab.domid("enc1")
    lab.secret_file("tpm-key.txt", secrets.token_hex(16))
    plan = lab.plan(code=2)
    assert "~ define-secret Secret tpm-key (live)" in plan and "new value" in plan, plan
    assert "Guest enc1" not in plan, plan  # the guest's definition names the UUID, which stays
    lab.apply()
    assert list(_secret_uuids(host)) == [uuid]
    assert (ET.fromstring(host.virsh("secret-dumpxml", uuid)).findtext("description") or "") != description
    assert lab.domid("enc1") == dom_id
    assert "No changes" in lab.plan()
    leaks = lab.outputs_holding_secrets()
    assert not leaks, leaks


# ---- 5: secure boot --------------------------------------------------------------------------


def _secure_boot_guest() -> str:
    return _header("sb1", "Guest") + f"""spec:
  host: {HOST}
  state: running
  memory: 256MiB
  firmware: uefi
  machine: q35
  secureBoot: true
"""


def test_secure_boot_guest_runs_ovmf_secure_boot_with_smm(lab: Lab) -> None:
    host = lab.host
    spec = lab.write("guest-sb1.yaml", _secure_boot_guest())
    try:
        lab.apply()
    except AssertionError:
        spec.unlink()  # the other tests apply the whole tree
        raise
    assert lab.state("sb1") == "running"
    fw = dv.firmware_of(host.virsh("dumpxml", "sb1"))
    assert fw.machine.startswith("pc-q35-"), fw
    assert fw.secure and fw.smm, fw
    assert fw.loader is not None and "OVMF_CODE_4M" in fw.loader, fw
    assert fw.features.get("secure-boot") is True, fw
    assert fw.nvram is not None and host.path_outside(fw.nvram).is_file(), fw
    assert "No changes" in lab.plan()


# ---- 6: export of the host, then plan: nothing to do -----------------------------------------


def test_export_of_the_host_with_these_devices_then_plan_is_empty(
    lab: Lab, linux_guest: str, vnc_guest: str, encrypted_tpm_guest: str,
) -> None:
    tree = lab.tmp / "exported"
    lab.run("export", "--host", HOST, "--connect", lab.host.uri, "-o", f"{tree}/")
    files = {p.name: p.read_text() for p in sorted(tree.glob("*.yaml"))}
    guests = {n for n in lab.host.virsh("list", "--all", "--name").split()}
    assert {f"guest-{g}.yaml" for g in guests} <= set(files), sorted(files)
    assert "tpm" in files["guest-tpmfs.yaml"] and "filesystems" in files["guest-tpmfs.yaml"]
    if "sb1" in guests:  # (while secure boot is refused at plan time, there is none)
        assert "secureBoot: true" in files["guest-sb1.yaml"]
    assert "graphics" in files["guest-vnc1.yaml"]
    tpmfs, enc1, vnc1 = files["guest-tpmfs.yaml"], files["guest-enc1.yaml"], files["guest-vnc1.yaml"]
    assert "firmware: uefi" in tpmfs and "model: tpm-crb" in tpmfs and "target: share" in tpmfs
    assert f"kernel: {lab.kernel}" in tpmfs
    # Secrets are named in specs, never read back: the TPM's encryption names the kind: Secret it
    # was made from, exported as a reference (optional until its value file is written, so the
    # host's secret is left as it is); the console password is left out; no value is in any file.
    assert "model: tpm-crb" in enc1 and "encryptionSecretRef: tpm-key" in enc1
    secret_docs = [t for t in files.values() if "kind: Secret" in t]
    assert len(secret_docs) == 1 and "name: tpm-key" in secret_docs[0] and "optional: true" in secret_docs[0], files
    assert "type: vnc" in vnc1 and "passwordSecretRef" not in vnc1 and "passwd" not in vnc1
    lab.run("validate", str(tree))
    out = lab.plan(tree)
    assert "No changes" in out, out
    # drift: all guests in sync, and the libvirt secret the exported Secret names too.
    doc = json.loads(lab.run("drift", str(tree), "--format", "json", code=0).stdout)
    status = {f"{o['kind']}/{o['name']}": o["status"] for h in doc["hosts"] for o in h["objects"]}
    assert status == {**{f"Guest/{g}": "in-sync" for g in guests}, "Secret/tpm-key": "in-sync"}, status
    leaks = lab.outputs_holding_secrets({f"exported {n}": t for n, t in files.items()})
    assert not leaks, leaks
