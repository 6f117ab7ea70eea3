"""The service's container image, built for real and run: scripts/build-image.sh, then buildah.

No Docker engine runs here: scripts/build-image.sh builds the Dockerfile with Debian's buildah
(chroot isolation, vfs storage) on a debootstrapped stand-in for debian:bookworm-slim, and the
commands run inside a working container made from the image with `buildah run`. The built
image and the base image stay in the store (the second run takes seconds); the working
containers are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.service, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-image.sh"
IMAGE = "virtsync:dev"
STORE = ["--storage-driver", "vfs"]
EXAMPLES = "/usr/share/virtsync/examples"
BUILD_TIMEOUT = 840  # seconds; under the test's own timeout, so a stuck build fails cleanly


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _build_image() -> str | None:
    """Runs scripts/build-image.sh, echoing its output as it comes; None, or why it failed."""
    lines: list[str] = []
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BUILD), IMAGE], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    timer = threading.Timer(BUILD_TIMEOUT, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        code = proc.wait()
    finally:
        timer.cancel()
    secs = time.monotonic() - started
    tail = "".join(lines[-40:])
    if secs >= BUILD_TIMEOUT:
        return f"scripts/build-image.sh ran over {BUILD_TIMEOUT} s and was killed:\n{tail}"
    if code != 0:
        return f"scripts/build-image.sh failed (exit {code}) after {secs:.0f} s:\n{tail}"
    return None


@pytest.fixture(scope="module")
def build_failure() -> str | None:
    """Builds the image once for the module: None, or why the build failed."""
    if os.geteuid() != 0:
        pytest.skip("building the image needs root (buildah with vfs storage, debootstrap)")
    if shutil.which("apt-get") is None:
        pytest.skip("building the image needs a Debian or Ubuntu machine (apt-get)")
    return _build_image()


@pytest.fixture(scope="module")
def image(build_failure: str | None) -> str:
    """The built image; a failed build fails test_the_image_builds only, and skips the rest."""
    if build_failure is not None:
        pytest.skip("the image did not build (see test_the_image_builds)")
    return IMAGE


@pytest.fixture(scope="module")
def config(image: str) -> dict[str, object]:
    """The OCI image configuration (`config` of `buildah inspect --type image`)."""
    res = _run(["buildah", "inspect", *STORE, "--type", "image", image])
    assert res.returncode == 0, res.stderr
    oci = json.loads(res.stdout)["OCIv1"]
    cfg = oci["config"]
    assert isinstance(cfg, dict)
    return cfg


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    """A working container made from the image; removed afterwards."""
    res = _run(["buildah", "from", *STORE, "--pull=never", image], timeout=300)
    assert res.returncode == 0, res.stderr
    name = res.stdout.strip().splitlines()[-1]
    try:
        yield name
    finally:
        _run(["buildah", "rm", *STORE, name], timeout=300)


def run_in(container: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Runs cmd in the container as the image's user (`buildah run` honours USER).

    One more try if the command was SIGKILLed from outside ("subprocess exited on killed"):
    seen while another run of the suite stopped its hermetic hosts, whose clean-up kills
    by namespace inode number, and the kernel hands a freed number to the next new mount
    namespace, such as the one `buildah run` makes.
    """
    argv = ["buildah", "run", "--isolation", "chroot", *STORE, container, "--", *cmd]
    res = _run(argv)
    if res.returncode != 0 and "exited on killed" in res.stderr:
        res = _run(argv)
    return res


def test_the_image_builds(build_failure: str | None) -> None:
    assert build_failure is None, build_failure


def test_version_runs_in_the_image(container: str) -> None:
    res = run_in(container, "virtsync", "--version")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "virtsync 0.1.0"


def test_the_examples_validate_in_the_image(container: str) -> None:
    res = run_in(container, "virtsync", "validate", EXAMPLES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid:" in res.stdout
    assert "Guest" in res.stdout and "Host" in res.stdout


def test_commands_run_as_the_unprivileged_user(container: str) -> None:
    res = run_in(container, "id", "-u")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "10001"


def test_git_and_ssh_are_there_for_serve_git(container: str) -> None:
    """`virtsync serve --git URL` runs git (and ssh for ssh:// repositories and qemu+ssh://)."""
    res = run_in(container, "sh", "-c", "git --version && ssh -V 2>&1 && echo home=$HOME")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "git version" in res.stdout and "OpenSSH" in res.stdout
    assert "home=/var/lib/virtsync" in res.stdout


def test_libvirt_comes_from_debian(container: str) -> None:
    """python3-libvirt (Debian's), not a libvirt-python built from PyPI's sources."""
    code = "import libvirt; print(libvirt.__file__); print(libvirt.getVersion())"
    res = run_in(container, "python3", "-c", code)
    assert res.returncode == 0, res.stdout + res.stderr
    path, version = res.stdout.split()
    assert path.startswith("/usr/lib/python3/dist-packages/"), path
    assert int(version) >= 9_000_000, version  # the client library, libvirt0 9.0 or newer


def test_the_image_runs_as_a_non_root_user(config: dict[str, object]) -> None:
    user = str(config.get("User", ""))
    assert user not in ("", "0", "root") and not user.startswith(("0:", "root:")), user


def test_the_image_serves_the_specs_in_slash_specs(config: dict[str, object]) -> None:
    assert config.get("Cmd") == ["virtsync", "serve", "/specs", "--listen", "0.0.0.0:8080",  # beyond localhost:
                                 "--tls-cert", "/run/virtsync/tls.crt", "--tls-key", "/run/virtsync/tls.key",
                                 "--token-file", "/run/virtsync/token"]  # only with TLS and a token
    assert not config.get("Entrypoint")
    ports = config.get("ExposedPorts") or {}
    assert isinstance(ports, dict) and "8080/tcp" in ports, ports
