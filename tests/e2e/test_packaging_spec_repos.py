"""What a spec repository takes from virtsync: the pre-commit hook (run by pre-commit itself,
which installs this repository into its own venv) and the CI files under deploy/ci (their
commands run against libvirt's test driver)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.e2e.test_packaging import clean_copy

pytestmark = [pytest.mark.e2e, pytest.mark.ecosystem, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "deploy" / "ci"
BIN = str(Path(sys.executable).parent)
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def spec_tree(repo: Path, memory: str = "512MiB") -> Path:
    """REPO/specs: a Host on a private test-driver file and, in another file, a guest on it."""
    (repo / "specs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "testdriver" / "host.xml", repo / "host.xml")
    (repo / "specs" / "host.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "test://{repo}/host.xml"}}
""")
    (repo / "specs" / "guests.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: web1}}
spec:
  host: lab
  state: stopped
  memory: {memory}
""")
    return repo / "specs"


def _git_repo(path: Path) -> None:
    assert _run([*GIT, "init", "-q", "-b", "main"], path).returncode == 0
    assert _run([*GIT, "add", "-A"], path).returncode == 0
    done = _run([*GIT, "commit", "-q", "-m", "init"], path)
    assert done.returncode == 0, done.stderr


def test_pre_commit_hook_passes_a_good_tree_and_fails_a_bad_file_with_its_line(tmp_path: Path) -> None:
    if shutil.which("pre-commit", path=BIN) is None:
        pytest.skip("pre-commit is not installed (it is in the dev extras)")
    # This repository as a clean checkout (what a `rev:` of it would be), and a spec repository.
    hooks = clean_copy(tmp_path / "virtsync")
    _git_repo(hooks)
    specs = tmp_path / "specs-repo"
    spec_tree(specs)
    (specs / ".pre-commit-config.yaml").write_text("repos: []\n")
    _git_repo(specs)
    # pre-commit's venv and cache stay in the test's directory; pip gets only what it has
    # configured (no other network); byte-compiling the dependencies is not what is tested.
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"), PIP_NO_COMPILE="1",
               PATH=f"{BIN}:{os.environ['PATH']}")
    pre_commit = [str(Path(BIN) / "pre-commit"), "try-repo", str(hooks), "virtsync-validate"]

    good = _run([*pre_commit, "--all-files"], specs, env)
    assert good.returncode == 0, good.stdout[-4000:] + good.stderr[-2000:]
    assert re.search(r"virtsync validate\.+Passed", good.stdout), good.stdout

    (specs / "specs" / "bad.yaml").write_text("""apiVersion: virtsync/v1
kind: Guest
metadata: {name: web2}
spec:
  host: lab
  memory: lots
""")
    assert _run([*GIT, "add", "specs/bad.yaml"], specs).returncode == 0
    bad = _run([*pre_commit, "--files", "specs/bad.yaml"], specs, env)
    assert bad.returncode == 1, bad.stdout[-4000:]
    assert re.search(r"virtsync validate\.+Failed", bad.stdout), bad.stdout
    assert re.search(r"specs/bad\.yaml:6:\d+: error: .*memory", bad.stdout), bad.stdout[-3000:]


def _ci_commands() -> dict[str, tuple[dict[str, str], list[str]]]:
    """Per CI file, its variables and the shell lines of its jobs' steps (not the installs)."""
    yaml = YAML(typ="safe")
    gh = yaml.load((CI / "github-actions.yml").read_text())
    gh_lines = [line.strip() for job in gh["jobs"].values() for step in job["steps"]
                if "run" in step for line in step["run"].splitlines() if line.strip()]
    gl = yaml.load((CI / "gitlab-ci.yml").read_text())
    gl_lines = [line.strip() for name, job in gl.items() if isinstance(job, dict) and "script" in job
                for line in job["script"]]
    return {"github-actions.yml": ({k: str(v) for k, v in gh["env"].items()}, gh_lines),
            "gitlab-ci.yml": ({k: str(v) for k, v in gl["variables"].items()}, gl_lines)}


def test_ci_files_validate_and_plan_markdown_for_the_review_comment(tmp_path: Path) -> None:
    files = _ci_commands()
    run: list[str] = []  # the lines both files share run once
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    for ci_file, (variables, lines) in files.items():
        # the commands of the repository's own (what comes after the install of virtsync)
        ours = [line for line in lines if line.startswith(("virtsync ", "head "))]
        assert any(line.startswith("virtsync validate ") for line in ours), (ci_file, lines)
        assert any(line.startswith("virtsync plan ") and "--format markdown" in line for line in ours), lines
        # the plan is posted: gh on GitHub, the merge request notes API on GitLab
        poster = "gh pr comment" if ci_file.startswith("github") else "/merge_requests/"
        assert any(poster in line and "comment.md" in line for line in lines), (ci_file, lines)
        assert variables["SPECS"] == "specs"
        env.update(variables)
        run += [line for line in ours if line not in run]
    assert len(run) == 3, run  # validate, plan, the comment's file: the same in both

    spec_tree(tmp_path, memory="512MiB")
    for line in run:
        done = _run(["bash", "-ec", line], tmp_path, env)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
    plan = (tmp_path / "comment.md").read_text()
    assert plan == (tmp_path / "plan.md").read_text()[:60000]
    assert "web1" in plan and "lab" in plan and "create" in plan.lower(), plan
    assert plan.lstrip().startswith(("#", "|", "**", "<")), plan[:200]  # Markdown, not the text format

    # A broken spec: validate fails with the file and line; so does the plan (1, not "changes")
    spec_tree(tmp_path, memory="lots")
    for line in run:
        if line.startswith("virtsync "):
            done = _run(["bash", "-ec", line], tmp_path, env)
            assert done.returncode == 1, (line, done.stdout, done.stderr)
            assert re.search(r"specs/guests\.yaml:7:\d+", done.stderr), done.stderr
