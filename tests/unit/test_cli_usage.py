"""Every option's bad value is a usage error (exit 64) that names what is accepted, never an
internal error; options that load specs all honour --max-file-size and VIRTSYNC_MAX_FILE_SIZE."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import EXIT_USAGE, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "examples" / "quickstart")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["snapshots", "run", "--at", "garbage", QUICKSTART], "2026-01-01T03:00:00Z"),
    (["snapshots", "run", "--at", "2026-01-01T03:00:00", QUICKSTART], "has no timezone"),
    (["apply", QUICKSTART, "--concurrency", "0"], "at least 1"),
    (["apply", QUICKSTART, "--max-deletions", "-1"], "0 or more"),
    (["apply", QUICKSTART, "--max-deletions", "many"], "0 or more"),
    (["plan", QUICKSTART, "--max-file-size", "3Q"], "unknown size unit"),
    (["plan", QUICKSTART, "--host-selector", "rack"], "KEY=VALUE"),
    (["plan", QUICKSTART, "--instance", "a/b"], "not a valid instance name"),
    (["place", QUICKSTART, "--overcommit", "-1"], "greater than 0"),
    (["place", QUICKSTART, "--overcommit", "nan"], "greater than 0"),
    (["serve", QUICKSTART, "--workers", "x"], "at least 1"),
    (["serve", QUICKSTART, "--thrash-limit", "0"], "at least 1"),
    (["serve", QUICKSTART, "--listen", ":99999"], "0-65535"),
    (["serve", QUICKSTART, "--listen", "localhost"], "HOST:PORT"),
    (["serve", QUICKSTART, "--resync", "5"], "a duration such as"),
    (["serve", QUICKSTART, "--notify", "ftp://example.net"], "http:// or https://"),
    (["serve", QUICKSTART, "--host-selector", "=a"], "KEY=VALUE"),
    (["serve", QUICKSTART, "--max-file-size", "big"], "expected a size with a unit"),
    (["serve", QUICKSTART, "--hook-secret-file", "/nonexistent/secret"], "cannot read it"),
    (["serve", QUICKSTART, "--git-token-file", "/nonexistent/token"], "no such readable file"),
    (["export", "--host", "kvm1", "--max-file-size", "3Q"], "unknown size unit"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_option_value_exits_64_and_names_what_is_accepted(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(argv, capsys)
    assert code == EXIT_USAGE, err
    assert says in err
    assert "internal error" not in err and "Traceback" not in err


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_option_takes_a_bare_number_converter_without_a_range() -> None:
    # int/float accept 0, negatives, nan and inf, which then fail deep inside as internal errors.
    loose = [f"{prog} {'/'.join(a.option_strings)}" for prog, p in _parsers(build_parser())
             for a in p._actions if a.type in (int, float)]
    assert not loose, loose


LOADING_VERBS = [
    ["validate", QUICKSTART], ["plan", QUICKSTART], ["apply", QUICKSTART], ["drift", QUICKSTART],
    ["place", QUICKSTART], ["serve", QUICKSTART], ["export", "--host", "kvm1", "--specs", QUICKSTART],
    ["snapshots", "run", QUICKSTART], ["snapshots", "list", QUICKSTART],
    ["snapshots", "restore", "g", "s", QUICKSTART],
]


@pytest.mark.parametrize("argv", LOADING_VERBS, ids=lambda v: " ".join(v[:2]))
def test_every_verb_that_loads_specs_takes_max_file_size_and_its_environment_variable(
        argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(argv).max_file_size == 8 * 1024**2
    assert build_parser().parse_args([*argv, "--max-file-size", "1KiB"]).max_file_size == 1024
    monkeypatch.setenv("VIRTSYNC_MAX_FILE_SIZE", "2MiB")
    assert build_parser().parse_args(argv).max_file_size == 2 * 1024**2


def test_export_from_specs_refuses_a_spec_file_over_the_size_limit(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["export", "--host", "kvm1", "--specs", QUICKSTART, "--max-file-size", "100"], capsys)
    assert code == 1
    assert "over the limit of 100 (--max-file-size)" in err


def test_serve_takes_a_host_selector(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["serve", QUICKSTART, "--host-selector", "rack=a",
                                      "--host-selector", "zone=1"])
    assert args.host_selector == ["rack=a", "zone=1"]


def test_serve_with_a_host_selector_reconciles_only_the_hosts_with_those_labels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.service.runner import Service

    docs = []
    for name, rack in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        docs.append(f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: {name}, labels: {{rack: {rack}}}}}\n"
                    f"spec: {{uri: 'test://{tmp_path}/{name}.xml'}}\n---\n"
                    f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: g-{name}}}\n"
                    f"spec: {{host: {name}, memory: 64MiB}}\n")
    (tmp_path / "specs.yaml").write_text("---\n".join(docs))
    seen: list[Service] = []
    monkeypatch.setattr(Service, "run", lambda self: seen.append(self) or 0)  # parse and wire, do not serve
    assert main(["serve", str(tmp_path / "specs.yaml"), "--host-selector", "rack=a"]) == 0
    service = seen[0]
    assert service.opts.host_selector == ["rack=a"]
    service.reload("test")
    specs, _ = service.desired.snapshot()
    assert specs is not None
    assert sorted(h.metadata.name for h in specs.hosts) == ["a1", "a2"]
    assert sorted(g.metadata.name for g in specs.guests) == ["g-a1", "g-a2"]


def test_a_command_line_builds_only_its_verbs_parser_and_an_unknown_verb_lists_them_all(
        capsys: pytest.CaptureFixture[str]) -> None:
    from controller.launch import named_verb as _named_verb

    assert _named_verb(["-v", "--debug", "plan", "specs"]) == "plan" and _named_verb(["--version"]) is None
    plan_only = build_parser(only="plan")
    verbs = next(a for a in plan_only._actions if isinstance(a, argparse._SubParsersAction))
    assert list(verbs.choices) == ["plan"]
    assert plan_only.parse_args(["plan", QUICKSTART, "--max-file-size", "1KiB"]).max_file_size == 1024
    code, err = run(["plna", QUICKSTART], capsys)
    assert code == EXIT_USAGE and "invalid choice: 'plna'" in err and "'apply'" in err and "'serve'" in err
