"""Was each L-SR1 record made with the final optimizer?

A run record (``run.json``) names the commit of the checkout that made it (``+dirty`` when
tracked files were modified). A record of an ``lsr1`` run was made with the final
optimizer when its commit is clean, is known to this repository, and holds the same
optimizer code as HEAD: every ``lsr1bench/optim/*.py`` file with the same syntax tree, its
docstrings left out (comments never enter it). So an edit to the optimizer's prose leaves
the records valid and any edit to its code, even one that changes no arithmetic, asks for
a rerun. The final optimizer's commit is the last commit that changed that code. The
reproduction document's provenance table and ``tests/test_reproduction_doc.py`` both ask
this module.

Never imports torch.
"""

from __future__ import annotations

import ast
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


def _check_checkout(root: Path) -> None:
    inside = _git(["rev-parse", "--is-inside-work-tree"], root)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise NotAGitCheckout(f"{root} is not a git checkout")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):  # fmt: skip
            node.body = body[1:] or [ast.Pass()]
    return tree


def optimizer_code(commit: str, root: Path = ROOT) -> dict[str, str]:
    """The optimizer's code at ``commit``: path -> the dump of each ``lsr1bench/optim/*.py``
    file's syntax tree without docstrings. NotAGitCheckout if git cannot read it."""
    listing = _git(["ls-tree", "-r", "--name-only", commit, "--", OPTIMIZER_PATH + "/"], root)
    if listing.returncode != 0:
        raise NotAGitCheckout(f"git cannot list {OPTIMIZER_PATH} at {commit[:7]}: {listing.stderr.strip()}")
    code = {}
    for path in sorted(line for line in listing.stdout.splitlines() if line.endswith(".py")):
        source = _git(["show", f"{commit}:{path}"], root)
        if source.returncode != 0:
            raise NotAGitCheckout(f"git cannot read {path} at {commit[:7]}")
        code[path] = ast.dump(_without_docstrings(ast.parse(source.stdout)))
    return code


def final_optimizer_commit(root: Path = ROOT) -> str:
    """The last commit that changed the optimizer's code (full hash): of the commits touching
    ``lsr1bench/optim/``, newest first, the first whose code differs from its parent's."""
    _check_checkout(root)
    out = _git(["log", "--format=%H", "--", OPTIMIZER_PATH], root)
    commits = out.stdout.split()
    if out.returncode != 0 or not commits:
        raise NotAGitCheckout(f"git log finds no commit touching {OPTIMIZER_PATH} in {root}")
    for commit in commits:
        parent = _git(["rev-parse", "--verify", "--quiet", f"{commit}^"], root)
        if parent.returncode != 0 or optimizer_code(commit, root) != optimizer_code(parent.stdout.strip(), root):
            return commit
    return commits[-1]


def verdict(commit: str | None, final: str, root: Path = ROOT, code: dict[str, str] | None = None) -> str | None:
    """None when a record made at ``commit`` ran the optimizer code of HEAD; else why not.
    ``code``: HEAD's optimizer code, when the caller has it already."""
    if not commit:
        return "no commit recorded"
    if commit.endswith("+dirty"):
        return f"made at {commit[:7]}+dirty (modified files)"
    known = _git(["cat-file", "-e", f"{commit}^{{commit}}"], root)
    if known.returncode != 0:
        return f"made at {commit[:7]}, a commit this repository does not have"
    if optimizer_code(commit, root) != (code if code is not None else optimizer_code("HEAD", root)):
        return f"made at {commit[:7]}, whose optimizer code differs from the final optimizer's ({final[:7]})"
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
    code = optimizer_code("HEAD", root)
    out = []
    for record in records(runs_folder):
        if record.optimizer != "lsr1" or record.suite in KEPT_AS_HISTORY:
            continue
        why = verdict(record.commit, final, root, code)
        if why is not None:
            out.append(f"{record.suite}/{record.run_id}: {why}")
    return out
