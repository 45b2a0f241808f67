"""Factories for the peers whose construction is more than ``cls(params, **settings)``.

torchzero builds an optimizer from modules, ``tz.Optimizer(params, *modules)``; the named
entries ``tz-lsr1-tr`` and ``tz-lsr1-ls`` (``table.py``) are built here, with the settings a
suite may give mapped onto the modules' own keywords. torchzero is imported only when one
is built: it is an optional extra (``pip install -e ".[peers]"``), and validation reports
it missing before any training (``table.missing_package``).

torchzero's L-SR1 keeps the pairs ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` of
consecutive steps, so ``y`` mixes two minibatches; the paper's L-SR1 forms both gradients
on the same minibatch. Its step calls the closure as ``closure(False)`` to evaluate the
loss only (the trust region's ratio, the line search's trials), which the training loop's
closure supports for every optimizer (``PROTOCOLS['closure-backward']``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["torchzero_lsr1_trust_region", "torchzero_lsr1_line_search"]


def torchzero_lsr1_trust_region(
    params: Iterable[Any], memory: int = 10, initial_radius: float = 1.0, eta: float = 0.0
) -> Any:
    """``tz.Optimizer(params, tz.m.TrustCG(tz.m.LSR1(history_size=memory), init=..., eta=...))``."""
    import torchzero as tz

    return tz.Optimizer(params, tz.m.TrustCG(tz.m.LSR1(history_size=int(memory)), init=initial_radius, eta=eta))


def torchzero_lsr1_line_search(params: Iterable[Any], memory: int = 10, c2: float = 0.1) -> Any:
    """``tz.Optimizer(params, tz.m.LSR1(history_size=memory), tz.m.StrongWolfe(c2=c2, fallback=True))``."""
    import torchzero as tz

    return tz.Optimizer(params, tz.m.LSR1(history_size=int(memory)), tz.m.StrongWolfe(c2=c2, fallback=True))
