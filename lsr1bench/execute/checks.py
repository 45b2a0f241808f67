"""Plugins checked before any training: build each model and dataset once, run two examples.

A suite's import paths are resolved and their signatures checked when it is validated
(:mod:`lsr1bench.spec`), but whether a factory *works* shows only when it is called: a
dataset factory that raises, a model whose output has one logit too many. Those would
otherwise fail every run (``IndexError: Target 9 is out of bounds``) or, worse, train
silently on the wrong problem. :func:`check_builds` calls each distinct plugin dataset
factory once, builds each distinct model that involves a plugin once on its dataset's
shape, runs one forward pass on two training examples in eval mode, and checks that the
output is a ``(2, num_classes)`` tensor. Every problem names the suite key it comes from
and quotes the factory's own message.

Registered models on registered datasets are the tool's own and are not rebuilt here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lsr1bench.grid import RunSpec

EXAMPLES = 2  # two, not one: batch norm in train mode needs more than one value per channel


@dataclass
class BuildReport:
    problems: list[str] = field(default_factory=list)  # each "key.path: message"
    notes: list[str] = field(default_factory=list)  # what could not be checked here, and why
    built_models: int = 0
    built_datasets: int = 0


def key_paths(suite: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Where each model and dataset (by the name runs use) is first written in the suite."""
    models: dict[str, str] = {}
    datasets: dict[str, str] = {}
    for g, grid in enumerate(suite.grids):
        for m, model in enumerate(grid.models):
            models.setdefault(model.run_name, f"grids[{g}].models[{m}]")
        for d, dataset in enumerate(grid.datasets):
            datasets.setdefault(dataset.run_name, f"grids[{g}].datasets[{d}]")
    return models, datasets


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def check_builds(runs: Sequence[RunSpec], suite: Any, download: bool) -> BuildReport:
    """Build what the runs' plugins produce, once each; problems as ``key.path: message``.

    ``download``: whether a registered dataset a plugin model needs may be downloaded
    (``run`` does; ``validate`` only uses files already on disk, and says so otherwise).
    """
    import torch

    from lsr1bench import runner
    from lsr1bench.registry.datasets import DatasetUnavailable

    model_keys, dataset_keys = key_paths(suite)
    report = BuildReport()
    data: dict[tuple[Any, ...], Any] = {}  # data key -> DeviceData, or None when it failed
    built: set[tuple[Any, ...]] = set()
    for spec in runs:
        if not (spec.model_path or spec.dataset_path):
            continue
        data_key = runner.data_key(spec)
        dataset_where = f"{dataset_keys.get(spec.dataset, 'datasets')} ({spec.dataset})"
        if data_key not in data:
            data[data_key] = None
            try:
                if spec.dataset_path or download:
                    data[data_key] = runner.load_data(spec, "cpu")
                else:
                    data[data_key] = _on_disk(spec)
                report.built_datasets += 1 if spec.dataset_path else 0
            except DatasetUnavailable as exc:
                report.notes.append(f"{dataset_where}: not checked with its models here: {exc}")
            except Exception as exc:  # noqa: BLE001 - the factory's own failure, quoted
                what = f"dataset factory '{spec.dataset_path}'" if spec.dataset_path else f"dataset {spec.dataset}"
                report.problems.append(f"{dataset_where}: {what} raised {_message(exc)}")
        found = data[data_key]
        if found is None:
            continue
        model_key = (spec.model, spec.model_path, repr(sorted(spec.model_params.items())), spec.batch_norm,
                     spec.model_init, data_key)  # fmt: skip
        if model_key in built:
            continue
        built.add(model_key)
        model_where = f"{model_keys.get(spec.model, 'models')} ({spec.model})"
        problem = _check_model(spec, found, torch)
        report.built_models += 1
        if problem is not None:
            report.problems.append(f"{model_where}: {problem}")
    return report


def _on_disk(spec: RunSpec) -> Any:
    """A registered dataset from the files already on disk (no download), as the runner holds it."""
    from lsr1bench import runner
    from lsr1bench.registry.datasets import load_dataset

    pair = load_dataset(spec.dataset, root=spec.data_root, train_subset=spec.train_subset,
                        test_subset=spec.test_subset, download=False, seed=0)  # fmt: skip
    return runner.DeviceData(
        train_x=pair.train_x, train_y=pair.train_y, test_x=pair.test_x, test_y=pair.test_y,
        num_classes=pair.num_classes, input_shape=tuple(pair.input_shape), description=pair.description,
    )  # fmt: skip


def _check_model(spec: RunSpec, data: Any, torch: Any) -> str | None:
    """None if the model builds and maps two examples to (2, num_classes); else what is wrong."""
    from lsr1bench import runner

    what = f"model factory '{spec.model_path}'" if spec.model_path else f"model {spec.model}"
    try:
        torch.manual_seed(spec.seed)
        model = runner._build_model(spec, data, torch.device("cpu"))
    except Exception as exc:  # noqa: BLE001
        return f"{what} raised {_message(exc)}"
    examples = data.train_x[:EXAMPLES]
    model.eval()
    try:
        with torch.no_grad():
            output = model(examples)
    except Exception as exc:  # noqa: BLE001
        return (
            f"{what}: the forward pass on {len(examples)} examples of {spec.dataset} "
            f"(shape {tuple(examples.shape)}) raised {_message(exc)}"
        )
    expected = (len(examples), data.num_classes)
    if not isinstance(output, torch.Tensor):
        return f"{what}: the forward pass returned {type(output).__name__}, not a tensor of logits {expected}"
    if tuple(output.shape) != expected:
        return (
            f"{what}: the forward pass on {len(examples)} examples of {spec.dataset} returned shape "
            f"{tuple(output.shape)}; expected {expected}: one logit per class ({data.num_classes} classes)"
        )
    return None
