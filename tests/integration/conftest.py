"""Integration tests on libvirt's test driver: real libvirt, no daemon, no mocks.

Every test writes its own host XML under tmp_path and connects with
``test:///{tmp_path}/host.xml`` (never the shared ``test:///default``). The
test driver keeps its state only for the life of a connection, and virtsync
keeps one connection per host per process (``SHARED_POOL``), so several CLI
runs in one test see one host; the pool is closed after every test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from controller.cli import main
from controller.engine import SHARED_POOL

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
HOST = "kvm1"
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


# ------------------------------------------------------------------ hosts


def write_host(directory: Path, body: str = "", name: str = "host.xml") -> str:
    """A private test-driver host holding ``body`` (domains, networks); returns its URI."""
    path = directory / name
    path.write_text(f"<node>\n{body}\n</node>\n")
    return f"test://{path}"


def unmanaged_domain(name: str, memory_mib: int = 64, running: bool = True) -> str:
    """A domain for the host XML that virtsync does not own (no ownership metadata)."""
    # The test driver starts the domains of its file unless told otherwise (5: shut off).
    state = "" if running else "<test:runstate>5</test:runstate>"
    return (f"<domain type='test' xmlns:test='{TEST_NS}'><name>{name}</name>"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
            f"{state}</domain>")


def unmanaged_network(name: str, third_octet: int) -> str:
    return (f"<network><name>{name}</name><forward mode='nat'/>"
            f"<bridge name='vbr{third_octet}'/><ip address='10.9.{third_octet}.1' prefix='24'>"
            f"<dhcp><range start='10.9.{third_octet}.10' end='10.9.{third_octet}.50'/></dhcp>"
            "</ip></network>")


def connection(uri: str, host: str = HOST) -> libvirt.virConnect:
    """The very connection virtsync's CLI uses for ``host`` in this process."""
    return SHARED_POOL.for_host(host, uri).get()


# ------------------------------------------------------------------ specs


def host_doc(uri: str, name: str = HOST) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "Host", "metadata": {"name": name},
            "spec": {"uri": uri}}


def guest_doc(name: str, host: str = HOST, labels: dict[str, str] | None = None,
              **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": meta,
            "spec": {"host": host, **spec}}


def network_doc(name: str, host: str = HOST, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "Network", "metadata": {"name": name},
            "spec": {"host": host, **spec}}


def write_specs(directory: Path, docs: Sequence[dict[str, Any]], name: str = "specs.yaml") -> Path:
    """Multi-document YAML (each document written as JSON, which YAML reads as is)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("".join(f"---\n{json.dumps(d, indent=2)}\n" for d in docs))
    return path


def quickstart_copy(tmp_path: Path) -> Path:
    """examples/quickstart copied under tmp_path (tests may edit the copy)."""
    dest = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, dest)
    return dest


# -------------------------------------------------------------------- CLI


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


VirtsyncCli = Callable[..., Run]


@pytest.fixture
def virtsync(capsys: pytest.CaptureFixture[str]) -> Iterator[VirtsyncCli]:
    """Run ``virtsync ARGS…`` in this process (so it shares the test driver's state)."""

    def run(*argv: str | Path) -> Run:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    yield run
    SHARED_POOL.close()


@pytest.fixture(autouse=True)
def _fresh_pool() -> Iterator[None]:
    """No connection (and so no test-driver state) leaks from one test into another."""
    SHARED_POOL.close()
    yield
    SHARED_POOL.close()


def domain_state(conn: libvirt.virConnect, name: str) -> int:
    return int(conn.lookupByName(name).state()[0])


def snapshot(conn: libvirt.virConnect) -> dict[str, Any]:
    """Everything observable on a test host, to show that a refused run changed nothing."""
    doms = {}
    for d in conn.listAllDomains(0):
        doms[d.name()] = (d.isActive(), d.isPersistent(), d.autostart(), d.ID(),
                          d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), d.XMLDesc(0))
    nets = {n.name(): (n.isActive(), n.autostart(), n.XMLDesc(0)) for n in conn.listAllNetworks(0)}
    return {"domains": doms, "networks": nets}
