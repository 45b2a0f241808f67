"""The L-SR1 optimizer core; imports torch and the standard library only.

    from lsr1bench.optim import LSR1
"""

from .lsr1 import LSR1

__all__ = ["LSR1"]
