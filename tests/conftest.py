"""Options for the whole suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files (tests/unit/golden) from the code; review the diff after")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True, scope="session")
def _private_coordination(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Writers' host locks in a directory of this run, not the machine's /var/lib/virtsync
    (child processes inherit the variable)."""
    import os

    if "VIRTSYNC_COORDINATION" not in os.environ:
        os.environ["VIRTSYNC_COORDINATION"] = f"file://{tmp_path_factory.mktemp('coordination')}"
