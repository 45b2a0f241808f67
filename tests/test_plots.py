"""Plots: the PNG files exist, and the median / min–max bands are what the seeds say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _report_records import NAN, make_table1_suite, write_run

from lsr1bench.reporting import build_report
from lsr1bench.reporting.plots import band_by_epoch, band_by_time, plot_results, suite_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_files_are_pngs(tmp_path: Path) -> None:
    suite = make_table1_suite(tmp_path)
    files = plot_results(build_report(suite).results.runs, tmp_path / "plots")
    assert [f.name for f in files] == [
        "table1-test-error-vs-epoch.png",
        "table1-test-error-vs-seconds.png",
    ]
    for path in files:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_band_by_epoch_over_seeds(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 4.0, 2.0], seed=0)
    write_run(suite, [80, 6.0, 1.0], seed=1)
    write_run(suite, [70, 5.0, NAN], seed=2, status="diverged")
    runs = build_report(suite).results.runs
    epochs, median, low, high = band_by_epoch(runs)
    np.testing.assert_allclose(epochs, [0, 1, 2], rtol=0, atol=0)
    np.testing.assert_allclose(median, [80, 5.0, 1.5], rtol=0, atol=1e-12)  # NaN seed left out
    np.testing.assert_allclose(low, [70, 4.0, 1.0], rtol=0, atol=0)
    np.testing.assert_allclose(high, [90, 6.0, 2.0], rtol=0, atol=0)


def test_band_by_time_interpolates_and_stops_each_seed_at_its_end(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    # train_seconds: seed 0 at 0, 2, 4 s; seed 1 at 0, 4 s (4 s per epoch).
    write_run(suite, [10.0, 6.0, 2.0], seed=0, seconds_per_epoch=2.0)
    write_run(suite, [10.0, 2.0], seed=1, seconds_per_epoch=4.0)
    write_run(suite, [10.0, 8.0, 6.0, 4.0], seed=2, seconds_per_epoch=4.0)
    times, median, low, high = band_by_time(build_report(suite).results.runs)
    assert times[0] == 0 and times[-1] == 12.0
    at_4 = int(np.argmin(np.abs(times - 4.0)))
    assert abs(times[at_4] - 4.0) < 0.05
    # At 4 s the seeds read 2.0, 2.0 and 8.0 (give or take the grid step).
    assert abs(median[at_4] - 2.0) < 0.1 and abs(high[at_4] - 8.0) < 0.1
    # After 4 s only seed 2 remains, so the band collapses onto it.
    np.testing.assert_allclose(low[-1], 4.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(high[-1], 4.0, rtol=0, atol=1e-9)


def test_legends_count_seeds_in_words(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 4.0, 2.0], label="adam", seed=0)
    for seed in range(3):
        write_run(suite, [90, 5.0, 3.0], label="lsr1", seed=seed)
    figure = suite_figure(build_report(suite).results.runs, use_time=False)
    (ax,) = [ax for ax in figure.axes if ax.get_visible()]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["adam (1 seed)", "lsr1 (3 seeds)"]
