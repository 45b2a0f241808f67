"""CI runs what the README says: its test command verbatim, then the slow tests; installs fail loudly."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^Run the tests[^:]*:\n\n    (.+)$", text, re.M)
    assert found, "the README's quickstart says 'Run the tests' followed by an indented command"
    return found.group(1).strip()


def test_ci_run_runs_the_readme_test_command_verbatim_then_the_slow_tests() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    command = readme_test_command()
    assert command in lines
    assert "python -m pytest -q -m slow" in lines
    assert lines.index("python -m pytest -q -m slow") > lines.index(command)


def test_the_readme_test_command_leaves_out_the_slow_tests_and_says_how_to_run_them() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    addopts = shlex.split(config["tool"]["pytest"]["ini_options"]["addopts"])
    assert addopts[addopts.index("-m") + 1] == "not slow"
    assert "python -m pytest -q -m slow" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_run_installs_the_documented_torch_or_stops() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in script
    install = [line for line in script.splitlines() if "pip install" in line and "torch" in line]
    assert install and all("torch==2.14.1 torchvision==0.29.1" in line for line in install), install
    assert "/dev/null" not in "\n".join(install) and "||" not in "\n".join(install), install
    assert "lsr1_supports_process_group" not in script
    assert "lsr1bench run suites/distributed_smoke.yaml" in script


def test_a_workflow_runs_the_readme_test_command_on_pushes_and_pull_requests() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text(encoding="utf-8"))
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert "push" in triggers and "pull_request" in triggers
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert readme_test_command() in [line.strip() for run in steps for line in run.splitlines()]
    installs = "\n".join(line for run in steps for line in run.splitlines() if "torch" in line)
    assert "torch==2.14.1" in installs and "||" not in installs


def test_no_workflow_falls_back_to_another_torch() -> None:
    for path in (ROOT / ".github" / "workflows").glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        assert '"torch>=' not in text, path.name
