"""The import set of `virtsync plan` and `apply` stays small: each runs in a fresh Python process
on a test-driver host, and the modules it loaded are read at its exit.

Imports are most of what a no-op plan costs (issue 17: ~0.4 s of a 0.5 s run on this kind of
machine), so the service, HTTP, image, backup, snapshot-scheduling, cron and coordination
libraries must not come back onto that path: each named below costs its share (tooz alone
~0.25 s of CPU, structlog with asyncio ~0.05 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A module named here, or any module under it, must not be imported.
FORBIDDEN = (
    "watchdog", "prometheus_client", "pycdlib", "croniter", "dateutil", "tooz", "structlog",
    "asyncio", "http", "urllib.request", "ssl", "etcd3gw", "requests",
    "controller.service", "controller.images", "controller.backups", "controller.snapshots",
    "controller.hypervisor.backups", "controller.hypervisor.snapshots", "controller.hypervisor.export",
    "controller.completion", "controller.agents", "controller.commit_trust",
    # pydantic's plugin lookup (spec/base.py): reading every installed distribution's entry points
    "importlib.metadata", "email",
)
# Imported only when a plan has actions to carry out (apply), or --diff / --audit-log ask for them.
EXECUTOR = ("controller.apply.executor", "controller.apply.definitions", "controller.audit",
            "controller.hypervisor.operations", "controller.hypervisor.volumes")
# What building the parser (--help, every verb before it runs) must not import.
HEAVY = ("controller.engine", "controller.spec.models", "controller.plan", "controller.model",
         "controller.hypervisor", "controller.apply", "pydantic", "libvirt", "lxml", "ruamel")

RUN = """
import json, sys
from controller.cli import main
code = main(sys.argv[1:])
base = sys.modules.get("controller.spec.base")
models = []
if base is not None:
    todo = [base.SpecModel]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        models.append([cls.__name__, bool(cls.__pydantic_complete__)])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "models": models}))
"""

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


def _tree(tmp_path: Path) -> tuple[Path, str]:
    host = tmp_path / "host.xml"
    host.write_text(
        "<node><network><name>lab</name><forward mode='nat'/><bridge name='vbr-lab'/>"
        "<ip address='10.9.1.1' prefix='24'/></network>"
        f"<domain type='test' xmlns:test='{TEST_NS}'><name>other</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain></node>\n")
    uri = f"test://{host}"
    specs = tmp_path / "specs"
    specs.mkdir()
    docs = [f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: kvm1}}\nspec: {{uri: '{uri}'}}\n",
            "apiVersion: virtsync/v1\nkind: Network\nmetadata: {name: net}\nspec:\n  host: kvm1\n"
            "  mode: nat\n  bridge: virbr-imp\n  ipv4: {address: 10.9.2.1/24}\n"]
    for i in range(3):
        docs.append(f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: g{i}}}\nspec:\n  host: kvm1\n"
                    f"  state: {'running' if i else 'stopped'}\n  vcpus: 1\n  memory: 64MiB\n"
                    f"  interfaces: [{{network: net, mac: '52:54:00:00:10:0{i}'}}]\n")
    (specs / "specs.yaml").write_text("---\n".join(docs))
    return specs, uri


def _run(tmp_path: Path, *argv: str, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTSYNC_", "PYDANTIC_"))}
    env.update(env_extra or {})
    env["VIRTSYNC_COORDINATION"] = f"file://{tmp_path / 'coord'}"
    env["VIRTSYNC_AUDIT_LOG"] = str(tmp_path / "audit.log")
    proc = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _imported(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    result = _run(tmp_path, *argv)
    return result["code"], result["modules"]


def _forbidden(modules: list[str], names: tuple[str, ...] = FORBIDDEN) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in names)]


@pytest.mark.parametrize("verb", ["plan", "apply"])
def test_plan_and_apply_import_no_service_http_image_backup_snapshot_or_coordination_library(
        tmp_path: Path, verb: str) -> None:
    specs, _ = _tree(tmp_path)
    extra = ["--yes"] if verb == "apply" else []
    code, modules = _imported(tmp_path, verb, str(specs), *extra)
    # The run did its work (a plan with changes exits 2; apply defines the guests and exits 0),
    # so the modules read are those of a real run, not of an early error.
    assert code == (2 if verb == "plan" else 0)
    assert "controller.engine" in modules and "libvirt" in modules
    if verb == "apply":
        assert "controller.apply.executor" in modules
    assert _forbidden(modules) == []


def test_a_plan_imports_no_executor_even_with_changes_to_show(tmp_path: Path) -> None:
    specs, _ = _tree(tmp_path)
    code, modules = _imported(tmp_path, "plan", str(specs))
    assert code == 2  # it has actions: they are shown, not carried out
    assert _forbidden(modules, EXECUTOR) == []


def test_an_apply_with_nothing_to_do_imports_no_executor(tmp_path: Path) -> None:
    specs, uri = _tree(tmp_path)
    # Only the Host: its domain and network are not virtsync's, so there is nothing to do.
    (specs / "specs.yaml").write_text(f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: kvm1}}\n"
                                      f"spec: {{uri: '{uri}'}}\n")
    code, modules = _imported(tmp_path, "apply", str(specs), "--yes")
    assert code == 0
    assert "controller.engine" in modules and "controller.apply.changeset" in modules
    assert _forbidden(modules, EXECUTOR) == []


@pytest.mark.parametrize("argv", [["--help"], ["plan", "--help"], ["version"]])
def test_building_the_parser_imports_no_engine_spec_model_or_libvirt(tmp_path: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTSYNC_", "PYDANTIC_"))}
    run = ("import json, sys\nfrom controller.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
           "except SystemExit as exc:\n    code = exc.code\n"
           "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n")
    proc = subprocess.run([sys.executable, "-c", run, *argv], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert "controller.commands" in result["modules"]  # the engine verbs were registered
    assert _forbidden(result["modules"], HEAVY) == []


def test_the_parsers_max_deletions_default_is_the_planners() -> None:
    # commands.py keeps its own copy so that building the parser imports no engine.
    from controller import commands, engine

    assert commands.DEFAULT_MAX_DELETIONS == engine.DEFAULT_MAX_DELETIONS


def test_the_import_set_check_sees_a_forbidden_module_that_comes_back(tmp_path: Path) -> None:
    # The check above must be able to fail: a snapshot pass does import scheduling code.
    specs, _ = _tree(tmp_path)
    code, modules = _imported(tmp_path, "snapshots", "run", "--at", "2026-01-01T03:00:00Z", str(specs))
    assert code == 0
    assert any(m.startswith("controller.snapshots") or m.startswith("controller.hypervisor.snapshots")
               for m in _forbidden(modules))


def test_a_plan_builds_the_validators_of_only_the_kinds_its_specs_have(tmp_path: Path) -> None:
    # Spec models are built on first use (defer_build): building all of them cost a no-op plan
    # more than its planning. The tree has Hosts, Networks and Guests only.
    specs, _ = _tree(tmp_path)
    result = _run(tmp_path, "plan", str(specs))
    assert result["code"] == 2
    built = {name for name, complete in result["models"] if complete}
    assert {"Host", "Network", "Guest", "GuestSpec", "NetworkSpec", "HostSpec"} <= built
    unused = {"StoragePool", "StoragePoolSpec", "Volume", "VolumeSpec", "Secret", "SecretSpec",
              "SnapshotPolicy", "SnapshotPolicySpec", "BackupPolicy", "BackupPolicySpec", "PoolSource",
              "TenancyPolicy"}
    assert unused <= {name for name, _ in result["models"]}  # the walk saw them
    assert built & unused == set()
    # Parts of a guest are validated inside its kind's validator, not built one by one.
    assert {"Disk", "Interface", "Cpu", "Numa", "Tpm"} & built == set()


def test_pydantic_plugins_are_left_to_pydantic_when_pydantic_disable_plugins_is_set(tmp_path: Path) -> None:
    # Unset, virtsync loads no pydantic plugin without asking importlib.metadata (the test above);
    # set to anything, pydantic's own loader decides (here: "" disables none, so it reads them).
    specs, _ = _tree(tmp_path)
    result = _run(tmp_path, "plan", str(specs), env_extra={"PYDANTIC_DISABLE_PLUGINS": ""})
    assert result["code"] == 2
    assert "importlib.metadata" in result["modules"]


def test_a_one_shot_verb_collects_garbage_less_often_and_leaves_the_callers_thresholds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from controller import cli

    seen: list[int] = []
    monkeypatch.setattr(cli, "cmd_version", lambda args: seen.append(gc.get_threshold()[0]) or 0)
    before = gc.get_threshold()
    assert cli.main(["version"]) == 0
    assert seen == [cli.ONE_SHOT_GC_THRESHOLD] and before[0] < cli.ONE_SHOT_GC_THRESHOLD
    assert gc.get_threshold() == before
