"""Packaging: a wheel built with `python -m build` from a clean copy of the tree installs into
a fresh venv and runs; the version is written in one place; the image's labels follow OCI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

import controller

pytestmark = [pytest.mark.e2e, pytest.mark.ecosystem, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
VERSION = controller.__version__
# The annotation keys the OCI image spec predefines (image-spec, annotations.md).
OCI_KEYS = {f"org.opencontainers.image.{k}" for k in (
    "created", "authors", "url", "documentation", "source", "version", "revision", "vendor", "licenses",
    "ref.name", "title", "description", "base.digest", "base.name")}


def _run(cmd: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def clean_copy(dest: Path) -> Path:
    """The tree as git sees it (tracked and new files, nothing ignored: no .venv, .cache,
    build output or egg-info), copied to DEST."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT).stdout
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # deleted in the working tree: not part of it
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    return dest


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel of a clean copy, built by `python -m build` (the wheel from the sdist)."""
    base = tmp_path_factory.mktemp("pkg")
    src = clean_copy(base / "src")
    out = base / "dist"
    built = _run([sys.executable, "-m", "build", "--outdir", str(out), str(src)], base)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


def _wheel(dist: Path) -> Path:
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"virtsync-{VERSION}-py3-none-any.whl"]
    return wheels[0]


def test_wheel_carries_every_module_the_schemas_and_the_one_version(dist: Path) -> None:
    assert (dist / f"virtsync-{VERSION}.tar.gz").is_file()
    with zipfile.ZipFile(_wheel(dist)) as whl:
        names = set(whl.namelist())
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "controller").rglob("*.py")
                   if "__pycache__" not in p.parts}
        assert modules and not modules - names, sorted(modules - names)
        data = f"virtsync-{VERSION}.data/data/share/virtsync/specs/"
        shipped = {n.removeprefix(data) for n in names if n.startswith(data)}
        assert shipped == {p.name for p in (ROOT / "specs").glob("*.json")}
        for name in shipped:
            assert whl.read(data + name) == (ROOT / "specs" / name).read_bytes(), name
        meta = whl.read(f"virtsync-{VERSION}.dist-info/METADATA").decode()
        assert re.search(rf"^Version: {re.escape(VERSION)}$", meta, re.M)
        assert "virtsync = controller.launch:run" in whl.read(f"virtsync-{VERSION}.dist-info/entry_points.txt").decode()


def test_wheel_installs_into_a_fresh_venv_and_validates_the_quickstart(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    # --no-compile: byte-compiling every dependency is most of an install's time, and not what is tested
    installed = _run([str(venv / "bin" / "pip"), "install", "-q", "--no-compile", str(_wheel(dist))], tmp_path,
                     timeout=280)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    virtsync = str(venv / "bin" / "virtsync")
    # run outside the source tree, so nothing can come from it
    where = _run([str(venv / "bin" / "python"), "-c", "import controller; print(controller.__file__)"], tmp_path)
    assert where.stdout.strip().startswith(str(venv / "lib")), where.stdout
    assert _run([virtsync, "--version"], tmp_path).stdout.strip() == f"virtsync {VERSION}"
    ok = _run([virtsync, "validate", str(ROOT / "examples" / "quickstart")], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("valid:")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: virtsync/v1\nkind: Host\nmetadata: {name: h}\nspec:\n  uri: 42\n  bogus: 1\n")
    refused = _run([virtsync, "validate", str(bad)], tmp_path)
    assert refused.returncode == 1
    assert re.search(rf"{re.escape(str(bad))}:\d+:\d+", refused.stdout + refused.stderr), refused.stdout
    # export's yaml-language-server line points at the schema the wheel installed
    schema = _run([str(venv / "bin" / "python"), "-c",
                   "from controller.commands import _shipped_schema; print(_shipped_schema())"], tmp_path)
    assert schema.stdout.strip() == (venv / "share" / "virtsync" / "specs" / "virtsync.schema.json").as_uri()


def test_the_version_is_written_only_in_controller_init() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "controller.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\w+\d*)?", VERSION)


def _dockerfile_labels() -> tuple[dict[str, str], dict[str, str]]:
    """The Dockerfile's LABEL keys and values, and its ARG defaults."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    labels: dict[str, str] = {}
    args: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("LABEL "):
            labels.update(re.findall(r'([\w.-]+)="([^"]*)"', line))
        elif line.startswith("ARG "):
            name, _, default = line[4:].strip().partition("=")
            args[name] = default
    return labels, args


def test_image_labels_follow_the_oci_annotations_and_carry_the_version() -> None:
    labels, args = _dockerfile_labels()
    assert labels and set(labels) <= OCI_KEYS, set(labels) - OCI_KEYS
    for key in ("title", "description", "licenses", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}" in labels, key
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    # the values scripts/build-image.sh passes, substituted as buildah does
    printed = _run([str(ROOT / "scripts" / "build-image.sh"), "--print-build-args"], ROOT)
    assert printed.returncode == 0, printed.stderr
    build_args = dict(line.split("=", 1) for line in printed.stdout.split())
    assert set(build_args) <= set(args), "a build argument the Dockerfile does not declare"
    resolved = {k: re.sub(r"\$\{(\w+)\}", lambda m: build_args.get(m.group(1), args[m.group(1)]), v)
                for k, v in labels.items()}
    assert resolved["org.opencontainers.image.version"] == VERSION
    head = _run(["git", "rev-parse", "HEAD"], ROOT).stdout.strip()
    assert resolved["org.opencontainers.image.revision"] == head
    created = datetime.fromisoformat(resolved["org.opencontainers.image.created"].replace("Z", "+00:00"))
    assert created.tzinfo is not None
