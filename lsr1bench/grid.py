"""Expand a validated :class:`~lsr1bench.spec.Suite` into frozen :class:`RunSpec`s.

Expansion is deterministic: grids in file order, then models, batch-norm settings,
datasets, optimizer entries, batch sizes and seeds, each in the order written. Every
setting is resolved here (optimizer entry, else grid, else suite, else the paper's
default), so a RunSpec alone says everything a run needs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lsr1bench.registry import names, plugins
from lsr1bench.spec import DEFAULT_EPOCHS, Grid, OptimizerEntry, SpecError, Suite, sweep_axes

DEFAULT_CHECKPOINT_EVERY = 1  # epochs between checkpoints
RUN_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs; see docs/ARCHITECTURE.md for the fields."""

    suite: str
    run_id: str
    model: str
    batch_norm: bool
    dataset: str
    optimizer: str
    label: str
    optimizer_params: dict[str, Any]
    lr_schedule: dict[str, Any] | None
    batch_size: int
    seed: int
    epochs: int
    targets: dict[str, tuple[float, ...]] = field(default_factory=dict)  # metric -> thresholds
    weight_decay: float = 0.0
    stop_at_targets: bool = False
    data_root: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    ranks: int = 1  # data-parallel processes; each takes batch_size / ranks rows of every minibatch
    # Fields added later (plugins, sweeps, validation), left out of to_dict() at their defaults so the records and
    # baselines of suites that do not use them stay as they were.
    model_path: str | None = None  # a model factory's import path (``model`` is then its label)
    model_params: dict[str, Any] = field(default_factory=dict)
    dataset_path: str | None = None  # a dataset factory's import path (``dataset`` is its label)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    sweep_of: str | None = None  # the entry's own label when this run is one point of a sweep
    sweep: dict[str, Any] = field(default_factory=dict)  # the swept hyperparameters' values here
    validation_split: int | None = None  # training examples held out and evaluated every epoch
    # The first-order ablation's settings; a value other than the default also marks the label
    # (variant_label), so such runs never merge with the default's as seeds of one cell.
    model_init: str = names.DEFAULT_MODEL_INIT  # names.MODEL_INITS (lenet5 only)
    loss_reduction: str = names.DEFAULT_LOSS_REDUCTION  # names.LOSS_REDUCTIONS
    # Checkpoints: how often the run saves a checkpoint (epochs; 0: only on a signal) and
    # whether a completed run keeps it. How a run survives, not what it computes.
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        # a bare sequence of thresholds (the list form of a suite, records before
        # schema 2) means test error targets
        object.__setattr__(self, "targets", normalize_targets(self.targets))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, not tuples)."""
        out = asdict(self)
        out["targets"] = {metric: list(values) for metric, values in self.targets.items()}
        out["optimizer_params"] = _jsonable(self.optimizer_params)
        out["lr_schedule"] = _jsonable(self.lr_schedule)
        for name, default in _LATER_FIELDS.items():
            out[name] = _jsonable(out[name])
            if out[name] == default:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Invert :meth:`to_dict`; unknown keys are an error."""
        data = dict(data)
        data["targets"] = normalize_targets(data.get("targets") or {})
        data["optimizer_params"] = dict(data.get("optimizer_params") or {})
        return cls(**data)

    @property
    def second_order(self) -> bool:
        return self.optimizer in names.SECOND_ORDER

    @property
    def family(self) -> str | None:
        return None if self.dataset_path else names.family(self.dataset)

    def comparable(self) -> dict[str, Any]:
        """The fields that change results (the data root only says where the files are)."""
        out = self.to_dict()
        for name in ("data_root", *_HOW_NOT_WHAT):
            out.pop(name, None)
        return out


_LATER_FIELDS: dict[str, Any] = {
    "model_path": None,
    "model_params": {},
    "dataset_path": None,
    "dataset_params": {},
    "sweep_of": None,
    "sweep": {},
    "validation_split": None,
    "model_init": names.DEFAULT_MODEL_INIT,
    "loss_reduction": names.DEFAULT_LOSS_REDUCTION,
    "checkpoint_every": DEFAULT_CHECKPOINT_EVERY,
    "keep_checkpoints": False,
}
# Fields that say how a run is carried out, not what it computes: a change to them does
# not make a finished run stale.
_HOW_NOT_WHAT = ("checkpoint_every", "keep_checkpoints")


def variant_label(label: str, model_init: str, loss_reduction: str) -> str:
    """``nag`` -> ``nag-init_torch-loss_sum``: settings off their defaults, named in the label.

    The label is what tells cells apart (reports, baselines, compare) and is part of the run
    id; two runs that differ only by their initialisation or loss reduction must not read as
    seeds of one cell, whatever labels the suite gave.
    """
    parts = [label]
    if model_init != names.DEFAULT_MODEL_INIT:
        parts.append(f"init_{model_init}")
    if loss_reduction != names.DEFAULT_LOSS_REDUCTION:
        parts.append(f"loss_{loss_reduction}")
    return "-".join(parts)


def sweep_label(label: str, point: dict[str, Any]) -> str:
    """``adam`` + ``{lr: 0.001}`` -> ``adam-lr0.001``: the swept values in the label and run id."""
    parts = [label]
    for key, value in point.items():
        parts.append(f"{key}{_value_text(value)}")
    return "-".join(parts).lower()


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "_".join(_value_text(v) for v in value)
    return str(value)


def normalize_targets(targets: Any) -> dict[str, tuple[float, ...]]:
    """``{metric: (thresholds, ...)}`` from that form or a bare sequence (test error)."""
    if not isinstance(targets, dict):
        targets = {names.DEFAULT_TARGET_METRIC: targets}
    return {str(metric): tuple(float(t) for t in values) for metric, values in targets.items() if len(values)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def make_run_id(
    model: str, batch_norm: bool, dataset: str, label: str, batch: int, seed: int, ranks: int = 1
) -> str:
    """``{model}{-bn}-{dataset}-{label}-b{batch}{-p<ranks>}-s{seed}``, lower-case."""
    bn = "-bn" if batch_norm else ""
    parallel = f"-p{ranks}" if ranks > 1 else ""
    return f"{model}{bn}-{dataset}-{label}-b{batch}{parallel}-s{seed}".lower()


def _pick(name: str, *layers: Any) -> Any:
    """The first layer (most specific first) that sets ``name``."""
    for layer in layers:
        value = getattr(layer, name)
        if value is not None:
            return value
    return None


def _where(name: str, paths: Sequence[str], *layers: Any) -> str:
    """The key path of the setting ``name`` that :func:`_pick` uses (``paths`` match ``layers``)."""
    for path, layer in zip(paths, layers):
        if getattr(layer, name) is not None:
            return f"{path}.{name}" if path else name
    return name


def _divisibility_problems(
    paths: Sequence[str], layers: Sequence[Any], sizes: list[int], ranks: list[int]
) -> list[str]:
    """``batch_size % ranks != 0``: every rank must take an equal share of each global minibatch."""
    problems = []
    for r in ranks:
        bad = [b for b in sizes if b % r]
        if bad:
            problems.append(
                f"{_where('ranks', paths, *layers)}: {r} ranks cannot split batch size "
                f"{', '.join(str(b) for b in bad)} ({_where('batch_sizes', paths, *layers)}) into equal shards; "
                f"use batch sizes that are multiples of {r}, or other ranks"
            )
    return problems


def _seeds(*layers: Any) -> list[int]:
    for layer in layers:
        if layer.seeds is not None:
            return list(layer.seeds)
        if layer.repeats is not None:
            return list(range(layer.repeats))
    return [0]


def _entry_runs(suite: Suite, g: int, grid: Grid, o: int, entry: OptimizerEntry) -> Iterable[tuple[str, RunSpec]]:
    where = f"grids[{g}].optimizers[{o}]"
    layers = (entry, grid, suite)
    batch_sizes = _pick("batch_sizes", *layers)
    if batch_sizes is None:
        raise SpecError(
            [f"{where}: no batch_sizes for {entry.name}; set batch_sizes on the suite, grid {g} or this entry"]
        )
    epochs = _pick("epochs", *layers) or DEFAULT_EPOCHS
    validation_split = _pick("validation_split", *layers)
    loss_reduction = _pick("loss_reduction", *layers) or names.DEFAULT_LOSS_REDUCTION
    axes = sweep_axes(entry.name, entry.params)
    fixed = {k: v for k, v in entry.params.items() if k not in dict(axes)}
    points = plugins.sweep_points(axes, fixed)
    swept_keys = [key for key, _ in axes]
    schedule = _pick("lr_schedule", *layers)
    targets = normalize_targets(_pick("targets", *layers) or {})
    ranks_values = list(_pick("ranks", *layers) or [1])
    problems = _divisibility_problems((where, f"grids[{g}]", ""), layers, list(batch_sizes), ranks_values)
    if problems:
        raise SpecError(problems)
    for model in grid.models:
        model_init = model.init or names.DEFAULT_MODEL_INIT
        entry_label = variant_label(entry.resolved_label, model_init, loss_reduction)
        for batch_norm in model.batch_norm_values():
            for d, dataset_entry in enumerate(grid.datasets):
                dataset = dataset_entry.run_name
                dataset_path = dataset_entry.name if plugins.is_import_path(dataset_entry.name) else None
                family = None if dataset_path else names.family(dataset_entry.name)
                weight_decay = _pick("weight_decay", *layers)
                if weight_decay is None:
                    weight_decay = names.WEIGHT_DECAY[family] if family else plugins.declared_weight_decay(dataset_path)
                combos = [(p, b, r) for p in points for b in batch_sizes for r in ranks_values]
                for point, batch, ranks in combos:
                    params = _resolved_params(entry, dataset_entry.name, family, point, where, g, d)
                    swept = {k: point[k] for k in swept_keys}
                    label = sweep_label(entry_label, swept) if axes else entry_label
                    for seed in _seeds(*layers):
                        run_id = make_run_id(model.run_name, batch_norm, dataset, label, batch, seed, ranks)
                        yield (
                            where,
                            RunSpec(
                                suite=suite.name or "suite",
                                run_id=run_id,
                                model=model.run_name,
                                batch_norm=batch_norm,
                                dataset=dataset,
                                optimizer=entry.name,
                                label=label,
                                optimizer_params=params,
                                lr_schedule=schedule.model_dump() if schedule is not None else None,
                                batch_size=batch,
                                seed=seed,
                                epochs=epochs,
                                targets=targets,
                                weight_decay=float(weight_decay),
                                stop_at_targets=bool(_pick("stop_at_targets", *layers) or False),
                                data_root=_pick("data_root", *layers),
                                train_subset=_pick("train_subset", *layers),
                                test_subset=_pick("test_subset", *layers),
                                ranks=ranks,
                                model_path=model.name if plugins.is_import_path(model.name) else None,
                                model_params=dict(model.params),
                                dataset_path=dataset_path,
                                dataset_params=dict(dataset_entry.params),
                                sweep_of=entry_label if axes else None,
                                sweep=swept,
                                validation_split=validation_split,
                                model_init=model_init,
                                loss_reduction=loss_reduction,
                                checkpoint_every=_checkpoint_every(layers),
                                keep_checkpoints=bool(_pick("keep_checkpoints", *layers) or False),
                            ),
                        )


def _checkpoint_every(layers: Sequence[Any]) -> int:
    value = _pick("checkpoint_every", *layers)
    return DEFAULT_CHECKPOINT_EVERY if value is None else int(value)


def _resolved_params(
    entry: OptimizerEntry, dataset: str, family: str | None, point: dict[str, Any], where: str, g: int, d: int
) -> dict[str, Any]:
    """One sweep point's hyperparameters: the registry's defaults updated by it (as given, for a path)."""
    if plugins.is_import_path(entry.name):
        return dict(point)
    needs_rate = names.OPTIMIZER_DEFAULTS[entry.name].get("lr", 0) is None and "lr" not in point
    if needs_rate and family is None:
        raise SpecError(
            [
                f"{where}.params.lr: {entry.name}'s default learning rate is the paper's per dataset "
                f"family, and grids[{g}].datasets[{d}] ({dataset}) has none; set params.lr"
            ]
        )
    return names.resolved_optimizer_params(entry.name, dataset, point)


def expand(suite: Suite) -> list[RunSpec]:
    """Every run of ``suite`` in a deterministic order, each id once.

    A run that two entries describe identically is kept once (grids may overlap on
    purpose, e.g. Figure 3 and Table 1). Two different runs with one id are a
    :class:`SpecError` naming both entries; give one of them a different ``label``.
    """
    runs: dict[str, RunSpec] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for g, grid in enumerate(suite.grids):
        for o, entry in enumerate(grid.optimizers):
            try:
                for where, run in _entry_runs(suite, g, grid, o, entry):
                    if run.run_id not in runs:
                        runs[run.run_id] = run
                        origin[run.run_id] = where
                    elif runs[run.run_id] != run:
                        problems.append(
                            f"{where}: run id '{run.run_id}' is also made by {origin[run.run_id]} "
                            "with different settings; give one of them a distinct label"
                        )
            except SpecError as exc:
                problems.extend(exc.problems)
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    return list(runs.values())


def shard(runs: Sequence[RunSpec], index: int, count: int) -> list[RunSpec]:
    """Shard ``index`` (0-based) of ``count``: every count-th run, starting at ``index``.

    Round-robin over the expansion order keeps shards balanced when neighbouring runs
    cost alike, and the shards partition the grid exactly.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < N")
    return list(runs[index::count])


def select(runs: Sequence[RunSpec], patterns: Sequence[str]) -> list[RunSpec]:
    """The runs whose id matches any of the shell-style ``patterns`` (``*-s1``,
    ``lenet5-bn-mnist-lsr1-b500-s[12]``), in expansion order.

    ``ValueError`` names every pattern that matches no run of the suite, since a typo
    would otherwise train nothing without a word.
    """
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(r.run_id, p) for r in runs)]
    if unmatched:
        raise ValueError(
            "matches no run of this suite: " + ", ".join(repr(p) for p in unmatched)
            + " (see the run ids with `lsr1bench validate SUITE`)"
        )  # fmt: skip
    return [r for r in runs if any(fnmatch.fnmatchcase(r.run_id, p) for p in patterns)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with 0 <= i < N; ``ValueError`` with a clear message otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"expected i/N such as 0/4, got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ValueError(f"N must be >= 1, got {text!r}")
    if index >= count:
        raise ValueError(f"i counts from 0, so it must be < N ({count}); got {text!r}")
    return index, count


def ranks_in_use(suite: Suite) -> list[tuple[str, int]]:
    """``(key path, ranks)`` for every ranks value some run uses, each once, largest first.

    The key path is where the value is set (``ranks``, ``grids[0].ranks`` or
    ``grids[0].optimizers[1].ranks``), for errors that depend on the machine (GPU count).
    """
    found: dict[tuple[str, int], None] = {}
    for g, grid in enumerate(suite.grids):
        for o, entry in enumerate(grid.optimizers):
            layers = (entry, grid, suite)
            path = _where("ranks", (f"grids[{g}].optimizers[{o}]", f"grids[{g}]", ""), *layers)
            for ranks in _pick("ranks", *layers) or [1]:
                found[(path, ranks)] = None
    return sorted(found, key=lambda item: -item[1])
