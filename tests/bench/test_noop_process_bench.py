"""Whole-process no-op (issue 17, target 1): `virtsync plan` and `apply` of 20 guests and a NAT
network with nothing to do, against a raw Python process that imports libvirt and reads the
same objects (the domain list, each domain's persistent XML and a running one's live XML, the
network's XML). CPU is user+sys of each child process (os.wait4), best of several runs each,
measured in one run; the guests are paused so that the host is idle. `plan` is measured as a user
runs it (its answer comes from the no-op memo once a first no-op run recorded it) and in full
(VIRTSYNC_NOOP_MEMO=off); so is `apply`.

Bytecode is compiled first, as an installed package has it (PYTHONDONTWRITEBYTECODE would
otherwise make every run compile every module again).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bench.test_engine_bench import _specs
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
RUNS = 7

RAW = """
import sys, libvirt
conn = libvirt.open(sys.argv[1])
for d in conn.listAllDomains(0):
    d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    if d.ID() != -1:
        d.XMLDesc(0)
for n in conn.listAllNetworks(0):
    n.XMLDesc(0)
conn.close()
"""
# Floors printed beside the figures (not targets): the interpreter alone, and the imports of the
# spec layer's libraries with the raw read (pydantic validates the specs on every run; the 3×
# ratio is measured against a process that imports neither).
FLOOR = "import pydantic, pydantic.fields, pydantic.types, ruamel.yaml.cyaml, lxml.etree\n" + RAW


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["VIRTSYNC_COORDINATION"] = f"file://{tmp / 'coord'}"
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # the no-op memo's records: this run's own
    return env


def _measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(CPU seconds user+sys, wall seconds, exit code) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    assert proc.stderr is not None
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, proc.returncode


def test_whole_process_noop_plan_and_apply_cost_at_most_3_times_a_raw_read(host: HermeticHost,
                                                                          tmp_path: Path) -> None:
    env = _env(tmp_path)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "controller"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    specs = _specs(tmp_path / "s", 20, "paused", network=True)
    text = (specs / "specs.yaml").read_text().replace("uri: 'qemu:///system'", f"uri: '{host.uri}'")
    (specs / "specs.yaml").write_text(text)
    cli = [sys.executable, "-m", "controller"]
    proc = subprocess.run([*cli, "apply", str(specs), "--yes"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The plan answered from the no-op memo (its first run records it), and the same plan in full.
    told = subprocess.run([*cli, "plan", str(specs)], cwd=ROOT, env={**env, "VIRTSYNC_NOOP_MEMO": "report"},
                          capture_output=True, text=True, timeout=120)
    told = subprocess.run([*cli, "plan", str(specs)], cwd=ROOT, env={**env, "VIRTSYNC_NOOP_MEMO": "report"},
                          capture_output=True, text=True, timeout=120)
    assert "no-op memo: every input as at the last no-op run" in told.stderr, told.stderr
    for _ in range(2):
        told = subprocess.run([*cli, "apply", str(specs), "--yes"], cwd=ROOT,
                              env={**env, "VIRTSYNC_NOOP_MEMO": "report"}, capture_output=True, text=True, timeout=120)
    assert "no-op memo: every input as at the last no-op run" in told.stderr, told.stderr
    full_env = {**env, "VIRTSYNC_NOOP_MEMO": "off"}
    results: dict[str, list[tuple[float, float]]] = {"plan": [], "plan in full": [], "apply": [],
                                                      "apply in full": [], "raw": [], "python": [], "floor": []}
    for _ in range(RUNS):  # interleaved, so that a burst of load elsewhere hits them all alike
        cpu, wall, code = _measure([*cli, "plan", str(specs)], env)
        assert code == 0, "a no-op plan exits 0"
        results["plan"].append((cpu, wall))
        cpu, wall, code = _measure([*cli, "plan", str(specs)], full_env)
        assert code == 0
        results["plan in full"].append((cpu, wall))
        cpu, wall, code = _measure([*cli, "apply", str(specs), "--yes"], env)
        assert code == 0
        results["apply"].append((cpu, wall))
        cpu, wall, code = _measure([*cli, "apply", str(specs), "--yes"], full_env)
        assert code == 0
        results["apply in full"].append((cpu, wall))
        cpu, wall, code = _measure([sys.executable, "-c", RAW, host.uri], env)
        assert code == 0
        results["raw"].append((cpu, wall))
        cpu, wall, code = _measure([sys.executable, "-c", "pass"], env)
        assert code == 0
        results["python"].append((cpu, wall))
        cpu, wall, code = _measure([sys.executable, "-c", FLOOR, host.uri], env)
        assert code == 0
        results["floor"].append((cpu, wall))
    best = {k: (min(c for c, _ in v), min(w for _, w in v)) for k, v in results.items()}
    raw_cpu = best["raw"][0]
    load = os.getloadavg()
    print(f"\nwhole-process no-op, 20 paused guests + 1 NAT network (best of {RUNS}; load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  raw python + libvirt read:  CPU {raw_cpu:.3f} s  wall {best['raw'][1]:.3f} s")
    print(f"  floors: python -c pass CPU {best['python'][0]:.3f} s; raw read + importing pydantic, "
          f"ruamel.yaml, lxml CPU {best['floor'][0]:.3f} s ({best['floor'][0] / raw_cpu:.1f}× raw)")
    for verb, how in (("plan", "answered by the no-op memo"), ("plan in full", "VIRTSYNC_NOOP_MEMO=off"),
                      ("apply", "answered by the no-op memo"), ("apply in full", "VIRTSYNC_NOOP_MEMO=off")):
        cpu, wall = best[verb]
        print(f"  virtsync {verb:12s} CPU {cpu:.3f} s  wall {wall:.3f} s  "
              f"(CPU ratio {cpu / raw_cpu:.1f}; targets: CPU ≤ 0.30 s, ≤ 3× raw, wall ≤ 0.35 s idle; {how})")
    for verb in ("plan", "apply"):
        assert best[verb][0] <= 0.30, f"{verb}: CPU {best[verb][0]:.3f} s > 0.30 s"
        assert best[verb][0] <= 3 * raw_cpu, f"{verb}: CPU {best[verb][0] / raw_cpu:.1f}× raw > 3×"
