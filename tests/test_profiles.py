"""Performance profiles and AlgoPerf's score on hand-made records, worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _report_records import write_run

from lsr1bench.reporting import build_report, write_report
from lsr1bench.reporting.profiles import performance_profile, profile_table

TARGET = {"test_error": [5.0]}


def errors_reaching_at(epoch: int | None, epochs: int = 3) -> list[float]:
    """Test errors over epochs 0..epochs, first below 5 % at ``epoch`` (None: never)."""
    return [90.0] + [4.0 if epoch is not None and e >= epoch else 8.0 for e in range(1, epochs + 1)]


# label -> (seconds per epoch, gradient evaluations per epoch, epoch reached at b50, at b100)
HAND = {
    "a": (2.0, 100, 1, 3),
    "b": (5.0, 100, 2, 1),
    "c": (1.0, 300, None, 2),
}


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    root = tmp_path / "prof"
    for label, (seconds, evals, at50, at100) in HAND.items():
        for batch, at in ((50, at50), (100, at100)):
            write_run(root, errors_reaching_at(at), label=label, optimizer=label, batch_size=batch, targets=TARGET,
                      seconds_per_epoch=seconds, grad_evals_per_epoch=evals)  # fmt: skip
    return root


def runs(root: Path) -> list:
    return build_report(root).results.runs


def test_epochs_profile_and_score_by_hand(suite: Path) -> None:
    profile = performance_profile(runs(suite), "epochs")
    # b50: a 1, b 2, c never -> ratios 1, 2, inf; b100: a 3, b 1, c 2 -> ratios 3, 1, 2
    assert profile.ratios == {"a": [1.0, 3.0], "b": [2.0, 1.0], "c": [math.inf, 2.0]}
    assert [profile.rho("a", t) for t in (1, 2, 3, 4)] == [0.5, 0.5, 1.0, 1.0]
    assert [profile.rho("b", t) for t in (1, 2, 3, 4)] == [0.5, 1.0, 1.0, 1.0]
    assert [profile.rho("c", t) for t in (1, 2, 3, 4)] == [0.0, 0.5, 0.5, 0.5]
    # score = sum of max(0, 4 - r) over problems / (2 problems x 3)
    assert profile.score("a") == pytest.approx((3 + 1) / 6, abs=1e-12)
    assert profile.score("b") == pytest.approx((2 + 3) / 6, abs=1e-12)
    assert profile.score("c") == pytest.approx(2 / 6, abs=1e-12)


def test_seconds_and_gradient_evaluation_profiles_by_hand(suite: Path) -> None:
    seconds = performance_profile(runs(suite), "train_seconds")
    # b50: a 2 s, b 10 s, c never; b100: a 6 s, b 5 s, c 2 s
    assert seconds.ratios == {"a": [1.0, 3.0], "b": [5.0, 2.5], "c": [math.inf, 1.0]}
    # b's 5x on b50 is beyond tau = 4: it adds nothing to the score
    assert seconds.score("b") == pytest.approx(1.5 / 6, abs=1e-12)
    assert seconds.score("c") == pytest.approx(3 / 6, abs=1e-12)
    evals = performance_profile(runs(suite), "grad_evals")
    # b50: a 100, b 200, c never; b100: a 300, b 100, c 600
    assert evals.ratios == {"a": [1.0, 3.0], "b": [2.0, 1.0], "c": [math.inf, 6.0]}
    assert evals.score("c") == 0.0 and evals.rho("c", 6.0) == 0.5


def test_a_median_over_seeds_counts_misses_as_infinite(tmp_path: Path) -> None:
    root = tmp_path / "prof"
    # label a: seeds reach at 1, never, never: median +inf; label b: 2, 2, 3: median 2
    for seed, at in enumerate((1, None, None)):
        write_run(root, errors_reaching_at(at), label="a", optimizer="a", seed=seed, targets=TARGET)
    for seed, at in enumerate((2, 2, 3)):
        write_run(root, errors_reaching_at(at), label="b", optimizer="b", seed=seed, targets=TARGET)
    profile = performance_profile(runs(root), "epochs")
    assert profile.ratios == {"a": [math.inf], "b": [1.0]}
    assert profile.score("a") == 0.0 and profile.score("b") == 1.0


def test_problems_no_label_reached_are_left_out_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "prof"
    for label in ("a", "b"):
        write_run(root, errors_reaching_at(1 if label == "a" else 2), label=label, optimizer=label, batch_size=50,
                  targets=TARGET)  # fmt: skip
        write_run(root, errors_reaching_at(None), label=label, optimizer=label, batch_size=100, targets=TARGET)
    profile = performance_profile(runs(root), "epochs")
    assert len(profile.problems) == 1 and len(profile.unsolved) == 1
    assert profile.ratios == {"a": [1.0], "b": [2.0]}


def test_report_writes_the_profile_table(suite: Path, tmp_path: Path) -> None:
    headers, rows = profile_table([performance_profile(runs(suite), "epochs")])
    assert headers == ["label", "epochs: score (ρ 1 / 2 / 4)"]
    assert rows == [["a", "0.67 (0.50 / 0.50 / 1.00)"], ["b", "0.83 (0.50 / 1.00 / 1.00)"],
                    ["c", "0.33 (0.00 / 0.50 / 0.50)"]]  # fmt: skip
    text = write_report(build_report(suite), tmp_path / "out", plots=False).report_md.read_text(encoding="utf-8")
    section = text[text.index("## Performance profiles") :]
    assert "| b       | 0.83 (0.50 / 1.00 / 1.00)" in section
    assert "Problems: epochs: 2 problems; training seconds: 2 problems; gradient evaluations: 2 problems." in section
    csv_text = (tmp_path / "out" / "report_profiles.csv").read_text(encoding="utf-8")
    assert "prof,lenet5,mnist,True,50,test_error,5.0,epochs,c,inf" in csv_text
