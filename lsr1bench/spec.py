"""The suite schema: load a YAML suite, validate it once, and say every problem at once.

A suite is a union of grids. Each grid crosses models (each with and/or without batch
norm), datasets, optimizer entries (each with a label and hyperparameters), batch sizes
and seeds. Settings (epochs, batch sizes, seeds, targets, learning-rate schedule, ...)
may be given at the suite's top level, on a grid, or on one optimizer entry; the most
specific one wins. That is how one file holds, say, the paper's Figure 1: first-order
methods at batch size 20 and second-order ones at 400 in the same grid.

Every problem becomes one ``key.path: problem`` line in a :class:`SpecError`; nothing
here imports torch.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lsr1bench.registry import names, plugins, table

# A label and a suite name end up in directory names and run ids.
LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SUITE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_EPOCHS = 20  # section 4.1: "The networks were trained for 20 epochs."
DEVICES_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?(,cuda(:\d+)?)*)$")


class SpecError(Exception):
    """A suite that cannot run, with one ``key.path: problem`` line per problem."""

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{head}{count} {noun}:\n" + "\n".join(f"  {p}" for p in self.problems))


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` when ``word`` looks like a typo of a known name, else ``''``."""
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _problem(subpath: str, message: str) -> PydanticCustomError:
    """An error at ``subpath`` below the validator's own location (see ``_format_errors``)."""
    return PydanticCustomError("lsr1bench", "{message}", {"message": message, "subpath": subpath})


def _problems(problems: list[tuple[str, str]]) -> PydanticCustomError:
    return PydanticCustomError("lsr1bench_many", "{count} problems", {"count": len(problems), "problems": problems})


def _known(mapping: Mapping[str, Any]) -> str:
    return ", ".join(mapping)


def _check_name(value: Any, table: Mapping[str, str], what: str) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("lsr1bench", "{message}", {"message": f"expected a {what} name"})
    if value not in table:
        raise PydanticCustomError(
            "lsr1bench",
            "{message}",
            {"message": f"unknown {what} '{value}'{did_you_mean(value, list(table))}; known: {_known(table)}"},
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LRSchedule(_Strict):
    """Multiply the learning rate by ``gamma`` at each milestone epoch (He et al. 2016)."""

    milestones: list[int] = Field(min_length=1)
    gamma: float = Field(default=0.1, gt=0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(m < 1 for m in milestones):
            raise PydanticCustomError("lsr1bench", "{message}", {"message": "milestones are epochs, each >= 1"})
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise PydanticCustomError("lsr1bench", "{message}", {"message": "milestones must be strictly increasing"})
        return milestones


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (int, float, bool, str)) else value


class Settings(_Strict):
    """Settings shared by the suite, a grid and an optimizer entry; ``None`` inherits."""

    epochs: int | None = Field(default=None, ge=1)
    batch_sizes: list[int] | None = Field(default=None, min_length=1)
    seeds: list[int] | None = Field(default=None, min_length=1)
    repeats: int | None = Field(default=None, ge=1)
    targets: dict[str, list[float]] | None = None  # metric -> thresholds; a list means test_error
    stop_at_targets: bool | None = None
    lr_schedule: LRSchedule | None = None
    weight_decay: float | None = Field(default=None, ge=0)
    train_subset: int | None = Field(default=None, ge=1)
    test_subset: int | None = Field(default=None, ge=1)
    data_root: str | None = Field(default=None, min_length=1)
    ranks: list[int] | None = Field(default=None, min_length=1)
    # hold out this many training examples, evaluated every epoch (val_error, val_loss)
    validation_split: int | None = Field(default=None, ge=1)
    # mean (the paper's objective) or sum: the minibatch's cross-entropy the optimizer sees
    loss_reduction: str | None = None
    # a checkpoint every this many epochs (0: none; a signal still writes one), and whether
    # a completed run keeps its last one; neither changes the results
    checkpoint_every: int | None = Field(default=None, ge=0)
    keep_checkpoints: bool | None = None

    _as_lists = field_validator("batch_sizes", "ranks", mode="before")(classmethod(lambda cls, v: _as_list(v)))

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_form(cls, seeds: Any) -> Any:
        """A list, never one number: ``seeds: 3`` could mean seed 3 or three seeds."""
        if seeds is None or isinstance(seeds, list):
            return seeds
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            raise _problem(
                "",
                f"seeds is a list of seeds; write seeds: [{seeds}] for seed {seeds}, or the range form "
                f"repeats: {max(seeds, 1)} for seeds 0..{max(seeds, 1) - 1}",
            )
        raise _problem(
            "", f"seeds is a list of seeds such as [0, 1, 2], or give the range form repeats: 3 instead; got {seeds!r}"
        )
    _loss_reduction = field_validator("loss_reduction")(
        classmethod(lambda cls, v: v if v is None else _check_name(v, names.LOSS_REDUCTIONS, "loss reduction"))
    )

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is None:
            return None
        problems = [(f"[{i}]", f"batch size must be >= 1, got {s}") for i, s in enumerate(sizes) if s < 1]
        problems += _duplicates(sizes, "batch size")
        if problems:
            raise _problems(problems)
        return sizes

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is None:
            return None
        problems = [(f"[{i}]", f"seed must be >= 0, got {s}") for i, s in enumerate(seeds) if s < 0]
        problems += _duplicates(seeds, "seed")
        if problems:
            raise _problems(problems)
        return seeds

    @field_validator("ranks")
    @classmethod
    def _ranks(cls, ranks: list[int] | None) -> list[int] | None:
        """Data-parallel processes per run (one per GPU, or CPU processes on gloo)."""
        if ranks is None:
            return None
        problems = [(f"[{i}]", f"ranks must be >= 1, got {r}") for i, r in enumerate(ranks) if r < 1]
        problems += _duplicates(ranks, "ranks value")
        if problems:
            raise _problems(problems)
        return ranks

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, targets: Any) -> dict[str, list[float]] | None:
        return None if targets is None else _check_targets(targets)

    @field_validator("repeats")
    @classmethod
    def _seeds_or_repeats(cls, repeats: int | None, info: ValidationInfo) -> int | None:
        if repeats is not None and info.data.get("seeds") is not None:
            raise _problem("", "give either seeds or repeats, not both")
        return repeats


_TARGETS_SHAPE = (
    "targets is a list of test errors in % or a mapping of metric to thresholds "
    f"({', '.join(names.TARGET_METRICS)})"
)


def _check_targets(targets: Any) -> dict[str, list[float]]:
    """``targets:`` as ``{metric: [thresholds]}``; the list form (or one number) is test error."""
    if isinstance(targets, (list, tuple)) or _number(targets):
        by_metric, prefix = {names.DEFAULT_TARGET_METRIC: _as_list(targets)}, ""
    elif isinstance(targets, dict):
        if not targets:
            raise _problem("", f"{_TARGETS_SHAPE}; got an empty mapping")
        by_metric, prefix = dict(targets), "."
    else:
        raise _problem("", f"{_TARGETS_SHAPE}, got {targets!r}")
    problems: list[tuple[str, str]] = []
    out: dict[str, list[float]] = {}
    for metric, values in by_metric.items():
        where = f"{prefix}{metric}" if prefix else ""
        if metric not in names.TARGET_METRICS:
            known = list(names.TARGET_METRICS)
            hint = did_you_mean(str(metric), known)
            problems.append((where, f"unknown target metric{hint}; known: {', '.join(known)}"))
            continue
        values = _as_list(values)
        if not isinstance(values, (list, tuple)):
            problems.append((where, f"expected a list of thresholds, got {values!r}"))
            continue
        kept: list[float] = []
        for i, value in enumerate(values):
            problem = _target_problem(metric, value)
            if problem:
                problems.append((f"{where}[{i}]", problem))
            elif float(value) in kept:
                problems.append((f"{where}[{i}]", f"duplicate target {float(value):g}"))
            else:
                kept.append(float(value))
        out[metric] = kept
    if problems:
        raise _problems(problems)
    return {metric: out[metric] for metric in names.TARGET_METRICS if metric in out}


def _target_problem(metric: str, value: Any) -> str | None:
    if isinstance(value, str) and _looks_like_float(value):
        return f"a target is a finite number, got the text {value!r} (write it without quotes)"
    if not _number(value) or math.isnan(value) or math.isinf(value):
        return f"a target is a finite number, got {value!r}"
    if metric == "test_error" and not 0 < value < 100:
        return f"a target test error is a percentage in (0, 100), got {float(value)}"
    if metric != "test_error" and value <= 0:
        return f"a {metric.replace('_', ' ')} target must be > 0 (a loss falls below it), got {float(value)}"
    return None


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _duplicates(values: Sequence[Any], what: str) -> list[tuple[str, str]]:
    seen: set[Any] = set()
    out = []
    for i, v in enumerate(values):
        if v in seen:
            out.append((f"[{i}]", f"duplicate {what} {v}"))
        seen.add(v)
    return out


def _check_label(label: str | None) -> str | None:
    if label is not None and not LABEL_PATTERN.match(label):
        raise PydanticCustomError(
            "lsr1bench",
            "{message}",
            {
                "message": f"label {label!r} must be lower-case letters, digits, '.', '_' or '-' "
                "(it becomes part of the run id)"
            },
        )
    return label


def _entry_label(name: str, label: str | None) -> str:
    if label is not None:
        return label
    if plugins.is_import_path(name):
        return plugins.default_label(name) or name
    return name


def _check_name_or_path(value: Any, table: Mapping[str, str], what: str) -> str:
    """A registered name, or an import path (imported and checked by the entry's own validator)."""
    if plugins.is_import_path(value):
        return value
    return _check_name(value, table, what)


def _plugin_checks(kind: str, name: str, label: str | None, check: Any) -> None:
    """Run ``check()`` -> problems for a plugin entry; raise them all.

    Without a ``label`` the entry is named by its factory or class (``plugins.default_label``);
    two entries named alike are caught where their run ids meet (``grid.expand``).
    """
    problems: list[tuple[str, str]] = []
    if label is None and plugins.default_label(name) is None:
        problems.append(("label", f"{kind} named {name!r} needs a label: its name makes none"))
    try:
        problems += [(f"params{sub}" if sub.startswith(".") else (sub or "name"), msg) for sub, msg in check()]
    except plugins.PluginError as exc:
        problems.append(("name", str(exc)))
    if problems:
        raise _problems(problems)


class ModelEntry(_Strict):
    """A model, trained with and/or without batch norm (``batch_norm: [true, false]``).

    ``name`` may be an import path to a factory returning an ``nn.Module`` (see
    :mod:`lsr1bench.registry.plugins`); then ``label`` is required and ``params`` go to it.
    ``init`` (lenet5 only): ``appendix`` (the default), ``torch`` or ``fc-torch``
    (``names.MODEL_INITS``).
    """

    name: str
    batch_norm: list[bool] | None = Field(default=None, min_length=1)
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    init: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name_or_path(v, names.MODELS, "model")))
    _label = field_validator("label")(classmethod(lambda cls, v: _check_label(v)))
    _init = field_validator("init")(
        classmethod(lambda cls, v: v if v is None else _check_name(v, names.MODEL_INITS, "model init"))
    )

    @model_validator(mode="after")
    def _init_takers(self) -> ModelEntry:
        if self.init is not None and self.name not in names.MODELS_WITH_INIT:
            takers = ", ".join(sorted(names.MODELS_WITH_INIT))
            raise _problem("init", f"init is for {takers}; {self.name} has its own initialisation only")
        return self

    @model_validator(mode="after")
    def _plugin(self) -> ModelEntry:
        if not plugins.is_import_path(self.name):
            if self.params or self.label is not None:
                key = "params" if self.params else "label"
                raise _problem(key, f"{key} is for a model named by import path; {self.name} takes none")
            return self

        def check() -> list[tuple[str, str]]:
            problems = plugins.check_factory(self.name, self.params, "model", plugins.MODEL_INJECTED)
            if self.batch_norm and not plugins.takes_keyword(self.name, "batch_norm"):
                problems.append(("batch_norm", f"{self.name} takes no batch_norm keyword, so batch_norm cannot be set"))
            return problems

        _plugin_checks("a model", self.name, self.label, check)
        return self

    @property
    def run_name(self) -> str:
        """How run ids and reports name the model: its label, else (a path) its factory's name, else its name."""
        return _entry_label(self.name, self.label)

    @field_validator("batch_norm", mode="before")
    @classmethod
    def _bool_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, bool) else value

    @field_validator("batch_norm")
    @classmethod
    def _resnet_has_batch_norm(cls, values: list[bool] | None, info: ValidationInfo) -> Any:
        if values is not None:
            problems = _duplicates(values, "batch_norm value")
            name = info.data.get("name")
            if name in names.ALWAYS_BATCH_NORM and False in values:
                problems.append(("", f"{name} always uses batch norm ({names.MODELS[name].split(',')[0]})"))
            if problems:
                raise _problems(problems)
        return values

    def batch_norm_values(self) -> list[bool]:
        if self.batch_norm is not None:
            return list(self.batch_norm)
        return [self.name in names.ALWAYS_BATCH_NORM]


class DatasetEntry(_Strict):
    """A dataset: a registered name, a torchvision class name, or a factory's import path."""

    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            cls._name(data)  # a bare name's problem belongs to the list item, not to '.name'
            return {"name": data}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if plugins.is_import_path(name) or names.known_dataset(name):
            return name
        known = [*names.DATASETS, *names.TORCHVISION_DATASETS]
        raise _problem(
            "",
            f"unknown dataset '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}, "
            "or an import path to a factory (module:function)",
        )

    _label = field_validator("label")(classmethod(lambda cls, v: _check_label(v)))

    @model_validator(mode="after")
    def _plugin(self) -> DatasetEntry:
        if not plugins.is_import_path(self.name):
            if self.params or self.label is not None:
                key = "params" if self.params else "label"
                raise _problem(key, f"{key} is for a dataset named by import path; {self.name} takes none")
            return self

        def check() -> list[tuple[str, str]]:
            problems = plugins.check_factory(self.name, self.params, "dataset")
            plugins.declared_weight_decay(self.name)
            return problems

        _plugin_checks("a dataset", self.name, self.label, check)
        return self

    @property
    def run_name(self) -> str:
        """How run ids and reports name the dataset: its label, else (a path) its factory's name, else its name."""
        return _entry_label(self.name, self.label)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class OptimizerEntry(Settings):
    """An optimizer setting: registry name, report label, hyperparameters, own settings."""

    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    _name = field_validator("name")(
        classmethod(lambda cls, v: _check_name_or_path(v, names.OPTIMIZERS, "optimizer"))
    )
    _label = field_validator("label")(classmethod(lambda cls, v: _check_label(v)))

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None or plugins.is_import_path(name):
            return params  # an unknown name is reported already; a path is checked after
        layout_options = names.LAYOUT_OPTIONS.get(name, {})
        known = [*names.OPTIMIZER_DEFAULTS[name], *layout_options]
        problems = []
        for key, value in params.items():
            if key == "weight_decay" and key not in known:
                problems.append(
                    (
                        f".{key}",
                        "weight_decay is not an optimizer hyperparameter: it is the L2 term of "
                        "the objective, shared by every optimizer; set weight_decay on the "
                        "suite, the grid or this entry instead",
                    )
                )
                continue
            if key not in known:
                problems.append(
                    (
                        f".{key}",
                        f"unknown hyperparameter for {name}{did_you_mean(key, list(known))}; "
                        f"known: {', '.join(known) or '(none)'} (lsr1bench list optimizers shows them)",
                    )
                )
                continue
            if key not in layout_options and _is_sweep(key, value, BUILTIN_LIST_VALUED):
                problems += [(f".{key}{sub}", msg) for sub, msg in _sweep_problems(key, value)]
                checked = [(f".{key}[{i}]", v) for i, v in enumerate(value)]
            else:
                checked = [(f".{key}", value)]
            for where, one in checked:
                problems += [(where, msg) for _, msg in table.check_optimizer_params(name, {key: one}, rules=False)]
        if not problems:  # each value is valid: check the rules between them at every sweep point
            axes = sweep_axes(name, params)
            fixed = {k: v for k, v in params.items() if k not in dict(axes)}
            for point in plugins.sweep_points(axes, fixed):
                problems += [(f".{key}", msg) for key, msg in table.check_optimizer_params(name, point)]
            problems = list(dict.fromkeys(problems))
        if problems:
            raise _problems(problems)
        return params

    @model_validator(mode="after")
    def _package(self, info: ValidationInfo) -> OptimizerEntry:
        """A peer whose optional package does not import fails here, with the install command
        (unless the suite is read only for its run list: ``load_suite(..., check_packages=False)``)."""
        if not (info.context or {}).get("check_packages", True):
            return self
        if not plugins.is_import_path(self.name) and self.name in names.OPTIMIZERS:
            problem = table.missing_package(self.name)
            if problem is not None:
                raise _problem("name", problem)
        return self

    @model_validator(mode="after")
    def _plugin(self) -> OptimizerEntry:
        if not plugins.is_import_path(self.name):
            return self

        def check() -> list[tuple[str, str]]:
            cls = plugins.optimizer_class(self.name)
            list_valued = plugins.list_valued(cls, self.name)
            problems = [
                (f".{key}{sub}", msg)
                for key, value in self.params.items()
                if _is_sweep(key, value, list_valued)
                for sub, msg in _sweep_problems(key, value)
            ]
            axes = sweep_axes(self.name, self.params)
            fixed = {k: v for k, v in self.params.items() if k not in dict(axes)}
            return problems or plugins.check_optimizer(self.name, plugins.sweep_points(axes, fixed))

        _plugin_checks("an optimizer", self.name, self.label, check)
        return self

    @model_validator(mode="after")
    def _schedule_needs_lr(self) -> OptimizerEntry:
        if self.lr_schedule is not None and not has_lr(self.name):
            raise _problem("lr_schedule", f"{self.name} has no learning rate to schedule")
        return self

    @property
    def resolved_label(self) -> str:
        """Its label, else (a path) the class name in lower case (``torch.optim.RMSprop``: rmsprop), else its name."""
        return _entry_label(self.name, self.label)


# Built-in hyperparameters whose one value is a list (a list of lists sweeps them).
BUILTIN_LIST_VALUED = frozenset({"betas"})


def _is_sweep(key: str, value: Any, list_valued: frozenset[str]) -> bool:
    """A list sweeps ``key``, unless ``key`` takes a list: then only a list of lists does."""
    if not isinstance(value, list):
        return False
    if key in list_valued:
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def _sweep_problems(key: str, values: list[Any]) -> list[tuple[str, str]]:
    if not values:
        return [("", f"an empty list sweeps {key} over nothing; give at least one value")]
    return [
        (f"[{i}]", f"a sweep value is a number, text or true/false, got {v!r}")
        for i, v in enumerate(values)
        if isinstance(v, dict)
    ] + _duplicates([repr(v) for v in values], f"{key} value")


def sweep_axes(name: str, params: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """The swept hyperparameters of an optimizer entry, ``[(key, values), ...]`` in file order."""
    if plugins.is_import_path(name):
        list_valued = plugins.list_valued(plugins.optimizer_class(name), name)
    else:
        list_valued = BUILTIN_LIST_VALUED
    return [(key, list(value)) for key, value in params.items() if _is_sweep(key, value, list_valued)]


def has_lr(name: str) -> bool:
    """Whether the optimizer ``name`` (registered or a path) has a learning rate to schedule."""
    if plugins.is_import_path(name):
        try:
            cls = plugins.optimizer_class(name)
            accepted, _ = plugins.optimizer_keywords(cls, name)
        except plugins.PluginError:
            return True  # the bad path is reported on its own
        return "lr" in accepted
    return "lr" in names.OPTIMIZER_DEFAULTS.get(name, {"lr": None})


class Grid(Settings):
    """One grid: every model x batch norm x dataset x optimizer x batch size x seed."""

    name: str | None = None
    models: list[ModelEntry] = Field(min_length=1)
    datasets: list[DatasetEntry] = Field(min_length=1)
    optimizers: list[OptimizerEntry] = Field(min_length=1)

    @field_validator("models", "datasets", "optimizers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, datasets: list[DatasetEntry]) -> list[DatasetEntry]:
        problems = _duplicates([d.run_name for d in datasets], "dataset")
        if problems:
            raise _problems(problems)
        return datasets

    @model_validator(mode="after")
    def _schedule_needs_lr(self) -> Grid:
        if self.lr_schedule is None:
            return self
        problems = [
            (
                f"optimizers[{i}]",
                f"{entry.name} has no learning rate, so the grid's lr_schedule cannot apply; "
                "set lr_schedule on the optimizer entries that have one",
            )
            for i, entry in enumerate(self.optimizers)
            if entry.lr_schedule is None and not has_lr(entry.name)
        ]
        if problems:
            raise _problems(problems)
        return self


class Suite(Settings):
    """A whole suite: the union of its grids, plus suite-wide settings and device options."""

    name: str | None = None
    description: str | None = None
    devices: str | None = None
    jobs: int | None = Field(default=None, ge=1)
    grids: list[Grid] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not SUITE_NAME_PATTERN.match(name):
            raise PydanticCustomError(
                "lsr1bench",
                "{message}",
                {"message": f"suite name {name!r} may hold only letters, digits, '.', '_' or '-'"},
            )
        return name

    @field_validator("devices")
    @classmethod
    def _devices(cls, devices: str | None) -> str | None:
        if devices is not None:
            check_devices(devices)
        return devices

    @model_validator(mode="after")
    def _schedule_needs_lr(self) -> Suite:
        if self.lr_schedule is None:
            return self
        problems = [
            (
                f"grids[{g}].optimizers[{i}]",
                f"{entry.name} has no learning rate, so the suite's lr_schedule cannot apply; "
                "set lr_schedule on the optimizer entries that have one",
            )
            for g, grid in enumerate(self.grids)
            if grid.lr_schedule is None
            for i, entry in enumerate(grid.optimizers)
            if entry.lr_schedule is None and not has_lr(entry.name)
        ]
        if problems:
            raise _problems(problems)
        return self


def check_devices(devices: str) -> str:
    """Validate ``auto``, ``cpu`` or ``cuda:0,cuda:1,...``; raise a PydanticCustomError."""
    if not DEVICES_PATTERN.match(devices.replace(" ", "")):
        raise PydanticCustomError(
            "lsr1bench",
            "{message}",
            {"message": f"devices must be 'auto', 'cpu' or a list like 'cuda:0,cuda:1', got {devices!r}"},
        )
    return devices


# ---------------------------------------------------------------------------- loading


def _format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("["):
            out += part
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _join(path: str, subpath: str) -> str:
    if not subpath:
        return path
    if path == "(top level)":
        return subpath.lstrip(".")
    return path + subpath if subpath[0] in "[." else f"{path}.{subpath}"


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The schema model at ``loc`` (for suggesting the keys it knows)."""
    model: Any = Suite
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        for arg in list(candidates):
            candidates.extend(getattr(arg, "__args__", ()))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _format_errors(error: ValidationError) -> list[str]:
    lines: list[str] = []
    for e in error.errors(include_url=False):
        loc = list(e["loc"])
        path = _format_loc(loc)
        ctx = e.get("ctx") or {}
        kind = e["type"]
        if kind == "lsr1bench_many":
            lines.extend(f"{_join(path, sub)}: {msg}" for sub, msg in ctx["problems"])
        elif kind == "lsr1bench":
            lines.append(f"{_join(path, ctx.get('subpath', ''))}: {ctx['message']}")
        elif kind == "extra_forbidden":
            key = str(loc[-1])
            owner = _model_at(loc[:-1])
            known = [f for f in owner.model_fields] if owner else []
            hint = did_you_mean(key, known)
            listing = f"; known keys: {', '.join(known)}" if known else ""
            lines.append(f"{path}: unknown key{hint}{listing}")
        elif kind == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            lines.append(f"{path}: {e['msg'][0].lower()}{e['msg'][1:]} (got {shown})")
    return lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first given on line {seen[key]})",
                key_node.start_mark,
            )
        try:
            seen[key] = line
        except TypeError:
            pass
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# YAML 1.1 (PyYAML) reads a float only with a dot: ``1.0e-3`` is a number, ``1e-3`` is text.
# YAML 1.2 and every ML config reads ``1e-3``, ``5E-4``, ``-2e+1`` as numbers, so the suite
# loader resolves scientific notation without a dot as a float too. A resolver (not a
# conversion afterwards) keeps a quoted '1e-3' text, as the user wrote it. The pattern is
# appended after PyYAML's own, which already claim every form with a dot.
SCIENTIFIC_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$")
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", SCIENTIFIC_FLOAT, list("-+0123456789."))


def parse_suite(text: str, source: str = "<suite>", default_name: str = "suite", check_packages: bool = True) -> Suite:
    """Validate suite YAML ``text``; raise :class:`SpecError` listing every problem.

    ``check_packages=False`` skips only the check that the peers' optional packages import:
    for tools that need the runs a suite defines (its run ids), not to train them."""
    if not text.strip():
        raise SpecError(["(top level): the suite file is empty; it needs at least 'grids:'"], source)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = exc.problem or str(exc)
        context = f" ({exc.context})" if exc.context else ""
        raise SpecError([f"(yaml) {where}: broken YAML: {what}{context}"], source) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"(yaml): broken YAML: {exc}"], source) from None
    if data is None:
        raise SpecError(["(top level): the suite file is empty; it needs at least 'grids:'"], source)
    if not isinstance(data, dict):
        raise SpecError([f"(top level): expected a mapping with 'grids:', got a {type(data).__name__}"], source)
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise SpecError([f"(top level): keys must be strings, got {bad_keys[0]!r}"], source)
    try:
        suite = Suite.model_validate(data, context={"check_packages": check_packages})
    except ValidationError as exc:
        raise SpecError(_format_errors(exc), source) from None
    if suite.name is None:
        if not SUITE_NAME_PATTERN.match(default_name):
            raise SpecError([f"name: the file name {default_name!r} cannot name the suite; set 'name:'"], source)
        suite = suite.model_copy(update={"name": default_name})
    return suite


def load_suite(path: str | Path, check_packages: bool = True) -> Suite:
    """Read and validate the suite at ``path``; raise :class:`SpecError` on any problem
    (``check_packages``: see :func:`parse_suite`)."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise SpecError([f"(file): no such file: {path}"], source)
    if path.is_dir():
        raise SpecError([f"(file): {path} is a directory, not a suite file"], source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"(file): cannot read {path}: {exc}"], source) from None
    return parse_suite(text, source=source, default_name=path.stem, check_packages=check_packages)
