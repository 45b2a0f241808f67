"""docs/PEERS.md is generated from the run records committed in docs/peers/runs/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import peers  # docs/tools/peers.py (conftest puts docs/tools on the path)
import pytest
from doc_regions import render_regions

from lsr1bench.reporting.runs import ReportError

ROOT = Path(__file__).resolve().parents[1]


def test_doc_regions_match_the_committed_records() -> None:
    text = peers.DOC.read_text(encoding="utf-8")
    assert render_regions(text, peers.FRAGMENTS, peers.RECORDS, "docs/PEERS.md") == text, (
        "docs/PEERS.md is out of date with docs/peers/runs/: run python docs/tools/peers.py"
    )


def test_doc_uses_every_fragment() -> None:
    text = peers.DOC.read_text(encoding="utf-8")
    assert set(re.findall(r"<!-- lsr1bench:begin (\S+) -->", text)) == set(peers.FRAGMENTS)


def test_the_committed_records_are_the_documented_short_run() -> None:
    runs = peers.load(peers.RECORDS)
    suite = (ROOT / "docs" / "peers" / "short-cpu.yaml").read_text(encoding="utf-8")
    assert {run.suite for run in runs} == {"peers-short-cpu"} and "name: peers-short-cpu" in suite
    assert all(run.status == "completed" for run in runs)
    # every method at both batch sizes with both seeds
    methods = {"lsr1", "tz-lsr1-tr", "tz-lsr1-ls", "soap", "shampoo", "adahessian"}
    expected = {(m, b, s) for m in methods for b in (500, 1000) for s in (0, 1)}
    assert {(r.method, r.batch, r.seed) for r in runs} == expected


def test_profile_by_hand() -> None:
    """Two problems; a: 1.0 vs 2.0 (b best), b: 3.0 vs 3.0 (a tie): at tau 1 a is within on 2/2
    problems, b on 1/2; at tau 2, b is within on both (2.0 <= 2 * 1.0)."""

    class FakeRun:
        def __init__(self, method, batch, value):
            self.method, self.batch, self.seed, self.status = method, batch, 0, "completed"
            self.rows = [{"epoch": 1}]
            self.value = value

    runs = [FakeRun("a", 1, 1.0), FakeRun("b", 1, 2.0), FakeRun("a", 2, 3.0), FakeRun("b", 2, 3.0)]
    table = peers.profile(runs, lambda r: r.value)  # type: ignore[arg-type]
    at = {tau: i for i, tau in enumerate(peers.TAUS)}
    assert table["a"][at[1.0]] == 1.0 and table["b"][at[1.0]] == 0.5
    assert table["b"][at[1.5]] == 0.5 and table["b"][at[2.0]] == 1.0


def test_a_changed_record_changes_the_doc(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    shutil.copytree(peers.RECORDS, folder)
    doc = tmp_path / "PEERS.md"
    shutil.copy(peers.DOC, doc)
    assert not peers.update_doc(doc, folder)  # up to date with a copy of the same records
    epochs = next(folder.glob("*/*-lsr1-*-b500-s0/epochs.csv"))
    lines = epochs.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    last = lines[-1].split(",")
    last[header.index("test_error")] = "0.5"
    epochs.write_text("\n".join([*lines[:-1], ",".join(last)]) + "\n", encoding="utf-8")
    assert peers.update_doc(doc, folder)
    assert doc.read_text(encoding="utf-8") != peers.DOC.read_text(encoding="utf-8")


def test_no_records_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no run records"):
        peers.load(tmp_path)
