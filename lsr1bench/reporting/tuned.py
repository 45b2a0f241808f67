"""Tuned baselines: pick one setting of each sweep on the validation split, report its test rows.

A sweep (a list in an optimizer entry's ``params``) makes one cell per setting, each with
the swept values in its label (``adam-lr0.001``) and the entry's own label in
``spec.sweep_of``. For each (suite, model, dataset, batch norm, entry label, batch size)
the setting is chosen on the held-out training examples of ``validation_split``, never on
the test set:

1. fewest epochs to the runs' first target, measured on the validation counterpart of its
   metric (test error -> ``val_error``, test loss -> ``val_loss``; a train loss target is
   on training data already), as the median over seeds, a seed that never reaches it
   counting as never;
2. ties (and suites without targets) by the lowest median final validation error;
3. then by the label, so the choice is deterministic.

The chosen setting's cell is repeated under the label ``<entry label> (tuned)`` so its test
rows sit beside untuned entries and ``compare`` gates them like any cell. Without a
validation split no setting is picked, and the report says why.

When the chosen value of a numeric swept hyperparameter is the smallest or the largest of
its sweep, the choice carries a warning: the best setting may lie beyond the grid, so the
"tuned" baseline may be under-tuned until the sweep is extended past that edge.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, replace

from lsr1bench.records import epochs_to_target
from lsr1bench.reporting.cells import CellSummary
from lsr1bench.reporting.runs import RunSummary, Target, spec_targets

TUNED_SUFFIX = " (tuned)"
VALIDATION_METRIC = {"test_error": "val_error", "test_loss": "val_loss", "train_loss": "train_loss"}


@dataclass(frozen=True)
class TunedChoice:
    """The outcome for one sweep group: the chosen label, or why none was chosen."""

    group: str  # "model · dataset · entry label · b100", for reading
    where: tuple  # (suite, model, dataset, batch norm, batch size) of the group's cells
    sweep_of: str
    chosen: str | None
    criterion: str
    scores: tuple[tuple[str, str], ...]  # (label, what the criterion saw), in label order
    reason: str | None = None
    edges: tuple[str, ...] = ()  # warnings: a chosen value at the end of its sweep

    def line(self) -> str:
        if self.chosen is None:
            return f"- {self.group}: no setting picked: {self.reason}"
        seen = "; ".join(f"{label}: {text}" for label, text in self.scores)
        warnings = "".join(f"\n  - warning: {edge}" for edge in self.edges)
        return f"- {self.group}: **{self.chosen}** ({seen}){warnings}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def edge_warnings(chosen: dict, points: list[dict]) -> tuple[str, ...]:
    """For each numeric swept key, a warning when ``chosen``'s value is its sweep's min or max.

    ``points``: the ``sweep`` dicts of every setting in the group (``{"lr": 0.001}``).
    A key with one value, or with values that are not all numbers, has no edge to warn of.
    """
    out = []
    for key, value in chosen.items():
        values = sorted({p[key] for p in points if key in p and _is_number(p[key])})
        if len(values) < 2 or not _is_number(value) or len(values) != len({repr(p.get(key)) for p in points}):
            continue
        side = "smallest" if value == values[0] else "largest" if value == values[-1] else None
        if side is None:
            continue
        beyond = "below" if side == "smallest" else "above"
        out.append(
            f"{key} {value:g} is the {side} value of its sweep ({', '.join(f'{v:g}' for v in values)}); "
            f"the best {key} may lie {beyond} it: extend the sweep"
        )
    return tuple(out)


def _first_target(runs: list[RunSummary]) -> Target | None:
    """The first target the runs' suite names (its first metric's first threshold)."""
    for run in runs:
        raw = run.spec.get("targets") or {}
        if isinstance(raw, dict):
            for metric, values in raw.items():
                if values:
                    return Target(str(metric), float(values[0]))
        elif raw:
            return Target("test_error", float(raw[0]))
    targets = sorted({t for run in runs for t in (run.targets or spec_targets(run.spec))})
    return targets[0] if targets else None


def _final(rows: list[dict[str, float | None]], column: str) -> float | None:
    trained = [r for r in rows if (r.get("epoch") or 0) >= 1 and r.get(column) is not None]
    return trained[-1][column] if trained else None


def criterion_text(target: Target | None) -> str:
    if target is None:
        return "lowest median final validation error over seeds (the runs have no targets)"
    metric = VALIDATION_METRIC[target.metric]
    return (
        f"fewest epochs (median over seeds) until {metric} < {target.value:g} on the validation split "
        f"(the first target, {target.text()}, measured on held-out training examples), ties broken by "
        "the lowest median final validation error"
    )


def choose(runs: list[RunSummary]) -> list[TunedChoice]:
    """One TunedChoice per sweep group among ``runs`` (runs not from a sweep are left alone)."""
    groups: dict[tuple, list[RunSummary]] = defaultdict(list)
    for run in runs:
        sweep_of = run.spec.get("sweep_of")
        if sweep_of:
            key = run.key
            groups[(key.suite, key.model, key.dataset, key.batch_norm, sweep_of, key.batch_size)].append(run)
    choices = []
    for (suite, model, dataset, batch_norm, sweep_of, batch), members in sorted(groups.items()):
        where = (suite, model, dataset, batch_norm, batch)
        group = f"{model}{' + BN' if batch_norm else ''} · {dataset} · {sweep_of} · b{batch}"
        target = _first_target(members)
        criterion = criterion_text(target)
        without = sorted({r.key.label for r in members if _final(r.rows, "val_error") is None})
        if without:
            reason = (
                f"{', '.join(without)} recorded no validation error (set validation_split: N in the suite "
                "to hold out N training examples); choosing on the test set would overstate the tuned baseline"
            )
            choices.append(TunedChoice(group, where, sweep_of, None, criterion, (), reason))
            continue
        by_label: dict[str, list[RunSummary]] = defaultdict(list)
        for run in members:
            by_label[run.key.label].append(run)
        scored = []
        for label, label_runs in sorted(by_label.items()):
            epochs = math.inf
            if target is not None:
                metric = VALIDATION_METRIC[target.metric]
                reached = [epochs_to_target(r.rows, target.value, metric) for r in label_runs]
                epochs = statistics.median(math.inf if e is None else e for e in reached)
            finals = [v for v in (_final(r.rows, "val_error") for r in label_runs) if v is not None]
            final = statistics.median(finals) if finals and all(math.isfinite(v) for v in finals) else math.inf
            text = f"final val error {final:.2f}%" if math.isfinite(final) else "diverged"
            if target is not None:
                text = ("never reached" if math.isinf(epochs) else f"{epochs:g} epoch(s)") + f", {text}"
            scored.append(((epochs, final, label), label, text))
        best = min(scored)[1]
        scores = tuple((lbl, txt) for _, lbl, txt in scored)
        points = [dict(label_runs[0].spec.get("sweep") or {}) for label_runs in by_label.values()]
        edges = edge_warnings(dict(by_label[best][0].spec.get("sweep") or {}), points)
        choices.append(TunedChoice(group, where, sweep_of, best, criterion, scores, edges=edges))
    return choices


def tuned_cells(cells: list[CellSummary], choices: list[TunedChoice]) -> list[CellSummary]:
    """The chosen settings' cells again, labelled ``<entry label> (tuned)``."""
    out = []
    for choice in choices:
        for cell in cells:
            key = cell.key
            ident = (key.suite, key.model, key.dataset, key.batch_norm, key.batch_size, key.label)
            if choice.chosen is not None and ident == (*choice.where, choice.chosen):
                settings = dict(cell.settings)
                settings["tuned choice"] = choice.chosen
                settings["tuned criterion"] = choice.criterion
                out.append(replace(cell, key=replace(key, label=choice.sweep_of + TUNED_SUFFIX), settings=settings))
    return out
