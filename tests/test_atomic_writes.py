"""Every file lsr1bench writes survives a failure or a Ctrl-C in the middle of writing it.

A fault injected into the atomic writer (``records.atomic_write_bytes``) fails the write of
one chosen file half-way, with an OSError (disk full) or a KeyboardInterrupt. The file's
previous version must still be there, whole, with no temporary file beside it; and the
fault must have fired, which shows the file is written through the atomic path at all.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from _report_records import make_table1_suite
from typer.testing import CliRunner

from lsr1bench import records
from lsr1bench.cli import app
from lsr1bench.reporting import build_report, export_baseline, write_report

OLD = b"the previous version of this file\n"


class HalfWrite:
    """Wraps a binary file: writes the first half of the data, then raises ``error``."""

    def __init__(self, handle, error: BaseException) -> None:
        self.handle, self.error = handle, error

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise self.error

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.fixture(params=["disk full", "ctrl-c"])
def fault(request, monkeypatch):
    """``fault(name)`` arms a half-way failure for the next write of a file called ``name``;
    returns the list of names it fired for."""
    error: BaseException = OSError(28, "No space left on device (injected)")
    if request.param == "ctrl-c":
        error = KeyboardInterrupt()
    fired: list[str] = []
    armed: list[str] = []
    prefixes: list[str] = []
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen

    def mkstemp(*args, **kwargs):
        prefixes.append(kwargs.get("prefix", ""))
        return real_mkstemp(*args, **kwargs)

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if armed and prefixes and prefixes[-1] == f".{armed[0]}.":
            fired.append(armed.pop())
            return HalfWrite(handle, error)
        return handle

    monkeypatch.setattr(records.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(records.os, "fdopen", fdopen)

    def arm(name: str) -> list[str]:
        armed[:] = [name]
        fired.clear()
        return fired

    arm.error_type = type(error)  # type: ignore[attr-defined]
    return arm


def assert_untouched(path: Path) -> None:
    assert path.read_bytes() == OLD
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_run_json_and_epochs_csv(tmp_path: Path, fault) -> None:
    record = records.RunRecord(suite="t", run_id="r", spec={"epochs": 1}, status="completed")
    for name, write in (
        (records.RUN_FILE, lambda: records.write_run(tmp_path, record)),
        (records.EPOCHS_FILE, lambda: records.write_epochs(tmp_path, [{"epoch": 0, "train_loss": 2.3}])),
    ):
        (tmp_path / name).write_bytes(OLD)
        fired = fault(name)
        with pytest.raises(fault.error_type):
            write()
        assert fired == [name]
        assert_untouched(tmp_path / name)


REPORT_FILES = ["report.md", "report_targets.csv", "report_cells.csv", "report_runs.csv", "PLOT"]


@pytest.mark.parametrize("name", REPORT_FILES)
def test_report_files(tmp_path: Path, fault, name: str) -> None:
    results = make_table1_suite(tmp_path)
    report = build_report(results)
    out = tmp_path / "out"
    written = write_report(report, out, plots=name == "PLOT")
    path = written.plot_files[0] if name == "PLOT" else out / name
    assert path.exists() and path.read_bytes() != OLD
    path.write_bytes(OLD)
    fired = fault(path.name)
    with pytest.raises(fault.error_type):
        write_report(report, out, plots=name == "PLOT")
    assert fired == [path.name]
    assert_untouched(path)


def test_baseline(tmp_path: Path, fault) -> None:
    report = build_report(make_table1_suite(tmp_path))
    path = tmp_path / "baseline.json"
    path.write_bytes(OLD)
    fired = fault(path.name)
    with pytest.raises((fault.error_type, Exception)) as info:
        export_baseline(report, path)
    assert fired == [path.name]
    if fault.error_type is OSError:
        assert "No space left" in str(info.value)
    assert_untouched(path)


def test_compare_markdown_out(tmp_path: Path, fault) -> None:
    results = make_table1_suite(tmp_path)
    path = tmp_path / "compare.md"
    path.write_bytes(OLD)
    fired = fault(path.name)
    result = CliRunner().invoke(app, ["compare", str(results), str(results), "--markdown-out", str(path)])
    assert fired == [path.name]
    if fault.error_type is OSError:
        assert result.exit_code == 2 and "--markdown-out: cannot write" in result.output, result.output
    else:
        assert result.exit_code != 0 and "PASS" not in result.output
    assert_untouched(path)
