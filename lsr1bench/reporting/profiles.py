"""Performance profiles (Dolan & Moré 2002) over the cells of a suite, and AlgoPerf's score.

A problem is one (suite, model, dataset, batch norm, batch size, target); a solver is an
optimizer label. For a cost (epochs, training seconds or gradient evaluations to the
target), t[p, s] is the median over label s's seeds of its cost on problem p, where a seed
that never reached the target counts as +inf (so does the median when most seeds missed).
The performance ratio is

    r[p, s] = t[p, s] / min over labels s' of t[p, s']        (+inf when t[p, s] is +inf)

and the profile of label s is the share of problems it solves within a factor tau of the
best label:

    rho_s(tau) = |{p : r[p, s] <= tau}| / |P|.

Problems no label reached are left out of P (they rank no one) and counted separately.
AlgoPerf's benchmark score (Dahl et al. 2023, "Benchmarking Neural Network Training
Algorithms", section 4.5) is the area under the profile from 1 to tau_max = 4, normalised
to [0, 1]:

    B_s = 1 / (tau_max - 1) * integral_1^tau_max rho_s(tau) dtau
        = 1 / (|P| (tau_max - 1)) * sum over p of max(0, tau_max - r[p, s])

(rho is a step function, so the integral is exact): 1 when a label is the best on every
problem, 0 when it is never within a factor 4 of the best. Only labels that ran every
cell of the problems are profiled together; a problem where some label has no runs is
left out and counted. No torch, no matplotlib.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from lsr1bench.reporting.runs import RunSummary, Target

TAU_MAX = 4.0
COSTS = {"epochs": "epochs", "train_seconds": "training seconds", "grad_evals": "gradient evaluations"}

Problem = tuple[str, str, str, bool, int, Target]  # suite, model, dataset, batch norm, batch size, target


def problem_text(problem: Problem) -> str:
    suite, model, dataset, batch_norm, batch_size, target = problem
    return f"{suite} · {model}{' + BN' if batch_norm else ''} · {dataset} · b{batch_size} · {target.text()}"


@dataclass
class Profile:
    """One cost's profile: the ratios per problem and label, and what was left out."""

    cost: str
    labels: list[str]
    problems: list[Problem]
    # ratios[label][i]: r[problems[i], label]
    ratios: dict[str, list[float]]
    # problems no label reached / where a label had no runs
    unsolved: list[Problem] = field(default_factory=list)
    incomplete: list[Problem] = field(default_factory=list)

    def rho(self, label: str, tau: float) -> float:
        """The share of problems ``label`` solves within a factor ``tau`` of the best."""
        if not self.problems:
            return 0.0
        return sum(r <= tau for r in self.ratios[label]) / len(self.problems)

    def score(self, label: str, tau_max: float = TAU_MAX) -> float:
        """AlgoPerf's score: the area under rho from 1 to ``tau_max``, over ``tau_max - 1``."""
        if not self.problems:
            return 0.0
        area = sum(max(0.0, tau_max - r) for r in self.ratios[label] if r <= tau_max)
        return area / (len(self.problems) * (tau_max - 1.0))

    def steps(self, label: str) -> tuple[list[float], list[float]]:
        """The finite ratios of ``label``, sorted, and rho just after each: the step function."""
        finite = sorted(r for r in self.ratios[label] if math.isfinite(r))
        return finite, [self.rho(label, r) for r in finite]


def _seed_cost(run: RunSummary, target: Target, cost: str) -> float:
    hit = run.hits.get(target)
    if hit is None:
        return math.inf
    value = float(hit.epoch) if cost == "epochs" else getattr(hit, cost)
    return math.inf if value is None or not math.isfinite(value) else float(value)


def costs_by_problem(runs: Sequence[RunSummary], cost: str) -> dict[Problem, dict[str, float]]:
    """t[p, s]: per problem and label, the median over seeds of the cost (a miss is +inf)."""
    seeds: dict[Problem, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        key = run.key
        for target in run.targets:
            problem = (key.suite, key.model, key.dataset, key.batch_norm, key.batch_size, target)
            seeds[problem][key.label].append(_seed_cost(run, target, cost))
    return {
        problem: {label: statistics.median(values) for label, values in by_label.items()}
        for problem, by_label in seeds.items()
    }


def performance_profile(runs: Sequence[RunSummary], cost: str) -> Profile:
    """The profile of every label over the problems of ``runs`` for one cost."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    table = costs_by_problem(runs, cost)
    labels = sorted({label for by_label in table.values() for label in by_label})
    profile = Profile(cost, labels, [], {label: [] for label in labels})
    for problem in sorted(table, key=_problem_key):
        by_label = table[problem]
        if set(by_label) != set(labels):
            profile.incomplete.append(problem)
            continue
        best = min(by_label.values())
        if not math.isfinite(best):
            profile.unsolved.append(problem)
            continue
        profile.problems.append(problem)
        for label in labels:
            # a best cost of 0 (a cost column recorded as zero) ranks every label reaching it as 1
            value = by_label[label]
            ratio = math.inf if not math.isfinite(value) else (value / best if best > 0 else 1.0)
            profile.ratios[label].append(ratio)
    return profile


def _problem_key(problem: Problem) -> tuple[object, ...]:
    suite, model, dataset, batch_norm, batch_size, target = problem
    return (suite, model, dataset, batch_norm, batch_size, target.metric, target.value)


def profiles(runs: Sequence[RunSummary]) -> list[Profile]:
    """The profiles for epochs, seconds and gradient evaluations to target."""
    return [performance_profile(runs, cost) for cost in COSTS]


def _fmt_rho(value: float) -> str:
    return f"{value:.2f}"


def profile_table(found: list[Profile]) -> tuple[list[str], list[list[str]]]:
    """A row per label, a column per cost: ``score (rho(1) / rho(2) / rho(4))``."""
    headers = ["label"] + [f"{COSTS[profile.cost]}: score (ρ 1 / 2 / 4)" for profile in found]
    labels = sorted({label for profile in found for label in profile.labels})
    rows = []
    for label in labels:
        row = [label]
        for profile in found:
            if label not in profile.ratios or not profile.problems:
                row.append("—")
                continue
            rhos = " / ".join(_fmt_rho(profile.rho(label, tau)) for tau in (1.0, 2.0, 4.0))
            row.append(f"{_fmt_rho(profile.score(label))} ({rhos})")
        rows.append(row)
    return headers, rows
