"""Every number in docs/REPRODUCTION.md's prose, checked against the quantity it is about.

The prose is the document outside its generated regions, its indented or fenced code (the
commands), its inline code (file names, commit ids) and its image lines. Each number in it
must be covered by an entry of :data:`CHECKS`, a regular expression around the number with
the named source it must equal:

* a quantity computed from the committed records (``records:...``),
* a setting read from a suite's YAML or from the tool (``suite:...``, ``tool:...``),
* a number of the paper (``paper:...``, from ``paper_table1.py``, so that no copy of the
  paper is needed beside the repository);

or by an entry of :data:`NOT_DATA`, a short list of numbers that are names, not data
("Table 1", "section 4.1.4", "LeNet-5"), each with its reason. A number that differs from
its source, a number no entry covers, and an entry that no longer matches the prose are
all reported, each with its line. When the records change, the checks whose source
changed fail and point at the sentence to rewrite::

    python docs/tools/prose_numbers.py            # prints the mismatches; exit 1 if any

``tests/test_reproduction_doc.py`` runs it on the document.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from doc_regions import BEGIN, END_TEMPLATE
from paper_table1 import PAPER_CELLS, PAPER_TABLE1, PAPER_TEXT

from lsr1bench.grid import RunSpec, expand
from lsr1bench.records import SKIP_RATE_THRESHOLDS
from lsr1bench.reporting.runs import RunSummary, load_results
from lsr1bench.spec import load_suite

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "REPRODUCTION.md"
FOLDER = ROOT / "docs" / "reproduction"
SUITES = ROOT / "suites"

NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?(?![\w])")

Value = float | frozenset[float]


# --- the prose ---


def prose_of(text: str) -> str:
    """``text`` with everything but the prose blanked out (spaces, newlines kept), so that
    positions in it are positions in the document."""
    chars = list(text)

    def blank(start: int, end: int) -> None:
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "

    for match in BEGIN.finditer(text):
        end = text.find(END_TEMPLATE.format(name=match.group(1)), match.end())
        end = len(text) if end < 0 else end + len(END_TEMPLATE.format(name=match.group(1)))
        blank(match.start(), end)
    position = 0
    fenced = False
    for line in text.splitlines(keepends=True):
        start, end = position, position + len(line)
        position = end
        if line.startswith("```"):
            fenced = not fenced
            blank(start, end)
        elif fenced or line.startswith("    ") or line.startswith("!["):
            blank(start, end)
    for match in re.finditer(r"`[^`\n]*`|<!--.*?-->", text, re.S):
        blank(match.start(), match.end())
    return "".join(chars)


def number_value(text: str) -> float:
    return float(text.replace(",", ""))


# --- the sources ---


class Sources:
    """The named quantities the prose's numbers are checked against, computed on demand
    from the records in ``folder`` and the suites in ``suites``."""

    def __init__(self, folder: Path = FOLDER, suites: Path = SUITES) -> None:
        self.folder = folder
        self.suites = suites

    @functools.cache  # noqa: B019 - one Sources per check run
    def specs(self, suite_file: str) -> tuple[RunSpec, ...]:
        return tuple(expand(load_suite(self.suites / suite_file)))

    @functools.cache  # noqa: B019
    def runs(self, suite: str) -> tuple[RunSummary, ...]:
        return tuple(load_results(self.folder / "runs" / suite).runs)

    def setting(self, suite_file: str, label: str | None, key: str) -> Value:
        """One value of every run of ``suite_file`` (of ``label``, if given): ``epochs``,
        ``batch_size``, ``seed`` or an optimizer parameter; a set where they differ."""
        values = set()
        for spec in self.specs(suite_file):
            if label is not None and spec.label != label and not spec.label.startswith(f"{label}-init_"):
                continue
            value = getattr(spec, key) if hasattr(spec, key) else spec.optimizer_params.get(key)
            if isinstance(value, list | tuple):
                value = value[0]
            values.add(float(value))
        if not values:
            raise KeyError(f"{suite_file}: no run of {label!r} has {key!r}")
        return values.pop() if len(values) == 1 else frozenset(values)

    def csv_cell(self, stem: str, label: str, batch: str, column: str) -> float:
        import csv

        with (self.folder / f"{stem}_cells.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["label"] == label and row["batch_size"] == batch:
                    return float(len(row[column].split())) if column == "seeds" else float(row[column])
        raise KeyError(f"{stem}_cells.csv: no {label} at batch {batch}")


def _record_values(runs: tuple[RunSummary, ...], get: Callable[[RunSummary], object]) -> Value:
    values = {float(v) for v in (get(r) for r in runs) if v is not None}  # type: ignore[arg-type]
    return values.pop() if len(values) == 1 else frozenset(values)


def _embedded_sizes() -> tuple[int, int]:
    from lsr1bench.registry.datasets import EMBEDDED_MNIST_FILE

    path = ROOT / "lsr1bench" / "data" / EMBEDDED_MNIST_FILE
    with np.load(path) as arrays:
        return len(arrays["train_labels"]), len(arrays["test_labels"])


def _init_images(s: Sources) -> Value:
    import csv

    with (s.folder / "init_saturation.csv").open(newline="", encoding="utf-8") as handle:
        return _record_values(tuple(csv.DictReader(handle)), lambda row: row["images"])  # type: ignore[arg-type,index]


def _all(values: object) -> frozenset[float]:
    return frozenset(float(v) for v in values)


T1 = "repro/table1_mnist_cpu.yaml"
ABL = "repro/ablation_first_order_cpu.yaml"
ABL_GPU = "repro/ablation_first_order.yaml"
SKIP = "repro/skip_rate_mnist_cpu.yaml"
FIG_OLD = "repro/figure1_mnist_cpu.yaml"
FIG = "repro/figure1_mnist_embedded_cpu.yaml"

GPU = "table1_mnist_gpu"
FC_TORCH_NAG = "nag-lr0.003-init_fc-torch"
CPU_SUITE = "repro-table1-mnist-cpu"


def _specs(s: Sources, *files: str) -> list[RunSpec]:
    return [spec for f in files for spec in s.specs(f)]


def _params(s: Sources, key: str, *files: str, optimizer: str | None = None) -> frozenset[float]:
    return _all(spec.optimizer_params[key] for spec in _specs(s, *files)
                if key in spec.optimizer_params and optimizer in (None, spec.optimizer))


def _not_aimed(s: Sources, batch: int) -> Value:
    """The Table 1 targets (test error) of L-SR1's runs at other batch sizes that its runs at
    ``batch`` do not have."""
    def targets(spec) -> set[float]:
        return {float(v) for v in (spec.targets or {}).get("test_error", [])}

    lsr1 = [spec for spec in s.specs(T1) if spec.label == "lsr1"]
    here = set().union(*(targets(spec) for spec in lsr1 if spec.batch_size == batch))
    others = set().union(*(targets(spec) for spec in lsr1 if spec.batch_size != batch))
    return _all(others - here)


SOURCES: dict[str, Callable[[Sources], Value]] = {
    # the suites' settings
    "suite:batch sizes": lambda s: _all(p.batch_size for p in _specs(s, T1, FIG, FIG_OLD)),
    "suite:table1 seed count": lambda s: float(len({p.seed for p in s.specs(T1)})),
    "suite:table1 NAG's cap (epochs)": lambda s: s.setting(T1, "nag", "epochs"),
    "suite:table1 Adam's cap (epochs)": lambda s: s.setting(T1, "adam", "epochs"),
    "suite:table1 L-SR1's cap (epochs)": lambda s: s.setting(T1, "lsr1", "epochs"),
    "suite:table1 targets L-SR1 at batch 1000 does not aim at": lambda s: _not_aimed(s, 1000),
    "suite:table1 first-order lr": lambda s: _params(s, "lr", T1),
    "suite:table1 momentum": lambda s: s.setting(T1, "nag", "momentum"),
    "suite:table1 largest / smallest batch": lambda s: (max(p.batch_size for p in s.specs(T1))
                                                        / min(p.batch_size for p in s.specs(T1))),
    "suite:ablation fc-torch NAG's cap (epochs)": lambda s: s.setting(ABL, FC_TORCH_NAG, "epochs"),
    "suite:ablation Adam rates (GPU)": lambda s: _params(s, "lr", ABL_GPU, optimizer="adam"),
    "suite:ablation Adam's larger rate": lambda s: s.setting(ABL, "adam-lr0.01", "lr"),
    "suite:NAG's cap (epochs), both readings": lambda s: _same(s.setting(T1, "nag", "epochs"),
                                                            s.setting(ABL, FC_TORCH_NAG, "epochs")),
    "suite:seeds (every CPU suite)": lambda s: _all(p.seed for p in _specs(s, T1, ABL, SKIP, FIG, FIG_OLD)),
    "suite:old figure1 epochs": lambda s: s.setting(FIG_OLD, None, "epochs"),
    "suite:figure1 memory": lambda s: _params(s, "memory", FIG, FIG_OLD),
    "suite:figure1 L-BFGS forgets every": lambda s: s.setting(FIG, "lbfgs-forget5", "forget_every"),
    "suite:figure1 epochs": lambda s: s.setting(FIG, None, "epochs"),
    # the tool
    "tool:skip-rate thresholds recorded": lambda s: _all(SKIP_RATE_THRESHOLDS),
    "tool:MNIST L2 weight": lambda s: _mnist_weight_decay(),
    "tool:Adam's default learning rate (adam-defaults)": lambda s: _adam_default_lr(),
    "tool:Figure 1 table's epochs (reproduction.py)": lambda s: _all(__import__("reproduction").FIGURE1_EPOCHS),
    "tool:embedded MNIST training images": lambda s: float(_embedded_sizes()[0]),
    "tool:embedded MNIST test images": lambda s: float(_embedded_sizes()[1]),
    "tool:embedded MNIST points per test image": lambda s: 100.0 / _embedded_sizes()[1],
    # the records
    "records:MNIST training images": lambda s: _record_values(s.runs(CPU_SUITE), lambda r: _data(r, "train_examples")),
    "records:MNIST test images": lambda s: _record_values(s.runs(CPU_SUITE), lambda r: _data(r, "test_examples")),
    "records:CPU cores (torch threads of a run alone)": lambda s: float(
        max(r.environment.get("torch_threads", 0) for r in s.runs(CPU_SUITE))
    ),
    "records:init measurement images": _init_images,
    "records:old GPU L-SR1 seeds at batch 500": lambda s: s.csv_cell(GPU, "lsr1", "500", "seeds"),
    "records:old GPU L-SR1 completed at batch 500": lambda s: s.csv_cell(GPU, "lsr1", "500", "completed"),
    "records:old GPU complete seeds": lambda s: _all(range(int(s.csv_cell(GPU, "adam", "500", "seeds")))),
    "records:old GPU seeds beyond the complete ones": lambda s: _all(
        range(int(s.csv_cell(GPU, "adam", "500", "seeds")), int(s.csv_cell(GPU, "lsr1", "500", "seeds")))
    ),
    "records:old GPU seeds per cell (Adam, NAG)": lambda s: _all(
        s.csv_cell(GPU, label, batch, "completed") for label in ("adam", "nag") for batch in ("500", "1000", "10000")
    ),
    "doc:--jobs of the GPU Table 1 command": lambda s: _gpu_jobs(),
    # the paper
    "paper:Table 1 NAG at 500": lambda s: float(PAPER_TABLE1["nag"]["500"]),
    "paper:Table 1 NAG at 1000": lambda s: float(PAPER_TABLE1["nag"]["1000"]),
    "paper:Table 1 NAG at 10000": lambda s: float(PAPER_TABLE1["nag"]["10000"]),
    "paper:Table 1 loosest target": lambda s: max(float(t) for t, _ in PAPER_CELLS),
    **{f"paper:{key}": (lambda s, v=value: float(v)) for key, value in PAPER_TEXT.items()},
}


def _mnist_weight_decay() -> float:
    from lsr1bench.registry.names import WEIGHT_DECAY

    return float(WEIGHT_DECAY["mnist"])


def _gpu_jobs() -> float:
    """The ``--jobs`` of the document's own command for the GPU Table 1 runs."""
    found = re.search(r"table1_mnist\.yaml --devices cuda:0 --jobs (\d+)", DOC.read_text(encoding="utf-8"))
    if found is None:
        raise KeyError("the document's GPU Table 1 command (table1_mnist.yaml --devices cuda:0 --jobs N) is gone")
    return float(found.group(1))


def _same(a: Value, b: Value) -> Value:
    """``a`` where both sources agree; else nothing matches (the prose must say which)."""
    return a if a == b else frozenset()


def _adam_default_lr() -> float:
    import inspect

    import torch

    return float(inspect.signature(torch.optim.Adam).parameters["lr"].default)


def _data(run: RunSummary, key: str) -> float | None:
    import json

    data = json.loads((run.path / "run.json").read_text(encoding="utf-8")).get("data") or {}
    value = data.get(key)
    return None if value is None else float(value)


# --- the checks ---


@dataclass(frozen=True)
class Check:
    """``pattern`` matched in the prose (``\\s+`` between words, for line breaks); the
    numbers in its groups (in the whole match, when it has none) must equal ``sources``
    (one per group, or one for all)."""

    pattern: str
    sources: str | tuple[str, ...]


B = r"(?:mini)?batch(?:es|\s+sizes?)?(?:-|\s+)"  # "batch 500", "batch-10000", "minibatch 20"
NUMS = r"\d[\d,]*(?:\.\d+)?(?:e-?\d+)?"  # a number, inside a pattern
AND = r"(?:,|,? and| to| or)\s+"  # "500, 1000", "500 and 1000", "500 to 10000"

CHECKS: list[Check] = [
    # names of cells and runs: batch sizes, seeds, skip thresholds
    Check(rf"{B}({NUMS}(?:'s)?(?:{AND}(?:at\s+)?(?:batch\s+)?{NUMS}(?![\d,])(?:'s)?(?!\s+at\s+batch))*)",
          "suite:batch sizes"),
    Check(r"\bat (\d{3,5})\b", "suite:batch sizes"),
    Check(r"\b[Ss]eeds? (\d(?:(?:,| and|–) ?\d)*)", "suite:seeds (every CPU suite)"),
    Check(r"\br = (\d[\d.e-]*\d)", "tool:skip-rate thresholds recorded"),
    Check(r"(\d) CPU cores", "records:CPU cores (torch threads of a run alone)"),
    # the first-order settings
    Check(r"(?<![\d.])(0\.003)(?!\d)", "suite:table1 first-order lr"),
    Check(r"(?:momentum|beta1) (0\.9)\b|momentum was set to (0\.9)", "suite:table1 momentum"),
    Check(r"defaults \((?:learning rate )?(0\.001)\)", "tool:Adam's default learning rate (adam-defaults)"),
    Check(r"learning rate \((0\.001), 0\.003, (0\.01)\)", "suite:ablation Adam rates (GPU)"),
    Check(r"Adam at (0\.01)\b", "suite:ablation Adam's larger rate"),
    Check(r"L2 (1e-4)", "tool:MNIST L2 weight"),
    # caps and horizons
    Check(r"NAG capped at (\d+)\s+epochs", "suite:table1 NAG's cap (epochs)"),
    Check(r"every looser\s+one, capped at (\d+)\s+epochs", "suite:table1 L-SR1's cap (epochs)"),
    Check(r"never aimed at (\d\.\d)%", "suite:table1 targets L-SR1 at batch 1000 does not aim at"),
    Check(r"capped at (\d+)\s+epochs in every cell: the paper's horizon", "paper:table1_epochs_small_batches"),
    Check(r"within the (\d+)-epoch\s+cap", "suite:table1 NAG's cap (epochs)"),
    Check(r"within its (\d+)-epoch cap", "suite:table1 NAG's cap (epochs)"),
    Check(r"within (\d+) either", "suite:ablation fc-torch NAG's cap (epochs)"),
    Check(r"NAG with seed \d, capped at (\d+)\s+epochs", "suite:ablation fc-torch NAG's cap (epochs)"),
    Check(r"each capped at (\d+) epochs", "suite:NAG's cap (epochs), both readings"),
    Check(r"cell, capped at (\d+) epochs", "suite:table1 NAG's cap (epochs)"),
    Check(r"after (\d+) epochs, Adam's cap", "suite:table1 Adam's cap (epochs)"),
    Check(r"\(or (\d+) epochs\)", "suite:table1 Adam's cap (epochs)"),
    # the data
    Check(r"MNIST \(([\d,]+) training, ([\d,]+) test images\)",
          ("records:MNIST training images", "records:MNIST test images")),
    Check(r"([\d,]+) training and ([\d,]+) test images, so one test image is ([\d.]+) points",
          ("tool:embedded MNIST training images", "tool:embedded MNIST test images",
           "tool:embedded MNIST points per test image")),
    Check(r"the first ([\d,]+) training images", "records:init measurement images"),
    # the paper's numbers
    Check(r"[Tt]he paper's (\d+) repeats", "paper:repeats"),
    Check(r"\(we have (\d+) seeds\)", "suite:table1 seed count"),
    Check(r"from (\d+)% to higher than (\d+)%", ("paper:skip_low_percent", "paper:skip_high_percent")),
    Check(r"the paper's (\d+)%", "paper:skip_high_percent"),
    Check(r"the paper's NAG took (\d+) and (\d+) epochs", ("paper:Table 1 NAG at 500", "paper:Table 1 NAG at 1000")),
    Check(r"NAG took (\d+) epochs to\s+its target at batch 500 and (\d+) at batch 10000",
          ("paper:Table 1 NAG at 500", "paper:Table 1 NAG at 10000")),
    Check(r"A (\d+) fold increase", "paper:minibatch_factor"),
    Check(r"a minibatch (\d+) times larger", "suite:table1 largest / smallest batch"),
    Check(r"factor of (\d+)\b", "suite:table1 largest / smallest batch"),
    Check(r"loosest target \(([\d.]+)%\)", "paper:Table 1 loosest target"),
    Check(r"b / (\d+) times", "paper:figure1_first_order_batch"),
    # Figure 1
    Check(r"over the paper's (\d+) epochs", "paper:figure1_epochs"),
    Check(r"rerun above \((\d+) epochs on the embedded subset", "suite:figure1 epochs"),
    Check(r"three seeds, (\d+) epochs", "suite:figure1 epochs"),
    Check(r"forgetting every (\d+) steps", "suite:figure1 L-BFGS forgets every"),
    Check(r"forgets every (\d+) steps", "paper:lbfgs_forget_every"),
    Check(r"memory (\d+)\b", "suite:figure1 memory"),
    Check(r"epochs (\d+), (\d+), (\d+) and (\d+):", "tool:Figure 1 table's epochs (reproduction.py)"),
    Check(r"single (\d+)-epoch run", "suite:old figure1 epochs"),
    Check(r"first (\d+) of (\d+) epochs", ("suite:old figure1 epochs", "paper:figure1_epochs")),
    Check(r"first (\d+) of the paper's (\d+) epochs", ("suite:old figure1 epochs", "paper:figure1_epochs")),
    Check(r"One seed and (\d+) epochs say little about the paper's (\d+)-epoch",
          ("suite:old figure1 epochs", "paper:figure1_epochs")),
    # the older records
    Check(r"seeds (\d)–(\d) complete; (\d)–(\d) partial",
          ("records:old GPU complete seeds", "records:old GPU complete seeds",
           "records:old GPU seeds beyond the complete ones", "records:old GPU seeds beyond the complete ones")),
    Check(r"the record holds (\d+) L-SR1 seeds, of which only the first (\d+)\s+completed",
          ("records:old GPU L-SR1 seeds at batch 500", "records:old GPU L-SR1 completed at batch 500")),
    Check(r"older GPU records have (\d+) complete\s+seeds per cell", "records:old GPU seeds per cell (Adam, NAG)"),
    Check(r"\((\d+) runs sharing one GPU", "doc:--jobs of the GPU Table 1 command"),
]

# Numbers that are names, not data: pattern -> why.
NOT_DATA: list[tuple[str, str]] = [
    (r"\bTables? \d+\b", "a table of the paper, by its number"),
    (r"\bFigures? \d+(?:(?:,| and) \d+)*\b", "a figure of the paper, by its number"),
    (r"\bsections? \d+\.\d+(?:\.\d+)?\b", "a section of the paper, by its number"),
    (r"\bAlgorithm \d+\b", "an algorithm of the paper, by its number"),
    (r"\bLeNet-5\b|\bCIFAR-10\b|\bResNet-20\b|\bFC-500\b", "the name of a model or a data set"),
    (r"N\(0, 0\.1\)", "the name of a reading: the appendix's initialisation"),
    (r"\|\|s\|\|\^2|radius\^2|M\^\{-1\}", "notation: a squared norm, an inverse"),
    (r"\bin \(0, 1\)", "notation: the open interval Algorithm 1 gives for r"),
    (r"close to 0\b", "notation: y close to zero"),
    (r"(?m)^\d+\. \*\*", "the number of an item of a numbered list"),
    (r"\bdifferences? \d+\b", "a cross-reference to the numbered list of differences"),
    (r"counted from 1\b", "a definition: the first epoch is epoch 1"),
]


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"docs/REPRODUCTION.md:{self.line}: {self.message}"


def _matches(value: float, expected: Value) -> bool:
    if isinstance(expected, frozenset):
        return any(_matches(value, e) for e in expected)
    return math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12)


def _show(expected: Value) -> str:
    if isinstance(expected, frozenset):
        return "one of " + ", ".join(f"{v:g}" for v in sorted(expected))
    return f"{expected:g}"


def _context(text: str, start: int, end: int) -> str:
    left = max(text.rfind("\n", 0, max(0, start - 40)), start - 60, 0)
    right = min(end + 40, len(text))
    return " ".join(text[left:right].split())


def check(text: str, sources: Sources | None = None, checks: list[Check] | None = None) -> list[Problem]:
    """The prose numbers of ``text`` that differ from their source or that nothing covers,
    and the checks that match nothing."""
    sources = sources or Sources()
    checks = CHECKS if checks is None else checks
    prose = prose_of(text)
    covered: set[int] = set()  # start offsets of the numbers a check or NOT_DATA covers
    problems: list[Problem] = []

    def line_of(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    for pattern, _why in NOT_DATA:
        for match in re.finditer(pattern, prose):
            covered.update(m.start() + match.start() for m in NUMBER.finditer(match.group(0)))
    values: dict[str, Value] = {}
    for item in checks:
        found = list(re.finditer(item.pattern.replace(" ", r"\s+"), prose))
        if not found:
            problems.append(Problem(0, f"the check {item.pattern!r} ({item.sources}) matches nothing in the prose: "
                                       "the sentence changed; update or remove the check"))
            continue
        for match in found:
            groups = range(1, (match.re.groups or 0) + 1) if match.re.groups else [0]
            names = item.sources if isinstance(item.sources, tuple) else (item.sources,) * len(groups)
            for group, name in zip(groups, names, strict=True):
                if match.group(group) is None:
                    continue
                if name not in values:
                    values[name] = SOURCES[name](sources)
                offset = match.start(group)
                for number in NUMBER.finditer(match.group(group)):
                    covered.add(offset + number.start())
                    if not _matches(number_value(number.group(0)), values[name]):
                        problems.append(Problem(
                            line_of(offset + number.start()),
                            f"{number.group(0)} should be {_show(values[name])} ({name}): "
                            f"\"{_context(text, offset + number.start(), offset + number.end())}\"",
                        ))
    for number in NUMBER.finditer(prose):
        if number.start() not in covered:
            problems.append(Problem(line_of(number.start()),
                                    f"{number.group(0)} is not covered by any check in docs/tools/prose_numbers.py: "
                                    f"\"{_context(text, number.start(), number.end())}\""))
    return sorted(problems, key=lambda p: p.line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    doc = Path(argv[0]) if argv else DOC
    problems = check(doc.read_text(encoding="utf-8"))
    for problem in problems:
        print(problem)
    print(f"{doc}: {len(problems)} prose number problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
