"""The CI files name things that exist: the workflow's suite and baseline, .ci/run's commands."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lsr1bench.spec import load_suite

ROOT = Path(__file__).resolve().parents[1]


def test_workflow_runs_the_gate_and_writes_the_job_summary() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "benchmark.yml").read_text(encoding="utf-8"))
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    env = workflow["env"]
    suite = load_suite(ROOT / env["SUITE"])
    assert env["RESULTS"] == f"outputs/{suite.name}"
    baseline = json.loads((ROOT / env["BASELINE"]).read_text(encoding="utf-8"))
    assert baseline["format"] == "lsr1bench-baseline" and baseline["version"] == 2
    assert {cell["suite"] for cell in baseline["cells"]} == {suite.name}
    assert all(cell["n"] >= 3 for cell in baseline["cells"]), "the gate needs three seeds per cell"
    commands = "\n".join(step.get("run", "") for step in workflow["jobs"]["gate"]["steps"])
    assert 'lsr1bench run "$SUITE" --output outputs --force' in commands
    assert 'lsr1bench compare "$BASELINE" "$RESULTS" --markdown-out compare.md' in commands
    assert 'cat compare.md >> "$GITHUB_STEP_SUMMARY"' in commands


def test_ci_suite_has_at_least_three_seeds_and_targets_on_losses_and_error() -> None:
    suite = load_suite(ROOT / "suites" / "ci.yaml")
    assert len(suite.seeds) >= 3
    assert set(suite.targets) == {"test_error", "test_loss", "train_loss"}
    quickstart = load_suite(ROOT / "suites" / "quickstart.yaml")
    assert "test_error" in quickstart.targets and "train_loss" in quickstart.targets
