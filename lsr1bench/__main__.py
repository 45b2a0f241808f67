"""``python -m lsr1bench``: the command line (what ``torchrun -m lsr1bench run ...`` starts)."""

from lsr1bench.cli import app

app(prog_name="lsr1bench")
