"""The layout rules of the README's Development section, checked on the source (an import-linter in miniature)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "controller"
PURE = ("plan", "model", "report")
IO_MODULES = {"libvirt", "subprocess", "socket", "requests", "urllib.request", "http", "watchdog",
              "os", "shutil", "pathlib"}
ADAPTERS = ("controller.hypervisor", "controller.apply", "controller.service", "controller.cli",
            "controller.commands", "controller.engine")


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def _modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_layout_has_the_rooms_of_the_design() -> None:
    for room in ("spec", "model", "hypervisor", "plan", "apply", "snapshots", "service", "report"):
        assert (PKG / room / "__init__.py").is_file(), room
    for module in ("cli.py", "errors.py", "logging.py"):
        assert (PKG / module).is_file(), module


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_libvirt_is_imported_only_under_hypervisor(path: Path) -> None:
    rel = path.relative_to(PKG)
    if rel.parts[0] == "hypervisor":
        return
    bad = [(m, line) for m, line in _imports(path) if m == "libvirt" or m.startswith("libvirt.")]
    assert not bad, f"{rel} imports libvirt at line {bad[0][1]}"


@pytest.mark.parametrize(
    "path", [p for p in _modules() if p.relative_to(PKG).parts[0] in PURE],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_plan_model_and_report_are_free_of_io_and_adapters(path: Path) -> None:
    rel = path.relative_to(PKG)
    for module, line in _imports(path):
        top = module.split(".")[0]
        assert top not in IO_MODULES and module not in IO_MODULES, f"{rel}:{line} imports {module}"
        assert not module.startswith(ADAPTERS), f"{rel}:{line} imports the adapter {module}"


CORE = ("controller.fields", "controller.model", "controller.plan", "controller.report", "controller.spec")
ADAPTER_ROOTS = ("controller.hypervisor", "controller.apply", "controller.service", "controller.engine",
                 "controller.commands", "controller.cli")


def _rooms(*rooms: str) -> list[Path]:
    return [p for p in _modules() if p.relative_to(PKG).parts[0] in rooms]


@pytest.mark.parametrize("path", _rooms("fields"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_field_registry_is_free_of_io_and_adapters(path: Path) -> None:
    rel = path.relative_to(PKG)
    for module, line in _imports(path):
        top = module.split(".")[0]
        assert top not in IO_MODULES and module not in IO_MODULES, f"{rel}:{line} imports {module}"
        assert not module.startswith(ADAPTER_ROOTS), f"{rel}:{line} imports the adapter {module}"
        assert not module.startswith("controller.plan"), f"{rel}:{line}: the registry is below the planner"


@pytest.mark.parametrize("path", [p for p in _modules() if p.relative_to(PKG).parts[0] in
                                  ("fields", "model", "plan", "report", "spec")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_an_adapter(path: Path) -> None:
    rel = path.relative_to(PKG)
    bad = [(m, line) for m, line in _imports(path) if m.startswith(ADAPTER_ROOTS)]
    assert not bad, f"{rel}:{bad[0][1]} imports the adapter {bad[0][0]}"


@pytest.mark.parametrize("path", _rooms("hypervisor"), ids=lambda p: str(p.relative_to(ROOT)))
def test_hypervisor_imports_nothing_from_plan_apply_or_service(path: Path) -> None:
    rel = path.relative_to(PKG)
    bad = [(m, line) for m, line in _imports(path)
           if m.startswith(("controller.plan", "controller.apply", "controller.service", "controller.engine",
                            "controller.commands", "controller.cli", "controller.snapshots"))]
    assert not bad, f"{rel}:{bad[0][1]} imports {bad[0][0]}"


@pytest.mark.parametrize("path", _rooms("service"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_service_plans_only_through_the_engine(path: Path) -> None:
    """It may name the plan's types (controller.plan.actions), never call the planner."""
    rel = path.relative_to(PKG)
    bad = [(m, line) for m, line in _imports(path)
           if (m.startswith("controller.plan") and m != "controller.plan.actions")
           or m.startswith(("controller.apply", "controller.commands", "controller.cli"))]
    assert not bad, f"{rel}:{bad[0][1]} imports {bad[0][0]}: the service reaches planning through the engine"


@pytest.mark.parametrize("path", [p for p in _modules() if p.relative_to(PKG) != Path("cli.py")
                                  and p.relative_to(PKG) != Path("commands.py")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_below_the_cli_imports_the_commands(path: Path) -> None:
    rel = path.relative_to(PKG)
    bad = [(m, line) for m, line in _imports(path) if m == "controller.commands"]
    assert not bad, f"{rel}:{bad[0][1]} imports controller.commands"


@pytest.mark.parametrize("name", ["cli.py", "commands.py"])
def test_the_cli_reaches_hosts_and_the_planner_only_through_the_engine(name: str) -> None:
    bad = [(m, line) for m, line in _imports(PKG / name)
           if m.startswith(("controller.hypervisor", "controller.apply", "controller.plan.planner"))]
    assert not bad, f"controller/{name}:{bad[0][1]} imports {bad[0][0]}: go through controller.engine"
