"""The names the tool knows and the paper's defaults for each, without importing torch.

The suite schema validates against these tables, and the torch-side factories in
``models.py``, ``datasets.py`` and ``optimizers.py`` build from the same names, so a
name that validates is a name that runs.

Defaults come from the paper's appendix ("Network Architectures and Hyperparameter
Settings") and section 4: first-order learning rate 0.003 on MNIST and 0.01 on
CIFAR-10, momentum 0.9 where needed, AdaDelta with no parameters, Adam with the
defaults of Kingma & Ba, L-SR1 memory 5 with radius factors 0.5 / 2.0, L-BFGS memory 5
with "forgetting" every 5 steps. L2 regularisation 1e-4 (MNIST) and 1e-3 (CIFAR-10).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lsr1bench.registry.table import DATASET_TABLE, MODEL_TABLE, OPTIMIZER_TABLE

MODELS: Mapping[str, str] = MappingProxyType({name: m.description for name, m in MODEL_TABLE.items()})

# How a model's weights start (a suite's ``models: [{name: lenet5, init: ...}]``). The
# appendix states N(0, 0.1^2) for LeNet-5's conv and output layers and nothing for its
# FC-500 layer; these readings let a suite test what the unstated choices do.
MODEL_INITS: Mapping[str, str] = MappingProxyType(
    {
        "appendix": "the model's documented initialisation (lenet5: N(0, 0.1^2) weights, zero biases, every layer)",
        "torch": "PyTorch's default initialisation for every layer (kaiming_uniform a=sqrt(5), fan-in bias)",
        "fc-torch": "the appendix for the conv and output layers, PyTorch's default for the FC-500 layer",
    }
)
DEFAULT_MODEL_INIT = "appendix"
# the models that take an init other than their documented one
MODELS_WITH_INIT = frozenset(name for name, m in MODEL_TABLE.items() if len(m.inits) > 1)
# the models that are built with batch norm only (ResNet-20, He et al. 2016)
ALWAYS_BATCH_NORM = frozenset(name for name, m in MODEL_TABLE.items() if m.batch_norm == "always")

# dataset name -> family; the family picks the paper's L2 coefficient and learning rates.
DATASETS: Mapping[str, str] = MappingProxyType(
    {name: d.family for name, d in DATASET_TABLE.items() if d.source != "torchvision class"}
)

DATASET_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {name: d.description for name, d in DATASET_TABLE.items() if name in DATASETS}
)

# torchvision classification datasets by class name (``torchvision.datasets.<name>``, with
# ``train=True/False`` and ``download=True``), each with the family of the paper's dataset
# it resembles (which picks the default L2 coefficient and first-order learning rate).
TORCHVISION_DATASETS: Mapping[str, str] = MappingProxyType(
    {name: d.family for name, d in DATASET_TABLE.items() if d.source == "torchvision class"}
)

WEIGHT_DECAY: Mapping[str, float] = MappingProxyType({"mnist": 1e-4, "cifar10": 1e-3})

FIRST_ORDER_LR: Mapping[str, float] = MappingProxyType({"mnist": 0.003, "cifar10": 0.01})

# The optimizers, their hyperparameters, defaults, ranges and flags live in table.py (one
# record each); these are views of it. ``None`` for "lr" means "the dataset family's
# first-order rate" (FIRST_ORDER_LR).
SECOND_ORDER = frozenset(name for name, info in OPTIMIZER_TABLE.items() if info.second_order)

OPTIMIZERS: Mapping[str, str] = MappingProxyType({name: info.description for name, info in OPTIMIZER_TABLE.items()})

OPTIMIZER_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {name: MappingProxyType(info.defaults()) for name, info in OPTIMIZER_TABLE.items()}
)

# Where a data-parallel run keeps an optimizer's state: accepted in a suite's ``params`` but
# not part of the resolved defaults, so a suite that never sets them keeps its run specs.
# shard_memory: each rank holds 1/P of L-SR1's curvature memory (false: every rank all of it).
LAYOUT_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        name: MappingProxyType({key: s.default for key, s in info.layout.items()})
        for name, info in OPTIMIZER_TABLE.items()
        if info.layout
    }
)


def family(dataset: str) -> str | None:
    """The dataset family (``mnist`` or ``cifar10``) of a known dataset name; None for a plugin."""
    if dataset in DATASETS:
        return DATASETS[dataset]
    return TORCHVISION_DATASETS.get(dataset)


def known_dataset(dataset: str) -> bool:
    """A registered name or a torchvision class this tool loads by name."""
    return dataset in DATASETS or dataset in TORCHVISION_DATASETS


def resolved_optimizer_params(
    optimizer: str, dataset: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The paper's defaults for ``optimizer`` on ``dataset``'s family, updated by ``overrides``.

    Unknown override keys are not checked here; the suite schema rejects them first.
    """
    params = dict(OPTIMIZER_DEFAULTS[optimizer])
    if "lr" in params and params["lr"] is None and not (overrides and "lr" in overrides):
        params["lr"] = FIRST_ORDER_LR[family(dataset)]
    params.update(overrides or {})
    return params


# How the cross-entropy of a minibatch enters the objective the optimizer sees; the L2 term
# is added once either way, and the recorded losses are per-example means either way.
LOSS_REDUCTIONS: Mapping[str, str] = MappingProxyType(
    {
        "mean": "cross-entropy averaged over the minibatch + L2 (the paper's objective)",
        "sum": "cross-entropy summed over the minibatch + L2 (a first-order step b times larger)",
    }
)
DEFAULT_LOSS_REDUCTION = "mean"

# Recorded metrics a suite may set targets on; each is reached at the first epoch >= 1
# whose value falls below the threshold. The list form of ``targets:`` means test_error.
TARGET_METRICS: Mapping[str, str] = MappingProxyType(
    {
        "test_error": "test error in % (model.eval() on the test set)",
        "test_loss": "mean test cross-entropy (model.eval())",
        "train_loss": "training objective averaged over the epoch's minibatches (cross-entropy + L2)",
    }
)
DEFAULT_TARGET_METRIC = "test_error"
