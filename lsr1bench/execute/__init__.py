"""How runs are carried out and survive: the interrupt handler every process shares
(:mod:`.interrupt`) and one run's checkpoints (:mod:`.checkpoint`).

The training loop (:mod:`lsr1bench.runner`) saves and restores checkpoints; the
scheduler and the launcher only install the handler and pass signals on.
"""
