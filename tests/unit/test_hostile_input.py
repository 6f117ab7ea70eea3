"""Hostile input to `virtsync validate`: every case ends promptly with one clear line.

Each case runs the CLI in a subprocess with its address space capped at 1 GiB, so a
memory blow-up fails the test instead of the machine, and with a 30 s timeout, so a
hang fails too. An error must be one line naming file:line:column; never a traceback.

Choices made here: an empty file, a file of only comments or blank lines, and empty
documents (`---`) are harmless: valid with "no objects" and exit 0 (a directory with
no spec files at all is an error, though). A long line is not an error by itself,
only a bad value on it, and then the message quotes it clipped to one short line.
"""

from __future__ import annotations

import os
import random
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.spec.loader import load_specs
from controller.spec.yaml_reader import Limits

pytestmark = pytest.mark.timeout(30)  # a hang guard: a busy machine (load 3) took 10 s once

ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 1 << 30
_DIAGNOSTIC = re.compile(r"^(.+):(\d+):(\d+): (error|warning): (.+)$")

HOST = """apiVersion: virtsync/v1
kind: Host
metadata:
  name: h1
spec:
  uri: qemu:///system
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def validate(*args: str | Path, env: dict[str, str] | None = None,
             timeout: float = 25) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", "validate", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        preexec_fn=_cap_memory, env={**os.environ, **(env or {})},
    )


def cpu_time(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """validate() and the CPU seconds it took: unlike wall time, unaffected by a busy machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = validate(*args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def one_error(result: subprocess.CompletedProcess[str], path: Path) -> tuple[int, int, str]:
    """The run failed cleanly with exactly one one-line error about ``path``."""
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert "internal error" not in out, out
    assert result.returncode == 1, out
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith("invalid: 1 error(s)"), out
    m = _DIAGNOSTIC.match(lines[0])
    assert m and m[1] == str(path) and m[4] == "error", lines[0]
    return int(m[2]), int(m[3]), m[5]


def write(tmp_path: Path, data: str | bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


# ------------------------------------------------------------------ aliases


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    lines = [f'l0: &l0 "{"lol" * 3}"']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs())
    result, seconds = cpu_time(path)
    line, col, message = one_error(result, path)
    assert seconds < 3
    assert "too many alias expansions" in message
    # l1-l4 cost 12340 nodes; each *l4 costs 11111, so the 8th alias of l5 breaks 100000.
    assert (line, col) == (6, 10 + 7 * len("*l4, "))


@pytest.mark.parametrize(
    "text",
    [
        # mappings merged into each other: each level doubles ten times over
        "a: &a {x: 1, y: 2, z: 3}\n"
        + "".join(
            f"{c}: &{c} {{{', '.join(f'k{i}: *{p}' for i in range(10))}}}\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        # a flat list of many aliases to one small value
        "a: &a [x, y, z]\nb: [" + ", ".join(["*a"] * 50_000) + "]\n",
        # merge keys that repeat a big anchor
        "a: &a {"
        + ", ".join(f"k{i}: v" for i in range(2000))
        + "}\n"
        + "".join(f"m{i}: {{<<: *a}}\n" for i in range(200)),
    ],
    ids=["nested-mappings", "flat-aliases", "merge-keys"],
)
def test_alias_bomb_variants_are_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    _, _, message = one_error(validate(path), path)
    assert "too many alias expansions" in message


# -------------------------------------------------------------------- size


def test_50_mb_file_is_refused_before_parsing(tmp_path: Path) -> None:
    # If it were parsed it would be a list, and reading it would take seconds.
    path = write(tmp_path, b"- [a, b, c, d, e, f]\n" * (50 * 1024 * 1024 // 21 + 1))
    size = path.stat().st_size
    assert size > 50 * 1024 * 1024
    result, seconds = cpu_time(path)
    line, col, message = one_error(result, path)
    assert seconds < 2
    assert (line, col) == (1, 1)
    assert message == f"file is {size} bytes, over the limit of {8 * 1024 * 1024} (--max-file-size)"


def _spec_of_about(size: int) -> str:
    text = HOST.replace("  name: h1\n", "  name: h1\n  annotations:\n")
    i = 0
    while len(text) < size:
        text = text.replace("spec:\n", f"    note{i}: {'x' * 50}\nspec:\n")
        i += 1
    return text


def test_max_file_size_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, _spec_of_about(2048))
    size = path.stat().st_size
    assert 2048 <= size < 2200

    _, _, message = one_error(validate(path, "--max-file-size", "1KiB"), path)
    assert message == f"file is {size} bytes, over the limit of 1024 (--max-file-size)"

    ok = validate(path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("valid: 1 file(s), 1 Host")
    assert validate(path, "--max-file-size", "4096").returncode == 0


def test_max_file_size_comes_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, _spec_of_about(2048))
    _, _, message = one_error(validate(path, env={"VIRTSYNC_MAX_FILE_SIZE": "1024"}), path)
    assert message.endswith("over the limit of 1024 (--max-file-size)")


def test_max_file_size_from_the_environment_takes_units(tmp_path: Path) -> None:
    path = write(tmp_path, _spec_of_about(2048))
    _, _, message = one_error(validate(path, env={"VIRTSYNC_MAX_FILE_SIZE": "1KiB"}), path)
    assert message.endswith("over the limit of 1024 (--max-file-size)")


def test_max_file_size_that_is_not_a_size_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, HOST)
    result = validate(path, "--max-file-size", "lots")
    assert result.returncode == 64
    assert "Traceback" not in result.stderr
    assert "--max-file-size" in result.stderr


def test_file_of_tiny_nodes_under_the_size_limit_is_capped(tmp_path: Path) -> None:
    # 2.5 MB of "a," is 1.3 million nodes; a 3 MiB size limit allows 524288 of them.
    path = write(tmp_path, "[" + "a," * (1_300_000) + "a]\n")
    result, seconds = cpu_time(path, "--max-file-size", "3MiB")
    line, col, message = one_error(result, path)
    assert seconds < 6
    assert message.startswith("more than 524288 YAML nodes (keys and values) in one file")
    assert line == 1 and col > 1


def test_many_empty_documents_are_capped(tmp_path: Path) -> None:
    path = write(tmp_path, "---\n" * 200_000)
    _, _, message = one_error(validate(path, "--max-file-size", "1MiB"), path)
    assert "YAML nodes" in message


# --------------------------------------------------------- bytes, encodings


def test_binary_garbage_is_refused_at_its_first_nul(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(64 * 1024)
    assert b"\x00" in data
    path = write(tmp_path, data)
    line, col, message = one_error(validate(path), path)
    first = data.index(b"\x00")
    assert line == data.count(b"\n", 0, first) + 1
    assert col == first - (data.rfind(b"\n", 0, first) + 1) + 1
    assert message == "binary data (a NUL byte), not a YAML text file"


def test_random_bytes_without_nul_are_refused_as_not_utf8(tmp_path: Path) -> None:
    data = bytes(b or 0xFF for b in random.Random(7).randbytes(64 * 1024))
    path = write(tmp_path, data)
    _, _, message = one_error(validate(path), path)
    assert message.startswith("not valid UTF-8 (byte 0x")


def test_latin1_file_is_refused_with_the_position_of_the_bad_byte(tmp_path: Path) -> None:
    path = write(tmp_path, HOST.replace("uri: qemu:///system", "uri: qemu:///système")
                 .encode("latin-1"))
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (6, 20)
    assert message == "not valid UTF-8 (byte 0xe8); save the file as UTF-8"


def test_utf16_file_is_refused_as_binary(tmp_path: Path) -> None:
    path = write(tmp_path, HOST.encode("utf-16"))
    _, _, message = one_error(validate(path), path)
    assert "binary data" in message


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + HOST.encode())
    assert validate(path).returncode == 0


@pytest.mark.parametrize("char", ["\x07", "\x1b", "\x7f", "\ufffe"])
def test_control_characters_are_refused_where_they_are(tmp_path: Path, char: str) -> None:
    path = write(tmp_path, HOST.replace("name: h1", f"name: é{char}"))
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (4, 10)
    assert message == f"invalid YAML: control characters are not allowed (U+{ord(char):04X})"


# ------------------------------------------------------------------ nesting


@pytest.mark.parametrize(
    ("text", "mark"),
    [
        ("[" * 100_000, (1, 65)),
        ("{a: " * 100_000, (1, 4 * 64 + 1)),
        ("".join(" " * i + "a:\n" for i in range(2000)), (65, 65)),
        ("- " * 5000 + "x\n", (1, 129)),
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings", "block-sequences"],
)
def test_deep_nesting_is_capped_without_recursion(
    tmp_path: Path, text: str, mark: tuple[int, int]
) -> None:
    path = write(tmp_path, text)
    result = validate(path)
    assert result.returncode == 1  # not a crash (-11) from a C or Python stack overflow
    line, col, message = one_error(result, path)
    assert message == "nesting deeper than 64 levels"
    assert (line, col) == mark


def test_a_million_open_brackets_end_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, "[" * (1024 * 1024))
    result, seconds = cpu_time(path)
    _, _, message = one_error(result, path)
    assert seconds < 3
    assert "nesting deeper" in message


# ------------------------------------------------------------ YAML features


def test_tab_indentation_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, HOST.replace("  uri:", "\turi:"))
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (6, 1)
    assert message.endswith("(a tab: YAML indents with spaces only)")


def test_duplicate_keys_name_both_positions(tmp_path: Path) -> None:
    path = write(tmp_path, HOST + "spec:\n  uri: test:///default\n")
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (7, 1)
    assert message == "duplicate key 'spec' (first defined at line 5, column 1)"


@pytest.mark.parametrize(
    "value",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        '!!python/object/new:os.system ["touch {marker}"]',
        "!!python/object/apply:subprocess.call [[touch, {marker}]]",
        "!!python/name:os.system",
        "!!python/module:os",
        '!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {marker}"]',
        '!py!object/apply:os.system ["touch {marker}"]',
    ],
    ids=["apply", "new", "subprocess", "name", "module", "verbatim", "tag-directive"],
)
def test_python_tags_are_refused_and_never_executed(tmp_path: Path, value: str) -> None:
    marker = tmp_path / "executed"
    text = HOST.replace("uri: qemu:///system", f"uri: {value.format(marker=marker)}")
    if value.startswith("!py!"):
        text = "%TAG !py! tag:yaml.org,2002:python/\n---\n" + text
    path = write(tmp_path, text)
    _, col, message = one_error(validate(path), path)
    assert "is not allowed: specs hold plain data only" in message
    assert message.startswith("tag !!python/")
    assert col == 8
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!timestamp 2001-12-14", "!!timestamp"),
        ("!!set {a, b}", "!!set"),
        ("!!omap [a: 1]", "!!omap"),
        ("!foo bar", "!foo"),
        ("!foo {a: 1}", "!foo"),
        ("!foo [a]", "!foo"),
        ("!<tag:example.com,2024:thing> x", "tag:example.com,2024:thing"),
    ],
)
def test_other_tags_are_refused(tmp_path: Path, value: str, tag: str) -> None:
    path = write(tmp_path, HOST.replace("uri: qemu:///system", f"uri: {value}"))
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (6, 8)
    assert message == f"tag {tag} is not allowed: specs hold plain data only"


def test_very_long_bad_value_gives_a_short_one_line_message(tmp_path: Path) -> None:
    path = write(tmp_path, HOST.replace("name: h1", "name: " + "h" * 1_000_000))
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (4, 9)
    assert len(message) <= 300
    assert message.startswith("metadata.name: 'hhhh")
    assert message.endswith("is not a valid name: use 1-63 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")


def test_very_long_line_is_fine_when_its_value_is(tmp_path: Path) -> None:
    path = write(tmp_path, HOST + "  migrationAddress: " + "a" * 1_000_000 + "\n")
    result = validate(path)
    assert result.returncode == 0, result.stderr[:500]


def test_very_long_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, HOST + "  " + "k" * 100_000 + ": 1\n")
    line, _, message = one_error(validate(path), path)
    assert line == 7
    assert message.startswith("invalid YAML:")


def test_huge_integer_is_refused_without_converting_it(tmp_path: Path) -> None:
    path = write(tmp_path, HOST + "---\napiVersion: virtsync/v1\nkind: Guest\nmetadata:\n"
                 "  name: g1\nspec:\n  host: h1\n  vcpus: " + "9" * 100_000 + "\n")
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (14, 10)
    assert message == "integer of 100000 digits is too large (at most 100)"


# ------------------------------------------------------------- empty input


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n# and another\n", "---\n", "--- # nothing\n...\n"],
    ids=["empty", "blank-lines", "comments", "document-marker", "empty-document"],
)
def test_empty_file_is_valid_with_no_objects(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    result = validate(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "valid: 1 file(s), no objects\n"
    assert result.stderr == ""


def test_document_that_is_only_a_scalar_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "hello\n")
    line, col, message = one_error(validate(path), path)
    assert (line, col) == (1, 1)
    assert message.startswith("document 1 is not a mapping (got string 'hello')")


# -------------------------------------------------------- special files


def test_fifo_in_a_spec_directory_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    line, col, message = one_error(validate(tmp_path), fifo)
    assert (line, col, message) == (1, 1, "not a regular file")


def test_fifo_named_on_the_command_line_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    _, _, message = one_error(validate(fifo), fifo)
    assert message == "not a regular file or directory"


def test_device_named_on_the_command_line_is_not_read() -> None:
    _, _, message = one_error(validate("/dev/zero"), Path("/dev/zero"))
    assert message == "not a regular file or directory"


# ------------------------------------------------------------------- fuzz

_YAMLISH = st.lists(
    st.sampled_from([*"[]{}:,-?&*!|>'\"#%@`~ \n\t.ab01xé\x00", "<<", "---", "!!int ", "&a ", "*a"]),
    max_size=80,
).map("".join)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.one_of(st.binary(max_size=300), _YAMLISH.map(str.encode)))
def test_loader_never_raises_on_arbitrary_input(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        result = load_specs([path], Limits(max_nodes=10_000))
    for d in result.diagnostics:
        assert d.line >= 1 and d.column >= 1
        assert "\n" not in d.message
        assert d.file == str(path)
