"""Was each L-SR1 record made with the final optimizer?

A run record (``run.json``) names the commit of the checkout that made it (``+dirty`` when
tracked files were modified). A record of an ``lsr1`` run was made with the final
optimizer when its commit is clean, is known to this repository, and contains the last
commit that touched ``lsr1bench/optim/`` (``git merge-base --is-ancestor``). The
reproduction document's provenance table and ``tests/test_reproduction_doc.py`` both ask
this module.

Never imports torch.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZER_PATH = "lsr1bench/optim"
# Suites whose L-SR1 records are kept as the record of an older optimizer on purpose, not
# as results: suite -> why. They are exempt from the check, and say so in the doc.
KEPT_AS_HISTORY = {
    "repro-table1-mnist-cpu-frozen": "the run that froze before the pred fix, kept as the record of that bug",
}


class NotAGitCheckout(RuntimeError):
    """The repository is not a git checkout (or git is missing): nothing can be decided."""


def _git(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NotAGitCheckout(f"git failed in {root}: {exc}") from None


def final_optimizer_commit(root: Path = ROOT) -> str:
    """The last commit that touched ``lsr1bench/optim/`` (full hash)."""
    inside = _git(["rev-parse", "--is-inside-work-tree"], root)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise NotAGitCheckout(f"{root} is not a git checkout")
    out = _git(["log", "-1", "--format=%H", "--", OPTIMIZER_PATH], root)
    if out.returncode != 0 or not out.stdout.strip():
        raise NotAGitCheckout(f"git log finds no commit touching {OPTIMIZER_PATH} in {root}")
    return out.stdout.strip()


def verdict(commit: str | None, final: str, root: Path = ROOT) -> str | None:
    """None when a record made at ``commit`` has the optimizer of ``final``; else why not."""
    if not commit:
        return "no commit recorded"
    if commit.endswith("+dirty"):
        return f"made at {commit[:7]}+dirty (modified files)"
    known = _git(["cat-file", "-e", f"{commit}^{{commit}}"], root)
    if known.returncode != 0:
        return f"made at {commit[:7]}, a commit this repository does not have"
    if _git(["merge-base", "--is-ancestor", final, commit], root).returncode != 0:
        return f"made at {commit[:7]}, which predates the final optimizer ({final[:7]})"
    return None


@dataclass(frozen=True)
class Record:
    suite: str
    run_id: str
    optimizer: str
    commit: str | None


def records(runs_folder: Path) -> list[Record]:
    """Every run record under ``runs_folder/<suite>/<run id>/run.json``."""
    found = []
    for path in sorted(runs_folder.glob("*/*/run.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        spec = data.get("spec") or {}
        found.append(Record(path.parent.parent.name, path.parent.name, str(spec.get("optimizer")),
                            data.get("git_commit")))
    return found


def stale_lsr1_records(runs_folder: Path, root: Path = ROOT) -> list[str]:
    """``suite/run id: why`` for each L-SR1 record not made with the final optimizer (the
    suites of ``KEPT_AS_HISTORY`` left out)."""
    final = final_optimizer_commit(root)
    out = []
    for record in records(runs_folder):
        if record.optimizer != "lsr1" or record.suite in KEPT_AS_HISTORY:
            continue
        why = verdict(record.commit, final, root)
        if why is not None:
            out.append(f"{record.suite}/{record.run_id}: {why}")
    return out
