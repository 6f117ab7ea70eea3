"""The corpus of bad specs: each file fails `virtsync validate` with exactly the errors it expects.

Every file under tests/corpus/bad/ starts with one or more header lines

    # expect: LINE:COL: substring of the message

(LINE:COL 1-based, counting the header lines), one per error the file must produce,
and nothing else: each file is self-contained, so only the intended errors fire.
Inputs that cannot carry such a header (binary, non-UTF-8, huge files) are generated
in test_hostile_input.py instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# A hang guard, not a speed target: a validate process takes ~0.5 s idle, but several seconds
# on a machine at load 12, where 10 s aborted whole unit runs.
pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "bad"
_EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$")
_DIAGNOSTIC = re.compile(r"^(.+):(\d+):(\d+): (error|warning): (.+)$")


@dataclass(frozen=True)
class Expected:
    line: int
    column: int
    text: str


def expectations(path: Path) -> list[Expected]:
    out = []
    for header in path.read_text(encoding="utf-8").splitlines():
        m = _EXPECT.match(header)
        if not m:
            break
        out.append(Expected(int(m[1]), int(m[2]), m[3]))
    return out


def validate(*paths: Path, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", "validate", *map(str, paths)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def errors_in(stderr: str, path: Path) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(f"{path}:") and ": error: " in ln]


def has(stderr: str, path: Path, exp: Expected) -> bool:
    prefix = f"{path}:{exp.line}:{exp.column}: error: "
    return any(ln.startswith(prefix) and exp.text in ln for ln in stderr.splitlines())


CASES = sorted(CORPUS.glob("*.yaml"))


def test_corpus_is_large_and_every_file_says_what_it_expects() -> None:
    assert len(CASES) >= 45
    for path in CASES:
        assert re.match(r"^\d{2,3}-[a-z0-9-]+\.yaml$", path.name), path.name
        assert expectations(path), f"{path.name} has no '# expect: LINE:COL: message' header"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_spec_fails_with_its_expected_errors(path: Path) -> None:
    expected = expectations(path)
    result = validate(path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in result.stderr
    for exp in expected:
        assert has(result.stderr, path, exp), (
            f"expected {path.name}:{exp.line}:{exp.column}: error: …{exp.text}…\ngot:\n"
            + result.stderr
        )
    # Exactly the intended errors: the file is self-contained.
    assert len(errors_in(result.stderr, path)) == len(expected), result.stderr
    # Every line is a one-line diagnostic naming file:line:column, or the summary.
    for line in result.stderr.splitlines():
        assert _DIAGNOSTIC.match(line) or line.startswith("invalid: "), line


def test_all_bad_specs_in_one_run_report_every_file_together() -> None:
    result = validate(*CASES)

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    missing = [
        f"{path.name}:{exp.line}:{exp.column}: {exp.text}"
        for path in CASES
        for exp in expectations(path)
        if not has(result.stderr, path, exp)
    ]
    assert not missing, "\n".join(missing)
    assert f"in {len(CASES)} file(s)" in result.stderr.splitlines()[-1]


def test_python_tag_in_the_corpus_is_never_executed() -> None:
    # 03-python-object-tag would run `touch /tmp/virtsync-corpus-pwned` if constructed.
    marker = Path("/tmp/virtsync-corpus-pwned")
    marker.unlink(missing_ok=True)
    validate(CORPUS / "03-python-object-tag.yaml")
    assert not marker.exists()
