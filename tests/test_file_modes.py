"""Files the tool writes get the process umask's mode, atomic writes included.

``tempfile.mkstemp`` creates files 0600 whatever the umask; a results folder shared with
colleagues must come out 0644 under umask 022, as ``open(path, "w")`` would make it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lsr1bench import records, runner
from lsr1bench.execute.interrupt import StopRequest


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    os.umask(previous)

    def set_to(mask: int) -> None:
        os.umask(mask)

    yield set_to
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    records.atomic_write_text(tmp_path / "a.txt", "x")
    records.atomic_write_bytes(tmp_path / "b.bin", b"x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives: the reference
    assert mode(plain) == expected
    assert mode(tmp_path / "a.txt") == expected and mode(tmp_path / "b.bin") == expected


def test_a_runs_records_and_checkpoint_are_0644_under_umask_022(tmp_path: Path, umask) -> None:
    from test_resume import spec_for

    umask(0o022)
    spec = spec_for("adam", False, epochs=1)  # keeps its checkpoint
    runner.train(spec, tmp_path, "cpu", stop=StopRequest())
    folder = records.run_dir(tmp_path, spec.suite, spec.run_id)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["checkpoint.pt", "epochs.csv", "run.json"]
    assert {name: oct(mode(folder / name)) for name in files} == {name: "0o644" for name in files}
