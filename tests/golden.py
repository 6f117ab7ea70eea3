"""Golden files: compared, and written only when asked (`pytest --update-golden`)."""

from __future__ import annotations

from pathlib import Path

import pytest


def assert_golden(path: Path, text: str, update: bool) -> None:
    """``text`` equals the golden file; a missing file is a failure, never silently created."""
    if update:
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"golden file {path.name} is missing: run `pytest --update-golden` and review it")
    assert text == path.read_text(), f"{path.name} differs from the code's output (pytest --update-golden)"
