"""The L-SR1 optimizer core; imports torch and the standard library only.

    from lsr1bench.optim import LSR1

``LSR1`` (and torch with it) is imported on first use, so ``lsr1bench.optim.settings``,
the table of LSR1's arguments, can be read without loading torch.
"""

from typing import Any

__all__ = ["LSR1"]


def __getattr__(name: str) -> Any:
    if name == "LSR1":
        from .lsr1 import LSR1

        return LSR1
    raise AttributeError(f"module 'lsr1bench.optim' has no attribute {name!r}")
