"""Benchmarks run on demand (`make bench`), print their figures, and assert targets."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts.hermetic import HermeticHost, missing_prerequisites


@pytest.fixture
def host() -> Iterator[HermeticHost]:
    """A fresh hermetic libvirtd host of the benchmark's own."""
    missing = missing_prerequisites()
    if missing:
        pytest.fail("benchmarks need hermetic hosts: " + "; ".join(missing))
    with tempfile.TemporaryDirectory(prefix="vb", dir="/tmp") as base:
        h = HermeticHost(Path(base), "bench")
        h.start()
        try:
            yield h
        finally:
            h.stop()
