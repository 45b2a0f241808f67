"""Optimizers, models and datasets named by import path (``module.Name`` or ``module:name``).

A suite may name, instead of a registered name:

* an optimizer: a ``torch.optim.Optimizer`` subclass, built as ``cls(parameters, **params)``;
* a model: a factory returning an ``nn.Module``, called as ``factory(**params)`` plus
  ``input_shape``, ``num_classes`` and ``batch_norm`` where its signature takes them;
* a dataset: a factory returning ``(train, test, num_classes)``, each split a pair of
  tensors ``(x, y)`` or a torch dataset of ``(x, y)`` items. The factory may declare the
  objective's L2 coefficient as an attribute, ``load.weight_decay = 5e-4`` (default 0).

The current directory is put on ``sys.path`` first, as ``python -m`` does, so a module
next to the suite imports. Everything here is checked once, at validation, and every
failure is a :class:`PluginError` whose message names the path and what went wrong.
Importing this module imports nothing but the standard library; torch is imported only
to check an optimizer class.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import itertools
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

# Keyword arguments the runner passes to a model factory itself (from the dataset and grid).
MODEL_INJECTED = ("input_shape", "num_classes", "batch_norm")

_IDENTIFIER = r"[A-Za-z_]\w*"
_PATH = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*(:{_IDENTIFIER}(\.{_IDENTIFIER})*)?$")


class PluginError(ValueError):
    """A plugin path that does not import, or is not what its place in a suite needs."""


def is_import_path(name: Any) -> bool:
    """Whether ``name`` reads as an import path rather than a registered name."""
    return isinstance(name, str) and ("." in name or ":" in name)


def resolve(path: str) -> Any:
    """The object at ``path`` (``pkg.mod.Name`` or ``pkg.mod:name``); PluginError if absent."""
    if not _PATH.match(path):
        raise PluginError(f"'{path}' is not an import path; write module.Name or module:name")
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's module's
        raise PluginError(
            f"cannot import module '{module_name}' (from '{path}'): {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            hint = _close_names(part, dir(obj))
            raise PluginError(f"module '{module_name}' has no attribute '{attribute}' (from '{path}'){hint}")
        obj = getattr(obj, part)
    return obj


def _close_names(word: str, known: list[str]) -> str:
    """`` (did you mean 'RMSprop'?)``: the names in ``known`` close to ``word``, ignoring case."""
    public = [name for name in known if not name.startswith("_")]
    by_lower: dict[str, list[str]] = {}
    for name in public:
        by_lower.setdefault(name.lower(), []).append(name)
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=3, cutoff=0.75)
    found = [name for lower in close for name in by_lower[lower]][:3]
    return f" (did you mean {' or '.join(repr(n) for n in found)}?)" if found else ""


def default_label(path: str) -> str | None:
    """The label of an entry named by ``path`` when it gives none: the factory's or class's
    own name in lower case (``torch.optim.RMSprop``: ``rmsprop``, ``pkg.models:wide_resnet``:
    ``wide_resnet``); None when that name makes no label (letters, digits, '.', '_', '-')."""
    attribute = path.partition(":")[2] if ":" in path else path.rpartition(".")[2]
    label = attribute.rpartition(".")[2].lower().lstrip("_")
    return label if re.fullmatch(r"[a-z0-9][a-z0-9._-]*", label) else None


def _signature(target: Any, path: str) -> inspect.Signature:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"'{path}': cannot read its signature ({exc})") from None


def _keywords(parameters: list[inspect.Parameter]) -> tuple[dict[str, inspect.Parameter], bool]:
    """Parameters that can be given by keyword, and whether ``**kwargs`` takes any other."""
    named = {
        p.name: p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _keyword_problems(
    path: str, accepted: Mapping[str, inspect.Parameter], open_ended: bool, given: Mapping[str, Any], what: str
) -> list[tuple[str, str]]:
    problems = []
    if not open_ended:
        for key in given:
            if key not in accepted:
                known = ", ".join(accepted) or "(none)"
                problems.append((f".{key}", f"{path} takes no keyword '{key}'; {what} accepts: {known}"))
    return problems


# ----------------------------------------------------------------------------- optimizers


def optimizer_class(path: str) -> type:
    """The ``torch.optim.Optimizer`` subclass at ``path``."""
    import torch

    obj = resolve(path)
    if not (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)):
        raise PluginError(f"'{path}' is not a torch.optim.Optimizer subclass (it is {type(obj).__name__} {obj!r})")
    return obj


def optimizer_keywords(cls: type, path: str) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's keywords after ``self`` and the parameters argument."""
    parameters = list(_signature(cls.__init__, path).parameters.values())[2:]
    return _keywords(parameters)


def list_valued(cls: type, path: str) -> frozenset[str]:
    """Keywords whose default is a tuple or list (``betas``): a list there is one value, not a sweep."""
    accepted, _ = optimizer_keywords(cls, path)
    return frozenset(k for k, p in accepted.items() if isinstance(p.default, (tuple, list)))


def needs_closure(cls: type) -> bool:
    """Whether ``cls.step`` requires a closure (as L-BFGS does): then it is driven like L-SR1."""
    try:
        parameter = inspect.signature(cls.step).parameters.get("closure")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


# A plugin class may declare how its step is driven (a key of ``table.PROTOCOLS``):
#     class MyOptimizer(torch.optim.Optimizer):
#         lsr1bench_protocol = "closure-backward"
# Without it: "closure" if its step requires a closure, else "step".
PROTOCOL_ATTRIBUTE = "lsr1bench_protocol"


def plugin_protocol(cls: type, path: str) -> str:
    """The protocol the class at ``path`` declares, else the one its step signature implies."""
    from lsr1bench.registry.table import PROTOCOLS

    declared = getattr(cls, PROTOCOL_ATTRIBUTE, None)
    if declared is None:
        return "closure" if needs_closure(cls) else "step"
    if declared not in PROTOCOLS:
        raise PluginError(
            f"'{path}'.{PROTOCOL_ATTRIBUTE} must be one of {', '.join(repr(p) for p in PROTOCOLS)}, got {declared!r}"
        )
    return declared


def check_optimizer(path: str, points: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Problems with an optimizer path and its params, as ``(subpath, message)``.

    ``points`` are the params of every sweep point; each is tried on a one-element
    parameter, so a value the constructor rejects (``lr: -1``) is reported now.
    """
    import torch

    cls = optimizer_class(path)
    plugin_protocol(cls, path)  # a declared protocol must be a known one
    accepted, open_ended = optimizer_keywords(cls, path)
    given = {key: None for point in points for key in point}
    problems = _keyword_problems(path, accepted, open_ended, given, "its constructor")
    if problems:
        return problems
    for point in points:
        try:
            cls([torch.zeros(1, requires_grad=True)], **point)
        except Exception as exc:  # noqa: BLE001 - the constructor's own check, reported as is
            shown = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "no params"
            return [("", f"{path}({shown}) raised {type(exc).__name__}: {exc}")]
    return []


# ----------------------------------------------------------------------------- models and datasets


def factory(path: str, what: str) -> Any:
    obj = resolve(path)
    if not callable(obj):
        raise PluginError(f"'{path}' is not callable; a {what} factory is a function or class")
    return obj


def check_factory(
    path: str, params: Mapping[str, Any], what: str, injected: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """Problems with a model or dataset factory's params: unknown keywords, missing required ones."""
    target = factory(path, what)
    parameters = list(_signature(target, path).parameters.values())
    accepted, open_ended = _keywords(parameters)
    problems = [
        (f".{key}", f"{key} is passed to {path} by lsr1bench itself; remove it from params")
        for key in params
        if key in injected
    ]
    own = {k: p for k, p in accepted.items() if k not in injected}
    problems += _keyword_problems(path, own, open_ended, {k: v for k, v in params.items() if k not in injected}, "it")
    missing = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in params
        and p.name not in injected
    ]
    if missing:
        problems.append(("", f"{path} requires {', '.join(missing)}; give them under params"))
    return problems


def takes_keyword(path: str, keyword: str) -> bool:
    """Whether the factory at ``path`` accepts ``keyword`` (by name or through ``**kwargs``)."""
    accepted, open_ended = _keywords(list(_signature(factory(path, "model"), path).parameters.values()))
    return open_ended or keyword in accepted


def declared_weight_decay(path: str) -> float:
    """The L2 coefficient a dataset factory declares (``load.weight_decay = ...``), else 0."""
    value = getattr(factory(path, "dataset"), "weight_decay", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise PluginError(f"'{path}'.weight_decay must be a number >= 0, got {value!r}")
    return float(value)


def sweep_points(axes: list[tuple[str, list[Any]]], fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the sweep axes (in the order written) over the fixed params."""
    if not axes:
        return [dict(fixed)]
    keys = [key for key, _ in axes]
    return [{**fixed, **dict(zip(keys, values))} for values in itertools.product(*(v for _, v in axes))]
