"""docs/REPRODUCTION.md's generated regions match what the committed CSVs produce."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsr1bench.cli import app
from lsr1bench.reporting import ReportError
from lsr1bench.reporting.reproduction import FRAGMENTS, lsr1_cpu, render_doc, update_doc

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "REPRODUCTION.md"
CSV_FOLDER = ROOT / "docs" / "reproduction"

runner = CliRunner()


def test_doc_regions_match_the_committed_csvs() -> None:
    text = DOC.read_text(encoding="utf-8")
    regenerated = render_doc(text, CSV_FOLDER, str(DOC))
    assert regenerated == text, (
        "docs/REPRODUCTION.md is out of date: run "
        "`lsr1bench report docs/reproduction --update-doc docs/REPRODUCTION.md`"
    )


def test_doc_uses_every_fragment() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in FRAGMENTS:
        assert f"<!-- lsr1bench:begin {name} -->" in text, name


def test_cpu_rerun_reads_its_csv() -> None:
    # the hand-typed doc had said 2 epochs to 1.5% at batch 500; the record says 4
    row = next(line for line in lsr1_cpu(CSV_FOLDER).splitlines() if line.startswith("| 500"))
    assert "| 4 (3)" in row, row


def _doc(tmp_path: Path, body: str) -> Path:
    doc = tmp_path / "doc.md"
    doc.write_text(body, encoding="utf-8")
    return doc


def test_update_rewrites_only_the_region(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "intro 1.23\n<!-- lsr1bench:begin skips -->\nstale\n<!-- lsr1bench:end skips -->\nafter\n")
    assert update_doc(doc, CSV_FOLDER) is True
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro 1.23\n<!-- lsr1bench:begin skips -->\n| batch")
    assert text.endswith("|\n<!-- lsr1bench:end skips -->\nafter\n")
    assert "stale" not in text
    assert update_doc(doc, CSV_FOLDER) is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<!-- lsr1bench:begin nope -->\n<!-- lsr1bench:end nope -->\n", "unknown fragment 'nope'"),
        ("a\n<!-- lsr1bench:begin skips -->\n", "has no <!-- lsr1bench:end skips -->"),
        ("no markers\n", "no <!-- lsr1bench:begin NAME --> marker"),
    ],
)
def test_bad_markers_are_one_line_errors_and_leave_the_file(tmp_path: Path, body: str, message: str) -> None:
    doc = _doc(tmp_path, body)
    with pytest.raises(ReportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        update_doc(doc, CSV_FOLDER)
    assert doc.read_text(encoding="utf-8") == body
    result = runner.invoke(app, ["report", str(CSV_FOLDER), "--update-doc", str(doc)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert list(tmp_path.iterdir()) == [doc]


def test_missing_csv_is_an_error(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "<!-- lsr1bench:begin skips -->\n<!-- lsr1bench:end skips -->\n")
    result = runner.invoke(app, ["report", str(tmp_path), "--update-doc", str(doc)])
    assert result.exit_code == 2, result.output
    assert "table1_mnist_gpu_cells.csv: no such file" in result.output


def test_cli_reports_up_to_date(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "<!-- lsr1bench:begin gpu-wallclock -->\n<!-- lsr1bench:end gpu-wallclock -->\n")
    first = runner.invoke(app, ["report", str(CSV_FOLDER), "--update-doc", str(doc)])
    assert first.exit_code == 0, first.output
    assert "updated" in first.output
    second = runner.invoke(app, ["report", str(CSV_FOLDER), "--update-doc", str(doc)])
    assert second.exit_code == 0, second.output
    assert "already up to date" in second.output
