"""The settings table against the constructors it describes.

For every optimizer record and every setting, values just inside the table's range must
be accepted by the suite schema AND by the real constructor (torch's, or LSR1's, which
then takes two finite steps on a quadratic), and values just outside must be refused by
the schema (naming the key path) and by ``build_optimizer``. LSR1's own table must list
exactly the keywords of ``LSR1.__init__`` with the signature's defaults.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
import yaml

from lsr1bench.optim import LSR1
from lsr1bench.optim.settings import LSR1_RULES, LSR1_SETTINGS, Setting
from lsr1bench.registry import names
from lsr1bench.registry.optimizers import build_optimizer
from lsr1bench.registry.table import OPTIMIZER_TABLE, missing_package
from lsr1bench.spec import SpecError, parse_suite

TINY = 1e-6


def inside(s: Setting) -> list[Any]:
    """Values at and next to the edges of the range, all valid."""
    if s.kind == "bool":
        return [True, False]
    if s.kind == "choice":
        return list(s.choices) + ([None] if s.optional else [])
    if s.kind == "int":
        return [int(s.low), int(s.low) + 3] + ([None] if s.optional else [])
    low = (s.low + TINY if s.low_open else s.low) if s.low is not None else -3.0
    high = (s.high - TINY if s.high_open else s.high) if s.high is not None else 7.0
    if s.kind == "pair":
        return [[low, high], [high, low]]
    values = [low, high, (low + high) / 2]
    if s.nonzero:
        values = [v for v in values if v != 0] + [TINY, -TINY]
    return values + ([None] if s.optional else [])


def outside(s: Setting) -> list[Any]:
    """Values just past the edges, and values of the wrong kind."""
    if s.kind == "bool":
        return ["yes", 1]
    if s.kind == "choice":
        return ["bogus", 1] + ([] if s.optional else [None])
    if s.kind == "int":
        return [int(s.low) - 1, 2.5, True] + ([] if s.optional else [None])
    out: list[Any] = ["0.1", math.nan, math.inf]
    if s.low is not None:
        out.append(s.low if s.low_open else s.low - TINY)
    if s.high is not None:
        out.append(s.high if s.high_open else s.high + TINY)
    if s.nonzero:
        out.append(0.0)
    if s.kind == "pair":
        return [[v, 0.5] for v in out[1:]] + [[0.5], 0.5]
    return out + ([] if s.optional else [None])


def with_partners(values: dict[str, Any], rules: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Move the other setting of a rule out of the way of the probed one."""
    out = dict(values)
    for small, large in rules:
        if small in values and large not in values and isinstance(values[small], float):
            out[large] = (values[small] + 1.0) / 2
        if large in values and small not in values and isinstance(values[large], float):
            out[small] = values[large] / 2
    return out


def suite_problems(name: str, params: dict[str, Any]) -> list[str]:
    text = yaml.safe_dump(
        {"grids": [{"models": ["mlp"], "datasets": ["mnist"], "optimizers": [{"name": name, "params": params}]}]}
    )
    try:
        parse_suite(text)
    except SpecError as err:
        return err.problems
    return []


def probes(kind: str) -> list[tuple[str, str, Any]]:
    return [
        (name, key, value)
        for name, info in OPTIMIZER_TABLE.items()
        if missing_package(name) is None  # the peers when their optional extra is installed
        for key, setting in {**info.settings, **info.layout}.items()
        for value in (inside(setting) if kind == "inside" else outside(setting))
    ]


def _id(probe: tuple[str, str, Any]) -> str:
    return f"{probe[0]}.{probe[1]}={probe[2]!r}"


@pytest.mark.parametrize("probe", probes("inside"), ids=_id)
def test_a_value_inside_the_table_is_accepted_by_the_suite_and_the_constructor(probe) -> None:
    name, key, value = probe
    info = OPTIMIZER_TABLE[name]
    params = with_partners({key: value}, info.rules)
    assert suite_problems(name, params) == []
    model = torch.nn.Linear(3, 2)
    hyper = names.resolved_optimizer_params(name, "mnist", params)
    hyper.pop("shard_memory", None)  # a layout option: only with a process group
    build_optimizer(name, model.parameters(), hyper)  # torch's or LSR1's own checks


@pytest.mark.parametrize("probe", probes("outside"), ids=_id)
def test_a_value_outside_the_table_is_refused_by_the_suite_and_the_factory(probe) -> None:
    name, key, value = probe
    found = suite_problems(name, {key: value})
    assert any(line.startswith(f"grids[0].optimizers[0].params.{key}: {key} must be") for line in found), found
    if key == "shard_memory":
        return
    hyper = names.resolved_optimizer_params(name, "mnist", {key: value})
    with pytest.raises(ValueError, match=rf"{key}|learning rate"):
        build_optimizer(name, torch.nn.Linear(3, 2).parameters(), hyper)


def test_lsr1_table_lists_every_constructor_keyword_with_its_default() -> None:
    signature = inspect.signature(LSR1.__init__).parameters
    keywords = {k: p.default for k, p in signature.items() if k not in ("self", "params", "process_group")}
    assert set(keywords) <= set(LSR1_SETTINGS), "a constructor argument the table does not check"
    assert set(LSR1_SETTINGS) == set(keywords), "a table row that is no constructor argument"
    for key, default in keywords.items():
        assert LSR1_SETTINGS[key].default == default, key
        assert LSR1_SETTINGS[key].accepts(default), key


def _quadratic_steps(**kwargs: Any) -> float:
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 4.0], dtype=torch.float64)
    opt = LSR1([x], **kwargs)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * (scale * x * x).sum()
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    return float(0.5 * (scale * x.detach() ** 2).sum())


LSR1_PROBES = [
    (key, value)
    for key, setting in LSR1_SETTINGS.items()
    if key != "shard_memory"
    for value in inside(setting)
]


@pytest.mark.parametrize("key, value", LSR1_PROBES, ids=[f"{k}={v!r}" for k, v in LSR1_PROBES])
def test_lsr1_takes_two_finite_steps_at_every_edge_of_its_table(key: str, value: Any) -> None:
    kwargs = with_partners({key: value}, LSR1_RULES)
    if key in ("line_search", "c1", "c2", "max_line_search_evaluations"):
        kwargs["method"] = "line_search"
    loss = _quadratic_steps(**kwargs)
    assert math.isfinite(loss) and loss <= 0.5 * (1.0 + 4.0 * 4.0) + 1e-12


@pytest.mark.parametrize(
    "key, value", [(k, v) for k, s in LSR1_SETTINGS.items() for v in outside(s)]
)
def test_lsr1_refuses_every_value_outside_its_table_naming_it(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"Invalid {key}: .*\(expected "):
        LSR1([torch.zeros(2, requires_grad=True)], **{key: value})


@pytest.mark.parametrize(
    "name, params, key",
    [
        ("lsr1", {"decrease_threshold": 0.8}, "decrease_threshold"),  # default increase 0.75
        ("lsr1", {"decrease_threshold": 0.5, "increase_threshold": 0.5}, "decrease_threshold"),
    ],
)
def test_the_threshold_rule_is_one_rule_for_suite_and_constructor(name: str, params: dict, key: str) -> None:
    found = suite_problems(name, params)
    assert any("decrease_threshold must be below increase_threshold" in line for line in found), found
    with pytest.raises(ValueError, match="decrease_threshold=0.[58]: it must be below increase_threshold"):
        LSR1([torch.zeros(2, requires_grad=True)], **params)


@pytest.mark.parametrize(
    "name, params",
    [
        # three settings the suite once refused though LSR1 accepts them
        ("lsr1", {"radius_increase": 1.0}),
        ("lsr1", {"skip_tol": 0.0}),
        ("lsr1", {"decrease_threshold": 0.0}),
        ("lsr1-ls", {"skip_tol": 0.0}),
    ],
)
def test_values_lsr1_accepts_are_valid_in_a_suite(name: str, params: dict) -> None:
    assert suite_problems(name, params) == []
    LSR1([torch.zeros(2, requires_grad=True)], **params)


def test_nag_without_momentum_is_refused_by_the_suite_as_torch_refuses_it() -> None:
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.0, nesterov=True)
    found = suite_problems("nag", {"momentum": 0.0})
    assert found == ["grids[0].optimizers[0].params.momentum: momentum must be a number in (0, 1), got 0.0"]
    assert suite_problems("momentum", {"momentum": 0.0}) == []


@pytest.mark.parametrize("name", [n for n, info in OPTIMIZER_TABLE.items() if not info.requires])
def test_flags_match_what_the_built_optimizer_does(name: str) -> None:
    """needs_closure: step() without a closure fails; second_order: the paper's three."""
    from lsr1bench.registry.plugins import resolve

    info = OPTIMIZER_TABLE[name]
    model = torch.nn.Linear(3, 2)
    built = build_optimizer(name, model.parameters(), names.resolved_optimizer_params(name, "mnist"))
    assert isinstance(built.optimizer, resolve(info.cls))
    model(torch.ones(1, 3)).sum().backward()
    if info.needs_closure:
        with pytest.raises((RuntimeError, TypeError)):
            built.optimizer.step()
    else:
        built.optimizer.step()
    assert info.second_order == (name in {"lsr1", "lsr1-ls", "lbfgs"}) == built.second_order
