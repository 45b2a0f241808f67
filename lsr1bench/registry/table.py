"""One record per optimizer, model and dataset the tool knows by name; torch-free.

Each optimizer record holds the class it builds, the hyperparameters a suite may set with
their defaults and valid ranges (:class:`lsr1bench.optim.settings.Setting`), and flags:
whether its step needs a closure, whether it is second-order. The suite schema
(``spec.py``), the factories (``optimizers.py``) and ``lsr1bench list`` all read these
records, so they cannot disagree. L-SR1's rows are LSR1's own table
(``lsr1bench/optim/settings.py``), which its constructor checks against.

Defaults come from the paper's appendix and section 4 (see ``names.py``); ranges are the
torch constructors' where torch checks, narrowed where a value is legal but meaningless
for a benchmark (a learning rate of 0; an epsilon of 0, which can divide by zero).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lsr1bench.optim.settings import LSR1_RULES, LSR1_SETTINGS, Setting

__all__ = [
    "OptimizerInfo",
    "ModelInfo",
    "DatasetInfo",
    "OPTIMIZER_TABLE",
    "MODEL_TABLE",
    "DATASET_TABLE",
    "optimizer_info",
    "check_optimizer_params",
    "PROTOCOLS",
    "PEERS_INSTALL",
    "missing_package",
]

# How the training loop drives an optimizer's step on one minibatch (``OptimizerInfo.protocol``).
# The loop's closure always accepts ``backward`` (default True), so any optimizer may call
# ``closure(backward=False)``; the protocol says which cost columns its calls land in.
PROTOCOLS: Mapping[str, str] = MappingProxyType(
    {
        "step": "the closure runs once (forward + backward), then step() with no closure",
        "closure": "step(closure): the closure (forward + backward, one minibatch) as often as it asks",
        "closure-backward": "step(closure): closure(backward=False) evaluates the loss only "
        "(forward, no gradient, .grad untouched), counted in loss_evals, not grad_evals",
        "create-graph": "step(closure): backward(create_graph=True), so the step can take "
        "Hessian-vector products; each one is counted in hvp_evals",
    }
)

# What a user runs when an entry's package is missing (the optional extra of pyproject.toml).
PEERS_INSTALL = 'pip install -e ".[peers]"'

# The learning rate of the first-order methods: ``None`` resolves to the dataset family's
# rate (names.FIRST_ORDER_LR: 0.003 on MNIST, 0.01 on CIFAR-10, the paper's section 4).
FAMILY_LR = "the dataset family's first-order rate (section 4)"


def _yaml(value: Any) -> str:
    """A value as a suite writes it: null, true, 'text', 0.5."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


@dataclass(frozen=True)
class OptimizerInfo:
    """What the tool knows about one registered optimizer.

    ``cls``: the import path of the class built (``torch.optim.Adam``); ``fixed``: keywords
    it is always built with (``lsr1-ls`` is LSR1 with ``method='line_search'``);
    ``settings``: the hyperparameters a suite may set, in order; ``layout``: data-parallel
    options accepted in ``params`` but kept out of the run's resolved hyperparameters;
    ``rules``: ``(smaller, larger)`` pairs of settings.
    """

    name: str
    description: str
    cls: str
    settings: Mapping[str, Setting]
    needs_closure: bool
    second_order: bool
    fixed: Mapping[str, Any] = field(default_factory=dict)
    layout: Mapping[str, Setting] = field(default_factory=dict)
    rules: tuple[tuple[str, str], ...] = ()
    # how its step is driven (a key of PROTOCOLS); "" derives it from needs_closure
    protocol: str = ""
    # modules that must import for it to build (an optional extra); "" none
    requires: tuple[str, ...] = ()
    # extra settings kept per HVP: ``hvps_per_update`` Hessian-vector products every
    # ``hvp_period`` steps (AdaHessian's num_samples and update_period, fixed here)
    hvps_per_update: int = 0
    hvp_period: int = 1

    def __post_init__(self) -> None:
        if not self.protocol:
            object.__setattr__(self, "protocol", "closure" if self.needs_closure else "step")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"{self.name}: protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")

    def defaults(self) -> dict[str, Any]:
        return {key: s.default for key, s in self.settings.items()}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    inits: tuple[str, ...] = ("appendix",)  # the first is the default
    batch_norm: str = "optional"  # "optional" (default off) or "always"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    family: str  # mnist or cifar10: picks the paper's L2 coefficient and first-order rate
    # where it comes from: "torchvision" (a loader here), "torchvision class" (loaded by class
    # name, torchvision.datasets.<name>), "package" (shipped inside), "generated"
    source: str


def _lsr1(*keys: str) -> Mapping[str, Setting]:
    return MappingProxyType({key: LSR1_SETTINGS[key] for key in keys})


def _lr(default: float | None, note: str = "learning rate") -> Setting:
    return Setting("float", default, note, low=0.0, low_open=True)


_EPS = Setting("float", 1e-8, "term added to the denominator", low=0.0, low_open=True)
_LSR1_LAYOUT = MappingProxyType({"shard_memory": LSR1_SETTINGS["shard_memory"]})

_OPTIMIZERS = (
    OptimizerInfo(
        "lsr1",
        "L-SR1 with a trust region (the paper's Algorithm 1)",
        "lsr1bench.optim.LSR1",
        _lsr1(
            "memory", "gamma", "initial_radius", "eta", "skip_tol", "radius_increase", "radius_decrease",
            "increase_threshold", "decrease_threshold", "boundary_fraction",
        ),
        needs_closure=True,
        second_order=True,
        fixed=MappingProxyType({"method": "trust_region"}),
        layout=_LSR1_LAYOUT,
        rules=tuple(r for r in LSR1_RULES if r[0] == "decrease_threshold"),
    ),
    OptimizerInfo(
        "lsr1-ls",
        "L-SR1 with a line search (the paper's Algorithm 2)",
        "lsr1bench.optim.LSR1",
        _lsr1("memory", "gamma", "skip_tol"),
        needs_closure=True,
        second_order=True,
        fixed=MappingProxyType({"method": "line_search"}),
        layout=_LSR1_LAYOUT,
    ),
    OptimizerInfo(
        "lbfgs",
        "torch.optim.LBFGS with forgetting every 5 steps, pairs from one minibatch",
        "torch.optim.LBFGS",
        MappingProxyType(
            {
                "memory": Setting("int", 5, "curvature pairs kept (history_size)", low=1),
                "forget_every": Setting(
                    "int", 5, "clear the memory every this many steps; null (None): never", low=1, optional=True
                ),
                "lr": _lr(1.0, "step length of the line search's first trial"),
                "line_search": Setting(
                    "choice", "strong_wolfe", "line search; null (None): a fixed step lr", choices=("strong_wolfe",),
                    optional=True,
                ),
            }
        ),
        needs_closure=True,
        second_order=True,
    ),
    OptimizerInfo(
        "nag",
        "SGD with Nesterov momentum",
        "torch.optim.SGD",
        MappingProxyType(
            {
                "lr": _lr(None, "learning rate; default: " + FAMILY_LR),
                # torch: "Nesterov momentum requires a momentum and zero dampening"
                "momentum": Setting("float", 0.9, "momentum factor", 0.0, 1.0, low_open=True, high_open=True),
            }
        ),
        needs_closure=False,
        second_order=False,
        fixed=MappingProxyType({"nesterov": True}),
    ),
    OptimizerInfo(
        "sgd",
        "plain SGD",
        "torch.optim.SGD",
        MappingProxyType({"lr": _lr(None, "learning rate; default: " + FAMILY_LR)}),
        needs_closure=False,
        second_order=False,
    ),
    OptimizerInfo(
        "momentum",
        "SGD with (heavy-ball) momentum",
        "torch.optim.SGD",
        MappingProxyType(
            {
                "lr": _lr(None, "learning rate; default: " + FAMILY_LR),
                "momentum": Setting("float", 0.9, "momentum factor (0: plain SGD)", 0.0, 1.0, high_open=True),
            }
        ),
        needs_closure=False,
        second_order=False,
    ),
    OptimizerInfo(
        "adadelta",
        "AdaDelta",
        "torch.optim.Adadelta",
        MappingProxyType(
            {
                "lr": _lr(1.0, "coefficient scaling the delta"),
                "rho": Setting("float", 0.9, "decay of the running averages", 0.0, 1.0, high_open=True),
                "eps": Setting("float", 1e-6, "term added to the denominator", low=0.0, low_open=True),
            }
        ),
        needs_closure=False,
        second_order=False,
    ),
    OptimizerInfo(
        "adam",
        "Adam",
        "torch.optim.Adam",
        MappingProxyType(
            {
                "lr": _lr(1e-3),
                "betas": Setting("pair", [0.9, 0.999], "decays of the moment averages", 0.0, 1.0, high_open=True),
                "eps": _EPS,
            }
        ),
        needs_closure=False,
        second_order=False,
    ),
    # ----- second-order and preconditioned peers (optional extra "peers", README
    # "Second-order peers"). Each is built by a factory in registry/peers.py at the package's
    # own defaults, except the weight decay, which is 0: the L2 term is in the loss.
    OptimizerInfo(
        "tz-lsr1-tr",
        "torchzero's L-SR1 in a Steihaug-CG trust region (pairs from consecutive minibatches)",
        "lsr1bench.registry.peers:torchzero_lsr1_trust_region",
        MappingProxyType(
            {
                # torchzero 0.4.4: LSR1(history_size=10), TrustCG(init=1, eta=0.0)
                "memory": Setting("int", 10, "curvature pairs kept (LSR1 history_size)", low=1),
                "initial_radius": Setting("float", 1.0, "first trust radius (TrustCG init)", low=0.0, low_open=True),
                "eta": Setting("float", 0.0, "accept a step when rho > eta (TrustCG eta)", 0.0, 1.0, high_open=True),
            }
        ),
        needs_closure=True,
        second_order=True,
        protocol="closure-backward",
        requires=("torchzero",),
    ),
    OptimizerInfo(
        "tz-lsr1-ls",
        "torchzero's L-SR1 with a strong-Wolfe line search (pairs from consecutive minibatches)",
        "lsr1bench.registry.peers:torchzero_lsr1_line_search",
        MappingProxyType(
            {
                # torchzero 0.4.4's LSR1 docstring example: StrongWolfe(c2=0.1, fallback=True)
                "memory": Setting("int", 10, "curvature pairs kept (LSR1 history_size)", low=1),
                "c2": Setting("float", 0.1, "curvature condition of the strong Wolfe search", 0.0, 1.0, True, True),
            }
        ),
        needs_closure=True,
        second_order=True,
        protocol="closure-backward",
        requires=("torchzero",),
    ),
    OptimizerInfo(
        "soap",
        "SOAP (Adam in Shampoo's eigenbasis), pytorch-optimizer",
        "pytorch_optimizer.SOAP",
        MappingProxyType(
            {
                "lr": _lr(3e-3),
                "betas": Setting("pair", [0.95, 0.95], "decays of the moment averages", 0.0, 1.0, high_open=True),
                "precondition_frequency": Setting("int", 10, "steps between eigenbasis updates", low=1),
                "eps": _EPS,
            }
        ),
        needs_closure=False,
        second_order=False,
        fixed=MappingProxyType({"weight_decay": 0.0}),
        requires=("pytorch_optimizer",),
    ),
    OptimizerInfo(
        "shampoo",
        "Shampoo (Gupta et al. 2018), pytorch-optimizer",
        "pytorch_optimizer.Shampoo",
        MappingProxyType(
            {
                "lr": _lr(1e-3),
                "momentum": Setting("float", 0.0, "momentum factor", 0.0, 1.0, high_open=True),
                "preconditioning_compute_steps": Setting("int", 1, "steps between preconditioner updates", low=1),
                "matrix_eps": Setting(
                    "float", 1e-6, "term added to the preconditioner statistics", low=0.0, low_open=True
                ),
            }
        ),
        needs_closure=False,
        second_order=False,
        fixed=MappingProxyType({"weight_decay": 0.0}),
        requires=("pytorch_optimizer",),
    ),
    OptimizerInfo(
        "adahessian",
        "AdaHessian (Yao et al. 2021): Hutchinson Hessian diagonal, one HVP per step, pytorch-optimizer",
        "pytorch_optimizer.AdaHessian",
        MappingProxyType(
            {
                "lr": _lr(0.1),
                "betas": Setting("pair", [0.9, 0.999], "decays of the moment averages", 0.0, 1.0, high_open=True),
                "hessian_power": Setting("float", 1.0, "exponent k of the Hessian diagonal", 0.0, 1.0, low_open=True),
                "eps": Setting("float", 1e-16, "term added to the denominator", low=0.0, low_open=True),
            }
        ),
        needs_closure=False,
        second_order=False,
        fixed=MappingProxyType({"weight_decay": 0.0, "num_samples": 1, "update_period": 1}),
        protocol="create-graph",
        requires=("pytorch_optimizer",),
        hvps_per_update=1,
        hvp_period=1,
    ),
)

OPTIMIZER_TABLE: Mapping[str, OptimizerInfo] = MappingProxyType({info.name: info for info in _OPTIMIZERS})

MODEL_TABLE: Mapping[str, ModelInfo] = MappingProxyType(
    {
        m.name: m
        for m in (
            ModelInfo(
                "lenet5",
                "the paper's MNIST LeNet-5 (appendix): conv20-conv50-fc500-fc10",
                inits=("appendix", "torch", "fc-torch"),
            ),
            ModelInfo(
                "cifar_lenet",
                "the paper's CIFAR-10 LeNet-like network (appendix): conv32-conv32-conv64-fc64-fc10",
            ),
            ModelInfo(
                "resnet20",
                "ResNet-20 of He et al. 2016, section 4.2 (n = 3), batch norm, He initialisation",
                batch_norm="always",
            ),
            ModelInfo("mlp", "a small multilayer perceptron for tests and quick checks"),
        )
    }
)

DATASET_TABLE: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        d.name: d
        for d in (
            DatasetInfo("mnist", "MNIST via torchvision (60,000 train / 10,000 test)", "mnist", "torchvision"),
            DatasetInfo(
                "mnist-embedded", "a real MNIST subset shipped inside the package (offline)", "mnist", "package"
            ),
            DatasetInfo("cifar10", "CIFAR-10 via torchvision (50,000 train / 10,000 test)", "cifar10", "torchvision"),
            DatasetInfo(
                "synthetic-cifar10",
                "generated CIFAR-shaped tensors, for tests only (not CIFAR-10)",
                "cifar10",
                "generated",
            ),
            DatasetInfo("FashionMNIST", "torchvision.datasets.FashionMNIST, 28x28 gray", "mnist", "torchvision class"),
            DatasetInfo("KMNIST", "torchvision.datasets.KMNIST (Kuzushiji), 28x28 gray", "mnist", "torchvision class"),
            DatasetInfo("QMNIST", "torchvision.datasets.QMNIST, 28x28 gray", "mnist", "torchvision class"),
            DatasetInfo(
                "CIFAR100", "torchvision.datasets.CIFAR100, 32x32 colour, 100 classes", "cifar10", "torchvision class"
            ),
        )
    }
)


def optimizer_info(name: str) -> OptimizerInfo:
    """The record of a registered optimizer; ``KeyError`` naming the close and known ones."""
    try:
        return OPTIMIZER_TABLE[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(OPTIMIZER_TABLE), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown optimizer {name!r}{hint}; known: {', '.join(OPTIMIZER_TABLE)}") from None


def check_optimizer_params(name: str, params: Mapping[str, Any], rules: bool = True) -> list[tuple[str, str]]:
    """``(key, problem)`` for each value of ``params`` (one point, no sweeps) ``name`` refuses.

    The problem reads ``memory must be an integer >= 1, got 0``. Keys the record does not
    know are left to the caller. Rules between two settings are checked with the defaults
    filled in, so ``decrease_threshold: 0.9`` alone is refused (the default increase
    threshold is 0.75); ``rules=False`` checks each value on its own only.
    """
    info = optimizer_info(name)
    table = {**info.settings, **info.layout}
    problems = [
        (key, f"{key} must be {table[key].allowed('null')}, got {_yaml(value)}")
        for key, value in params.items()
        if key in table and not table[key].accepts(value)
    ]
    if problems or not rules:
        return problems
    merged = {**info.defaults(), **params}
    for small, large in info.rules:
        if not merged[small] < merged[large]:
            key = small if small in params else large
            problems.append(
                (key, f"{small} must be below {large}, got {small}={merged[small]!r} and {large}={merged[large]!r}")
            )
    return problems


def missing_package(name: str) -> str | None:
    """Why optimizer ``name`` cannot be built here (a required module that does not import),
    with the install command; None when it can. Imports the modules, so call it at validation."""
    import importlib

    for module in optimizer_info(name).requires:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken install is as missing as an absent one
            return (
                f"{name} needs the optional package {module!r}, which does not import here "
                f"({type(exc).__name__}: {exc}); install the peers with: {PEERS_INSTALL}"
            )
    return None
