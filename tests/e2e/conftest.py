"""Fixtures for end-to-end tests on hermetic libvirtd test hosts (tests/hosts/hermetic.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hosts.hermetic import (
    HermeticHost,
    HostFactory,
    live_hosts,
    missing_prerequisites,
    stop_all,
    stray_processes,
)


@pytest.fixture(scope="session")
def hermetic_session() -> Iterator[None]:
    """Skips when the machine cannot run hosts; at the end, fails if any host was leaked."""
    missing = missing_prerequisites()
    if missing:
        pytest.skip("hermetic libvirtd test hosts need: " + "; ".join(missing))
    yield
    leaked = [h.name for h in live_hosts()]
    stop_all()
    stray = stray_processes()
    assert not leaked, f"hermetic hosts left running after the tests: {leaked}"
    assert not stray, f"hermetic host processes survive the tests: pids {stray}"


@pytest.fixture
def hermetic_host_factory(
    hermetic_session: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostFactory]:
    """factory(name=None, listen_tcp=False) -> a started host; all are stopped afterwards."""
    # A short base keeps ROOT/run/libvirt-sock under the 107-byte AF_UNIX limit.
    factory = HostFactory(tmp_path_factory.mktemp("hh"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def hermetic_host(hermetic_host_factory: HostFactory) -> HermeticHost:
    """A fresh, started host of its own, stopped after the test."""
    return hermetic_host_factory("host")
