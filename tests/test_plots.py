"""Plots: what was measured, drawn as measured, in one colour per optimizer everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _report_records import NAN, make_table1_suite, write_run

from lsr1bench.reporting import build_report
from lsr1bench.reporting.plots import label_styles, per_epoch_medians, plot_results, suite_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIGNATURES = {"png": PNG_SIGNATURE, "pdf": b"%PDF-", "svg": b"<?xml"}


def runs_of(suite: Path) -> list:
    return build_report(suite).results.runs


def visible_axes(figure) -> list:
    return [ax for ax in figure.axes if ax.get_visible()]


def data_lines(ax) -> list:
    """The median lines (legend entries), not target or divergence marks."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_every_metric_against_every_axis(tmp_path: Path) -> None:
    suite = make_table1_suite(tmp_path)
    files = plot_results(runs_of(suite), tmp_path / "plots")
    assert [f.name for f in files] == [
        f"table1-{metric}-vs-{x}.png"
        for metric in ("test-error", "train-loss")
        for x in ("epoch", "seconds", "grad-evals")
    ] + ["table1-performance-profile.png"]
    for path in files:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), path


@pytest.mark.parametrize("fmt", ["svg"])  # pdf: test_report.py::test_report_shows_its_plots
def test_plots_in_the_asked_format(tmp_path: Path, fmt: str) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 4.0, 2.0], label="adam", targets={"test_error": [5.0]})
    files = plot_results(runs_of(suite), tmp_path / "plots", fmt)
    assert len(files) == 7 and all(f.suffix == f".{fmt}" for f in files)
    for path in files:
        assert path.read_bytes().startswith(SIGNATURES[fmt]), path


def test_per_epoch_medians_over_seeds(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 4.0, 2.0], seed=0, seconds_per_epoch=2.0)
    write_run(suite, [80, 6.0, 1.0], seed=1, seconds_per_epoch=3.0)
    write_run(suite, [70, 5.0, NAN], seed=2, status="diverged", seconds_per_epoch=7.0)
    runs = runs_of(suite)
    xs, median, low, high = per_epoch_medians(runs, "test_error", "epoch")
    np.testing.assert_allclose(xs, [0, 1, 2], rtol=0, atol=0)
    np.testing.assert_allclose(median, [80, 5.0, 1.5], rtol=0, atol=1e-12)  # NaN seed left out
    np.testing.assert_allclose(low, [70, 4.0, 1.0], rtol=0, atol=0)
    np.testing.assert_allclose(high, [90, 6.0, 2.0], rtol=0, atol=0)
    # seconds: each epoch's median of the seeds' cumulative seconds, over the seeds with a value
    xs, median, _, _ = per_epoch_medians(runs, "test_error", "train_seconds")
    np.testing.assert_allclose(xs, [0, 3.0, 5.0], rtol=0, atol=1e-12)  # (2, 3, 7) at 1; (4, 6) at 2
    np.testing.assert_allclose(median, [80, 5.0, 1.5], rtol=0, atol=1e-12)


def test_lines_are_the_measured_points_with_markers(tmp_path: Path) -> None:
    """Three epochs measured, three points drawn: no resampling grid, a marker at each."""
    suite = tmp_path / "s"
    write_run(suite, [90, 6.0, 3.0], seed=0, seconds_per_epoch=30.0, label="adam")
    for x in ("epoch", "train_seconds", "grad_evals"):
        (ax,) = visible_axes(suite_figure(runs_of(suite), "test_error", x))
        (line,) = data_lines(ax)
        assert len(line.get_xdata()) == 3, x
        assert line.get_marker() not in (None, "None", "", " "), x
    (ax,) = visible_axes(suite_figure(runs_of(suite), "test_error", "train_seconds"))
    np.testing.assert_allclose(data_lines(ax)[0].get_xdata(), [0, 30, 60], rtol=0, atol=0)


def test_tick_labels_are_plain_numbers(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 60.0, 3.0], seed=0, seconds_per_epoch=30.0, label="adam")
    figure = suite_figure(runs_of(suite), "test_error", "train_seconds")
    figure.canvas.draw()
    (ax,) = visible_axes(figure)
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels() if t.get_text()]
    assert labels, "no tick labels drawn"
    assert not [text for text in labels if "$" in text or "times" in text or "^" in text], labels
    y = {t.get_text() for t in ax.get_yticklabels()}
    assert {"5", "10", "20", "50"} <= y, y
    assert "60" in {t.get_text() for t in ax.get_xticklabels()}


def test_one_colour_per_optimizer_and_line_styles_for_its_variants(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    for batch in (50, 100):
        write_run(suite, [90, 5.0, 3.0], label="lsr1", optimizer="lsr1", batch_size=batch)
        write_run(suite, [90, 5.0, 3.0], label="lsr1", optimizer="lsr1", batch_size=batch, ranks=2, seed=1)  # lsr1-p2
        write_run(suite, [90, 6.0, 4.0], label="adam", optimizer="adam", batch_size=batch)
    write_run(suite, [90, 6.0, 4.0], label="adam-lr0.01", optimizer="adam", batch_size=100)
    runs = runs_of(suite)
    styles = label_styles(runs)
    assert styles["lsr1"].color == styles["lsr1-p2"].color != styles["adam"].color == styles["adam-lr0.01"].color
    assert styles["lsr1"].linestyle == "-" and styles["lsr1-p2"].linestyle != "-"
    assert styles["adam"].linestyle == "-" and styles["adam-lr0.01"].linestyle != "-"
    # identical curves (here lsr1 and lsr1-p2) still both show: the variant's markers are open
    # and of another shape, drawn over the filled ones
    assert not styles["lsr1"].hollow and styles["lsr1-p2"].hollow
    assert styles["lsr1-p2"].marker != styles["lsr1"].marker
    # every panel of every figure draws a label in its one style
    seen: dict[str, set] = {}
    for metric in ("test_error", "train_loss"):
        for x in ("epoch", "train_seconds"):
            for ax in visible_axes(suite_figure(runs, metric, x)):
                for line in data_lines(ax):
                    label = line.get_label().split(" (")[0]
                    seen.setdefault(label, set()).add((line.get_color(), str(line.get_linestyle())))
    assert set(seen) == {"lsr1", "lsr1-p2", "adam", "adam-lr0.01"}
    assert all(len(looks) == 1 for looks in seen.values()), seen
    assert len({next(iter(looks)) for looks in seen.values()}) == 4  # no two labels alike


def test_more_optimizers_than_colours_still_look_distinct(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    names = [f"opt{i:02d}" for i in range(13)]
    for name in names:
        write_run(suite, [90, 5.0, 3.0], label=name, optimizer=name)
    styles = label_styles(runs_of(suite))
    looks = {(s.color, s.linestyle, s.marker) for s in styles.values()}
    assert len(looks) == 13
    assert styles["opt00"].color == styles["opt10"].color and styles["opt00"].marker != styles["opt10"].marker


def test_a_panel_without_measured_points_says_so(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 5.0, 3.0], label="adam", batch_size=50)
    for seed in range(2):
        write_run(suite, [90], label="adam", batch_size=100, seed=seed, status="failed", write_csv=False)
    figure = suite_figure(runs_of(suite), "test_error", "epoch")
    empty = [ax for ax in visible_axes(figure) if "b100" in ax.get_title()]
    (ax,) = empty
    assert not data_lines(ax) and ax.get_legend() is None
    assert [t.get_text() for t in ax.texts] == ["no measured points\n(2 runs: 2 failed)"]


def test_legends_count_seeds_in_words(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 4.0, 2.0], label="adam", seed=0)
    for seed in range(3):
        write_run(suite, [90, 5.0, 3.0], label="lsr1", seed=seed)
    (ax,) = visible_axes(suite_figure(runs_of(suite), "test_error", "epoch"))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["adam (1 seed)", "lsr1 (3 seeds)"]


def test_train_loss_targets_are_drawn_on_the_loss_figure(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 4.0, 2.0], targets={"train_loss": [0.5], "test_error": [3.0]}, train_losses=[2.3, 0.6, 0.4])
    (ax,) = visible_axes(suite_figure(runs_of(suite), "train_loss", "epoch"))
    horizontal = [
        line for line in ax.get_lines() if line.get_label().startswith("_") and len(set(line.get_ydata())) == 1
    ]
    assert [line.get_ydata()[0] for line in horizontal] == [0.5]
    np.testing.assert_allclose(data_lines(ax)[0].get_ydata(), [2.3, 0.6, 0.4], rtol=0, atol=1e-12)


def test_the_registrys_optimizers_keep_their_colour_across_reports(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    for name in ("lsr1", "nag"):
        write_run(small, [90, 5.0, 3.0], label=name, optimizer=name)
    for name in ("adam", "lbfgs", "lsr1", "nag", "my-optimizer"):
        write_run(large, [90, 5.0, 3.0], label=name, optimizer=name)
    a, b = label_styles(runs_of(small)), label_styles(runs_of(large))
    assert a["lsr1"].color == b["lsr1"].color and a["nag"].color == b["nag"].color
    assert len({style.color for style in b.values()}) == 5


def test_no_two_optimizers_of_a_report_look_alike(tmp_path: Path) -> None:
    """Optimizers past the palette's fixed ten (the peers, a plugin) take colours no other
    optimizer of the report holds; past ten in one report, colours repeat with another marker."""
    peers = tmp_path / "peers"
    for name in ("lsr1", "adam", "soap", "shampoo", "adahessian", "my-opt"):
        write_run(peers, [90, 5.0, 3.0], label=name, optimizer=name)
    styles = label_styles(runs_of(peers))
    assert len({style.color for style in styles.values()}) == 6
    crowd = tmp_path / "crowd"
    names = [f"opt{i:02d}" for i in range(14)]
    for name in names:
        write_run(crowd, [90, 5.0, 3.0], label=name, optimizer=name)
    styles = label_styles(runs_of(crowd))
    assert len({(style.color, style.marker) for style in styles.values()}) == 14
    assert len({style.color for style in styles.values()}) == 10
