"""The README says what the code does: its CLI tables come from the parser, and what it lists
(test markers, notification events, environment variables, files, the image tag) exists."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _gen_readme() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_readme", ROOT / "scripts" / "gen_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_tables_are_generated_from_the_argument_parser_and_current(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIRTSYNC_INSTANCE", "VIRTSYNC_MAX_FILE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    gen = _gen_readme()
    assert README.count(gen.BEGIN) == 1 and gen.END in README.split(gen.BEGIN)[1]
    assert gen.update(README) == README, "README.md's CLI tables are stale: run scripts/gen_readme.py"


def test_the_generated_tables_name_every_verb_and_option() -> None:
    import argparse

    from controller.cli import build_parser

    section = README.split(_gen_readme().BEGIN)[1].split(_gen_readme().END)[0]
    for name in ("validate", "plan", "apply", "drift", "serve", "snapshots run", "snapshots list",
                 "snapshots restore", "place", "export", "schema"):
        assert f"`virtsync {name}" in section, name

    def options(p: argparse.ArgumentParser) -> set[str]:
        found = {o for a in p._actions for o in a.option_strings
                 if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)}
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    found |= options(sub)
        return found

    missing = sorted(o for o in options(build_parser()) if not any(f"{o}{end}" in section for end in " `,"))
    assert not missing, missing


def test_every_pytest_marker_is_listed_in_the_development_section() -> None:
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    development = README.split("## Development", 1)[1]
    names = [m.split(":", 1)[0] for m in markers]
    assert "kvm" in names
    missing = [n for n in names if f"`{n}`" not in development]
    assert not missing, missing


def test_every_notification_event_is_listed_with_notify() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "controller" / "service").glob("*.py"))
    events = set(re.findall(r'notifier\.send\(\s*"([a-z-]+)"', source))
    # an event chosen by a condition: event = "apply-failed" if … else "drift"
    events |= {e for pair in re.findall(r'event = "([a-z-]+)" if .* else "([a-z-]+)"', source) for e in pair}
    assert {"drift", "apply-failed", "recovered", "invalid-specs"} <= events
    notify = README[README.index("`--notify URL` POSTs JSON"):].split("\n\n", 1)[0]
    missing = sorted(e for e in events if f"`{e}`" not in notify)
    assert not missing, missing


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "controller").rglob("*.py"))
    names = {n for n in re.findall(r"VIRTSYNC_[A-Z_]+", source) if "_TEST_" not in n}
    assert "VIRTSYNC_MAX_FILE_SIZE" in names
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert not missing, missing


def test_files_the_readme_names_exist_and_it_names_no_missing_design_document() -> None:
    assert "DESIGN.md" not in README
    named = set(re.findall(r"\]\(((?!https?:)[^)#]+)\)", README))
    named |= {m.rstrip(".,:;") for m in re.findall(
        r"`((?:scripts|tests|controller|docs|examples|specs)/[\w./-]+)", README)}
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing


def test_the_image_the_readme_runs_is_the_one_the_build_script_builds() -> None:
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    tag = re.search(r"^TAG=\$\{1:-([^}]+)\}", script, re.M)
    assert tag is not None
    run_line = next(line for line in README.splitlines() if "--group-add" in line)
    assert run_line.split()[-1] == tag[1]
    assert "virtsync:latest" not in README


def test_the_xen_section_documents_boot_pool_uploads() -> None:
    xen = README.split("## Xen", 1)[1].split("\n## ", 1)[0]
    assert "boot.pool" in xen and "storageVolUpload" in xen
    assert "Not done yet" not in xen
