"""docs/REPRODUCTION.md's generated regions match what the committed CSVs produce."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from reproduction import FRAGMENTS, lsr1_cpu, main, render_doc, update_doc  # docs/tools

from lsr1bench.reporting import ReportError

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "REPRODUCTION.md"
CSV_FOLDER = ROOT / "docs" / "reproduction"


def test_doc_regions_match_the_committed_csvs() -> None:
    text = DOC.read_text(encoding="utf-8")
    regenerated = render_doc(text, CSV_FOLDER, str(DOC))
    assert regenerated == text, (
        "docs/REPRODUCTION.md is out of date: run "
        "`python docs/tools/reproduction.py`"
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
def test_bad_markers_are_one_line_errors_and_leave_the_file(
    tmp_path: Path, body: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _doc(tmp_path, body)
    with pytest.raises(ReportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        update_doc(doc, CSV_FOLDER)
    assert doc.read_text(encoding="utf-8") == body
    assert main([str(doc), str(CSV_FOLDER)]) == 2
    assert message in capsys.readouterr().err
    assert doc.read_text(encoding="utf-8") == body
    assert list(tmp_path.iterdir()) == [doc]


def test_missing_csv_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _doc(tmp_path, "<!-- lsr1bench:begin skips -->\n<!-- lsr1bench:end skips -->\n")
    assert main([str(doc), str(tmp_path)]) == 2
    assert "table1_mnist_gpu_cells.csv: no such file" in capsys.readouterr().err


def test_tool_reports_up_to_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _doc(tmp_path, "<!-- lsr1bench:begin gpu-wallclock -->\n<!-- lsr1bench:end gpu-wallclock -->\n")
    assert main([str(doc), str(CSV_FOLDER)]) == 0
    assert "updated" in capsys.readouterr().out
    assert main([str(doc), str(CSV_FOLDER)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_the_package_holds_no_code_of_this_document() -> None:
    """The reproduction's fragments and the ablation table are documentation tooling: the
    installed package neither ships them nor offers a command that needs them."""
    package = ROOT / "lsr1bench"
    assert not (package / "reporting" / "reproduction.py").exists()
    assert not (package / "reporting" / "ablation.py").exists()
    for source in package.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "REPRODUCTION.md" not in text and "update_doc" not in text, source


# --- prose: every number equals the quantity it is about (docs/tools/prose_numbers.py) ---


def test_prose_numbers_match_their_sources() -> None:
    """Runs without ../shared: the paper's numbers are in docs/tools/paper_table1.py."""
    from prose_numbers import check

    problems = check(DOC.read_text(encoding="utf-8"))
    assert not problems, "python docs/tools/prose_numbers.py:\n" + "\n".join(map(str, problems))


def test_nag_capped_at_40_fails() -> None:
    """NAG's cap is 50 epochs in suites/repro/table1_mnist_cpu.yaml: the prose saying 40 fails."""
    from prose_numbers import check

    text = DOC.read_text(encoding="utf-8")
    assert text.count("NAG capped at 50") == 1
    problems = [str(p) for p in check(text.replace("NAG capped at 50", "NAG capped at 40"))]
    # the suite's cap, and the paper's horizon the sentence says it equals
    assert any("40 should be 50 (suite:table1 NAG's cap (epochs))" in p for p in problems), problems
    assert any("40 should be 50 (paper:table1_epochs_small_batches)" in p for p in problems), problems
    assert len(problems) == 2 and len({p.split(": ")[0] for p in problems}) == 1, problems


def test_a_paper_number_and_a_record_number_typed_wrong_fail() -> None:
    from prose_numbers import check

    text = DOC.read_text(encoding="utf-8")
    assert text.count("higher than 60%") == 1
    edited = text.replace("higher than 60%", "higher than 70%")
    assert "only the first 3 completed" in edited
    edited = edited.replace("only the first 3 completed", "only the first 4 completed")
    problems = [str(p) for p in check(edited)]
    assert len(problems) == 2, problems
    assert "70 should be 60 (paper:skip_high_percent)" in problems[0]
    assert "4 should be 3 (records:old GPU L-SR1 completed at batch 500)" in problems[1]


def test_a_number_no_check_covers_fails_and_code_does_not_count() -> None:
    from prose_numbers import Check, check

    body = (
        "intro\n<!-- lsr1bench:begin skips -->\n| 0.76 |\n<!-- lsr1bench:end skips -->\n"
        "NAG capped at 50 epochs; it took 0.80 s (see Table 1, `run-b500-s3`).\n\n    lsr1bench run --jobs 8\n"
    )
    problems = [str(p) for p in check(body, checks=[Check(r"NAG capped at (\d+)", "suite:table1 NAG's cap (epochs)")])]
    assert len(problems) == 1, problems
    assert "0.80 is not covered by any check" in problems[0]


def test_a_check_whose_sentence_is_gone_fails() -> None:
    from prose_numbers import Check, check

    only = [Check(r"NAG capped at (\d+)", "suite:table1 NAG's cap (epochs)")]
    problems = [str(p) for p in check("nothing here\n", checks=only)]
    assert problems and "matches nothing in the prose" in problems[0]


# --- the run-record fragments on synthetic records, against hand-computed values ---


def _lsr1_run(folder: Path, batch: int, rows: list[dict], seed: int = 0, suite: str | None = None,
              params: dict | None = None, label: str = "lsr1", threads: int | None = None) -> None:
    from reproduction import CPU_SUITE

    from lsr1bench import records
    from lsr1bench.grid import RunSpec

    suite = suite or CPU_SUITE
    spec = RunSpec(
        suite=suite, run_id=f"lenet5-bn-mnist-{label}-b{batch}-s{seed}", model="lenet5", batch_norm=True,
        dataset="mnist", optimizer="lsr1", label=label, optimizer_params={"memory": 5, **(params or {})},
        lr_schedule=None, batch_size=batch, seed=seed, epochs=len(rows) - 1, targets=(1.1, 1.2, 1.5),
        stop_at_targets=True,
    )  # fmt: skip
    directory = records.run_dir(folder / "runs", suite, spec.run_id)
    directory.mkdir(parents=True)
    records.write_epochs(directory, rows)
    extra = {} if threads is None else {"environment": {"torch_threads": threads}}
    records.write_run(directory, records.RunRecord(suite, spec.run_id, spec.to_dict(), status="completed",
                                                   epochs_completed=len(rows) - 1, extra=extra))


def test_skip_fragments_by_hand(tmp_path: Path) -> None:
    from reproduction import cpu_skip_rates, cpu_skip_study

    base = {"train_loss": 0.5, "test_loss": 0.1, "test_error": 2.0, "train_seconds": 1.0, "total_seconds": 1.0,
            "grad_evals": 0, "samples": 0, "skipped_updates": 0, "dropped_pairs": 0, "stored_pairs": 5}
    rows = [
        {**base, "epoch": 0, "steps": 0, "accepted_steps": 0, "rejected_steps": 0},
        # 10 steps, 2 rejected, 1 with no trial point; a tenth would skip at r = 0.1
        {**base, "epoch": 1, "steps": 10, "accepted_steps": 7, "rejected_steps": 2,
         "negative_curvature_fraction": 0.5, "skip_rate_r0.1": 0.1, "skip_rate_r0.3": 0.2},
        # 30 more steps, none rejected; half would skip at r = 0.1
        {**base, "epoch": 2, "steps": 40, "accepted_steps": 37, "rejected_steps": 2,
         "negative_curvature_fraction": 0.0, "skip_rate_r0.1": 0.5, "skip_rate_r0.3": 1.0},
    ]  # fmt: skip
    _lsr1_run(tmp_path, 500, rows)
    rates = cpu_skip_rates(tmp_path).splitlines()
    header = [c.strip() for c in rates[0].strip("|").split("|")]
    values = dict(zip(header, (c.strip() for c in rates[2].strip("|").split("|"))))
    # weighted by the epochs' steps: (0.1 * 10 + 0.5 * 30) / 40 and (0.2 * 10 + 1.0 * 30) / 40
    assert values["r = 0.1"] == "40.0" and values["r = 0.3"] == "80.0"
    assert values["r = 1e-08"] == "n/a"  # never recorded
    study = cpu_skip_study(tmp_path).splitlines()
    header = [c.strip() for c in study[0].strip("|").split("|")]
    values = dict(zip(header, (c.strip() for c in study[2].strip("|").split("|"))))
    assert values["steps"] == "40" and values["steps with no trial point"] == "1"
    assert values["rejected steps (%)"] == "5.0"  # 2 of 40
    assert values["steps with B indefinite (%)"] == "12.5"  # (0.5 * 10 + 0 * 30) / 40


def test_skip_rate_runs_pair_each_run_with_the_default_run_of_its_own_seed(tmp_path: Path) -> None:
    from reproduction import SKIP_SUITE, skip_rate_runs

    base = {"train_loss": 0.5, "test_loss": 0.1, "train_seconds": 1.0, "total_seconds": 1.0, "grad_evals": 0,
            "samples": 0, "skipped_updates": 0, "dropped_pairs": 0, "stored_pairs": 5, "accepted_steps": 0,
            "rejected_steps": 0, "steps": 0}

    def rows(final_error: float) -> list[dict]:
        return [{**base, "epoch": 0, "test_error": 90.0}, {**base, "epoch": 1, "test_error": final_error}]

    _lsr1_run(tmp_path, 500, rows(1.4), seed=0)  # the default r, seed 0
    _lsr1_run(tmp_path, 500, rows(1.3), seed=1)  # the default r, seed 1: not this pair's
    _lsr1_run(tmp_path, 500, rows(1.0), seed=0, suite=SKIP_SUITE, params={"skip_tol": 0.3})
    table = skip_rate_runs(tmp_path).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    found = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in table[2:]]
    pairs = [(r["seed"], r["r"], r["final test error (%)"]) for r in found]
    assert pairs == [("0", "1e-08", "1.40"), ("0", "0.3", "1.00")]
    assert [r["< 1.5% (epochs)"] for r in found] == ["1", "1"]
    assert [r["< 1.2% (epochs)"] for r in found] == ["never reached", "1"]


def test_cpu_table1_cost_by_hand(tmp_path: Path) -> None:
    from reproduction import cpu_table1_cost

    base = {"train_loss": 0.5, "test_loss": 0.1, "samples": 0}
    start = {**base, "epoch": 0, "test_error": 90.0, "train_seconds": 0.0, "total_seconds": 0.0, "grad_evals": 0}
    # seed 0 passes 1.2% in its second epoch, seed 1 in its first
    _lsr1_run(tmp_path, 1000, [
        start,
        {**base, "epoch": 1, "test_error": 1.5, "train_seconds": 10.0, "total_seconds": 11.0, "grad_evals": 120},
        {**base, "epoch": 2, "test_error": 1.15, "train_seconds": 20.0, "total_seconds": 22.0, "grad_evals": 240},
    ], seed=0, threads=2)  # fmt: skip
    _lsr1_run(tmp_path, 1000, [
        start,
        {**base, "epoch": 1, "test_error": 1.1, "train_seconds": 30.0, "total_seconds": 31.0, "grad_evals": 120},
    ], seed=1, threads=1)  # fmt: skip
    table = cpu_table1_cost(tmp_path).splitlines()
    assert len(table) == 3  # one cell: L-SR1 at batch 1000
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = dict(zip(header, (c.strip() for c in table[2].strip("|").split("|"))))
    assert row["target"] == "1.2%" and row["seeds (completed)"] == "2 (2)"
    assert row["epochs"] == "1.5 [1–2] (2/2)"
    assert row["grad evals"] == "180 [120–240]"
    assert row["training s"] == "25.0 [20.0–30.0]"
    assert row["s / epoch"] == "20.0 [10.0–30.0]"  # 20 s over 2 epochs, 30 s over 1
    assert row["torch threads"] == "1, 2"  # seed 1 had one thread: its seconds are not seed 0's
    assert row["test error after epoch 1 (%)"] == "1.30 [1.10–1.50]"


def test_fc_torch_table_reads_only_the_fc_torch_runs_of_the_ablation(tmp_path: Path) -> None:
    from reproduction import ABLATION_CPU_SUITE, cpu_table1_fc_torch, cpu_table1_fc_torch_cost

    base = {"train_loss": 0.5, "test_loss": 0.1, "samples": 0, "train_seconds": 1.0, "total_seconds": 1.0,
            "grad_evals": 0}
    start = {**base, "epoch": 0, "test_error": 90.0}
    # under fc-torch L-SR1 passes 1.2% at batch 1000 in epoch 2
    _lsr1_run(tmp_path, 1000, [start, {**base, "epoch": 1, "test_error": 1.3},
                               {**base, "epoch": 2, "test_error": 1.1}],
              suite=ABLATION_CPU_SUITE, label="lsr1-init_fc-torch")
    # another variant of the ablation, faster, and not the fc-torch reading: left out
    _lsr1_run(tmp_path, 1000, [start, {**base, "epoch": 1, "test_error": 1.0}],
              suite=ABLATION_CPU_SUITE, label="lsr1-init_torch")
    table = cpu_table1_fc_torch(tmp_path).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    # the paper's L-SR1 row is 5 / 6 / 8 epochs; Adam's and NAG's rows show though not run
    assert cells == [
        ["L-SR1", "5", "not run", "6", "2 (1/1)", "8", "not run"],
        ["Adam (lr 0.003)", "unreadable", "not run", "3", "not run", "10", "not run"],
        ["NAG (lr 0.003)", "35", "not run", "37", "not run", "194", "not run"],
    ]
    # a record that does not say how many torch threads it had reads "?", not a blank
    cost = cpu_table1_fc_torch_cost(tmp_path).splitlines()
    header = [c.strip() for c in cost[0].strip("|").split("|")]
    assert [dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))["torch threads"]
            for line in cost[2:]] == ["?"]


# --- the initialisation measurement (docs/tools/measure_init.py) ---


def test_init_measurement_matches_a_direct_computation() -> None:
    """measure() reads z at the tanh through a hook; here z is computed by running the
    layers before the tanh directly, and the shares by plain arithmetic."""
    import torch
    from measure_init import measure
    from torch import nn

    from lsr1bench.registry.datasets import load_dataset
    from lsr1bench.registry.models import build_model

    x = load_dataset("mnist-embedded", train_subset=64, test_subset=1).train_x
    for init in ("appendix", "fc-torch"):
        got = measure(x, init, seed=3)
        torch.manual_seed(3)
        model = build_model("lenet5", batch_norm=True, input_shape=tuple(x.shape[1:]), init=init).train()
        cut = next(i for i, m in enumerate(model) if isinstance(m, nn.Tanh))
        with torch.no_grad():
            z = model[:cut](x).double().flatten().tolist()
        saturated = sum(abs(v) > 2 for v in z) / len(z)
        derivative = sum(1 - math.tanh(v) ** 2 for v in z) / len(z)
        assert abs(float(got["saturated_share"]) - saturated) < 1e-4, init
        assert abs(float(got["mean_tanh_derivative"]) - derivative) < 1e-4, init
        assert got["images"] == 64


def test_init_fragment_reads_its_csv(tmp_path: Path) -> None:
    from reproduction import init_saturation

    (tmp_path / "init_saturation.csv").write_text(
        "init,seed,images,fc_weight_std,z_std,saturated_share,mean_tanh_derivative\n"
        "appendix,0,10,0.1,4,0.5,0.2\nappendix,1,10,0.1,4,0.7,0.4\nappendix,2,10,0.1,4,0.6,0.3\n"
        "fc-torch,0,10,0.02,1,0.01,0.7\n",
        encoding="utf-8",
    )
    rows = {line.split("|")[1].strip(): line for line in init_saturation(tmp_path).splitlines()[2:]}
    assert "60.0% [50.0%–70.0%]" in rows["N(0, 0.1) (Table 1's rows)"]
    assert "0.30 [0.20–0.40]" in rows["N(0, 0.1) (Table 1's rows)"]
    assert "| 1.0%" in rows["PyTorch's default for FC-500 (fc-torch)"]
    assert not any(name.startswith("PyTorch's default everywhere") for name in rows)
    with pytest.raises(ReportError, match="measure_init.py writes it"):
        init_saturation(tmp_path / "nowhere")


# --- provenance: every L-SR1 record was made with the final optimizer ---


def _git_checkout() -> str | None:
    """Why the provenance checks cannot run here, or None when they can."""
    from optimizer_provenance import NotAGitCheckout, final_optimizer_commit

    try:
        final_optimizer_commit()
    except NotAGitCheckout as exc:
        return f"not a git checkout, so no record's commit can be checked ({exc})"
    return None


NO_GIT = _git_checkout()


@pytest.mark.skipif(NO_GIT is not None, reason=NO_GIT or "")
def test_every_lsr1_record_was_made_with_the_final_optimizer() -> None:
    from optimizer_provenance import stale_lsr1_records

    stale = stale_lsr1_records(CSV_FOLDER / "runs")
    assert not stale, "L-SR1 records not made with the final optimizer:\n" + "\n".join(stale)


def _record(folder: Path, suite: str, run_id: str, optimizer: str, commit: str | None) -> None:
    import json

    directory = folder / suite / run_id
    directory.mkdir(parents=True)
    spec = {"suite": suite, "run_id": run_id, "optimizer": optimizer}
    (directory / "run.json").write_text(json.dumps({"spec": spec, "git_commit": commit}), encoding="utf-8")


@pytest.mark.skipif(NO_GIT is not None, reason=NO_GIT or "")
def test_the_provenance_check_passes_at_head_and_fails_on_older_or_dirty_commits(tmp_path: Path) -> None:
    import subprocess

    from optimizer_provenance import OPTIMIZER_PATH, final_optimizer_commit, stale_lsr1_records

    final = final_optimizer_commit()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    before = subprocess.run(["git", "rev-parse", f"{final}^"], cwd=ROOT, capture_output=True, text=True)
    assert before.returncode == 0, before.stderr
    old = before.stdout.strip()  # the parent of the last change under lsr1bench/optim

    _record(tmp_path, "s", "at-head", "lsr1", head)
    _record(tmp_path, "s", "at-final", "lsr1", final)
    _record(tmp_path, "s", "adam-at-old", "adam", old)  # not an L-SR1 record: not checked
    assert stale_lsr1_records(tmp_path) == []

    _record(tmp_path, "s", "at-old", "lsr1", old)
    _record(tmp_path, "s", "dirty", "lsr1", head + "+dirty")
    _record(tmp_path, "s", "unknown", "lsr1", "0" * 40)
    _record(tmp_path, "s", "none", "lsr1", None)
    stale = stale_lsr1_records(tmp_path)
    assert [line.split(":")[0] for line in stale] == ["s/at-old", "s/dirty", "s/none", "s/unknown"]
    assert f"whose optimizer code differs from the final optimizer's ({final[:7]})" in stale[0]
    assert "+dirty" in stale[1]
    assert OPTIMIZER_PATH == "lsr1bench/optim"


def test_the_optimizer_code_ignores_docstrings_and_comments_but_not_code() -> None:
    import ast

    from optimizer_provenance import _without_docstrings

    def code(source: str) -> str:
        return ast.dump(_without_docstrings(ast.parse(source)))

    base = 'def f(x):\n    """Double x."""\n    return 2 * x  # twice\n'
    assert code(base) == code('def f(x):\n    """Twice x, reworded."""\n    # a comment\n    return 2 * x\n')
    assert code(base) == code("def f(x):\n    return 2 * x\n")
    assert code(base) != code('def f(x):\n    """Double x."""\n    return x + x\n')
    assert code('"""Module."""\nA = 1\n') != code('"""Module."""\nA = 2\n')


def test_provenance_checks_skip_outside_git(tmp_path: Path) -> None:
    from optimizer_provenance import NotAGitCheckout, final_optimizer_commit

    with pytest.raises(NotAGitCheckout, match="not a git checkout"):
        final_optimizer_commit(tmp_path)


# --- the claims, curvature and Figure 1 fragments on synthetic records ---


def _run(folder: Path, suite: str, optimizer: str, label: str, batch: int, seed: int, errors: list[float],
         batch_norm: bool = True, extra: dict | None = None) -> None:
    from lsr1bench import records
    from lsr1bench.grid import RunSpec

    spec = RunSpec(
        suite=suite, run_id=f"lenet5{'-bn' if batch_norm else ''}-mnist-{label}-b{batch}-s{seed}", model="lenet5",
        batch_norm=batch_norm, dataset="mnist", optimizer=optimizer, label=label, optimizer_params={},
        lr_schedule=None, batch_size=batch, seed=seed, epochs=len(errors), targets=(1.1, 1.2, 1.5),
        stop_at_targets=False,
    )  # fmt: skip
    base = {"train_loss": 0.5, "test_loss": 0.1, "train_seconds": 1.0, "total_seconds": 1.0, "grad_evals": 0,
            "samples": 0}
    rows = [{**base, "epoch": 0, "test_error": 90.0}]
    rows += [{**base, "epoch": i + 1, "test_error": e, **((extra or {}).get(i + 1, {}))} for i, e in enumerate(errors)]
    directory = records.run_dir(folder / "runs", suite, spec.run_id)
    directory.mkdir(parents=True)
    records.write_epochs(directory, rows)
    records.write_run(directory, records.RunRecord(suite, spec.run_id, spec.to_dict(), status="completed",
                                                   epochs_completed=len(errors)))


def _table(text: str) -> list[dict[str, str]]:
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_figure1_fragments_by_hand(tmp_path: Path) -> None:
    from reproduction import FIGURE1_SUITE, figure1_claims, figure1_embedded

    twenty = [5.0] * 20
    for seed, last in enumerate((2.0, 2.4, 2.2)):
        _run(tmp_path, FIGURE1_SUITE, "lsr1", "lsr1-init_fc-torch", 400, seed, [20.0] + [4.0] * 18 + [last])
    _run(tmp_path, FIGURE1_SUITE, "lbfgs", "lbfgs-forget5-init_fc-torch", 400, 0, twenty)
    _run(tmp_path, FIGURE1_SUITE, "lsr1", "lsr1-init_fc-torch", 400, 0, [30.0] * 5, batch_norm=False)  # cut short
    rows = _table(figure1_embedded(tmp_path))
    assert [(r["optimizer"], r["batch norm"], r["seeds (completed)"]) for r in rows] == [
        ("L-SR1", "yes", "3 (3)"), ("L-SR1", "no", "1 (1)"), ("L-BFGS, forgetting every 5", "yes", "1 (1)")]
    assert rows[0]["test error (%), epoch 1"] == "20.00"
    assert rows[0]["test error (%), epoch 20"] == "2.20 [2.00–2.40]"
    assert rows[1]["test error (%), epoch 20"] == "—"
    claims = figure1_claims(tmp_path).splitlines()
    # L-SR1 (medians 20, 4, 4, 2.2) against L-BFGS (5 throughout): lower at epochs 5, 10 and 20
    assert claims[0].startswith("- L-SR1 against L-BFGS, with batch norm: L-SR1's median test error is the lower "
                                "at epochs 5, 10 and 20 of 1, 5, 10 and 20; at epoch 20, 2.20% against 5.00%")
    assert "every seed of the first below every seed of the second" in claims[0]
    assert claims[1] == "- L-SR1 against L-BFGS, without batch norm: no epoch of the table has records of both."
    assert claims[2].startswith("- L-SR1 with batch norm against without: the median with batch norm is the lower "
                                "at every epoch both have (1 and 5); at epoch 5, 4.00% against 30.00% (medians of "
                                "3 seeds and 1 seed)")


def test_curvature_outlier_and_nag_minibatch_by_hand(tmp_path: Path) -> None:
    from reproduction import ABLATION_CPU_SUITE, CPU_SUITE, curvature_outlier, nag_minibatch

    eig = {1: {"min_eigenvalue": -2000.0}, 2: {"min_eigenvalue": -1.0}}
    _run(tmp_path, CPU_SUITE, "lsr1", "lsr1", 10000, 2, [30.0, 2.0], extra=eig)
    _run(tmp_path, CPU_SUITE, "lsr1", "lsr1", 500, 0, [3.0, 1.0], extra={1: {"min_eigenvalue": -4.0}})
    text = curvature_outlier(tmp_path)
    assert "is -2000 (batch 10000, seed 2, end of epoch 1)" in text
    assert "the next smallest of the 3 snapshots is -4 (batch 500, seed 0, end of epoch 1)" in text
    assert text.endswith("so the smallest is 500 times the next.")
    # NAG: batch 500 passes 1.5% at epoch 3; batch 10000 never does and bottoms at 3.0 in epoch 4
    _run(tmp_path, CPU_SUITE, "nag", "nag", 500, 0, [5.0, 2.9, 1.4, 1.3])
    _run(tmp_path, CPU_SUITE, "nag", "nag", 10000, 0, [60.0, 10.0, 4.0, 3.0])
    _run(tmp_path, ABLATION_CPU_SUITE, "adam", "adam-lr0.01", 1000, 0, [1.0])  # no fc-torch NAG: no row
    rows = _table(nag_minibatch(tmp_path))
    assert rows == [{
        "reading": "N(0, 0.1)", "seed": "0", "epochs run (cap) b500 / b10000": "4 (4) / 4 (4)", "< 1.5%: b500": "3",
        "< 1.5%: b10000": "not within 4", "b10000's best test error (%)": "3.00", "epochs to it: b500": "2",
        "epochs to it: b10000": "4", "ratio": "2.0x",
    }]


# --- the curvature probe (docs/tools/probe_curvature.py) ---


def test_probe_window_is_the_textbook_sr1_recursion_over_the_pairs_held() -> None:
    """_window's cosines and rank-one terms against a dense SR1 recursion from gamma I
    (the textbook update B += v v^T / (s^T v), v = y - B s) over the optimizer's pairs, on
    an indefinite quadratic with the memory full (older pairs dropped)."""
    import torch
    from probe_curvature import _min_eigenvalue, _window

    from lsr1bench.optim import LSR1

    torch.manual_seed(0)
    n = 12
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    A = q @ torch.diag(torch.linspace(-3.0, 5.0, n, dtype=torch.float64)) @ q.T
    x = torch.nn.Parameter(torch.randn(n, dtype=torch.float64))
    opt = LSR1([x], memory=3, keep_pairs=True)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * x @ A @ x + 0.1 * x.pow(4).sum()
        loss.backward()
        return loss

    for _ in range(8):
        opt.step(closure)
    curvature = opt.curvature()
    assert curvature.k == 3
    S, Y = curvature.pairs()
    B = curvature.gamma * torch.eye(n, dtype=torch.float64)
    cosines, terms = [], []
    for s, y in zip(S, Y):
        v = y - B @ s
        d = float(s @ v)
        cosines.append(abs(d) / float(s.norm() * v.norm()))
        terms.append(float(v @ v) / d)
        B = B + torch.outer(v, v) / d
    got = _window(curvature)
    assert float(got["window_min_cosine"]) == pytest.approx(min(cosines), rel=1e-3)
    worst = min(range(3), key=lambda i: terms[i])
    assert float(got["window_min_term"]) == pytest.approx(terms[worst], rel=1e-3)
    assert got["window_min_term_pair"] == str(worst + 1)
    assert float(got["recursion_vs_compact"]) < 1e-8
    assert _min_eigenvalue(curvature) == pytest.approx(float(torch.linalg.eigvalsh(B)[0]), rel=1e-6, abs=1e-9)


def test_curvature_probe_fragment_reads_its_csv(tmp_path: Path) -> None:
    from reproduction import curvature_probe

    header = ("step,stored,k,min_eigenvalue,skip_test_cosine,cosine,v_over_s,curvature_along_s,sr1_term,"
              "window_min_cosine,window_min_term,window_min_term_pair,recursion_vs_compact\n")
    (tmp_path / "curvature_probe.csv").write_text(
        header + "1,1,1,1,0.5,0.5,1,1,2,0.5,2,1,1e-9\n2,1,2,-40,0.4,0.4,1,1,-3,0.01,-41,1,2e-9\n"
        "3,0,2,-5,0.001,,,,,0.01,-6,2,1e-9\n",
        encoding="utf-8",
    )
    text = curvature_probe(tmp_path)
    lines = text.splitlines()
    assert lines[2].split("|")[1].strip() == "1" and "| no " in lines[4] and "| —" in lines[4]
    assert ("lowest after step 2 (-40). The pair that step stored passed the skip test with cosine 0.4 "
            "(its rank-one term -3); in the SR1 recursion over the 2 pairs B then held, pair 1 of 2 has "
            "cosine 0.01 and a rank-one term of -41.") in text
    (tmp_path / "curvature_probe.csv").write_text(
        header + "1,1,1,1,0.5,0.5,1,1,2,0.5,2,1,1e-9\n2,0,1,-7,0.001,,,,,0.5,-8,1,1e-9\n", encoding="utf-8")
    assert "lowest after step 2 (-7). That step stored no pair; in the SR1 recursion over the 1 pairs" in (
        curvature_probe(tmp_path))
    with pytest.raises(ReportError, match="probe_curvature.py writes it"):
        curvature_probe(tmp_path / "nowhere")
