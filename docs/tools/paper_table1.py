"""The paper's Table 1 (MNIST with batch normalisation) and the numbers of its text the
reproduction document quotes.

Ramamurthy & Duffy, Table 1: epochs to surpass a target test error, one (target %, batch
size) cell per column. Adam's value at batch 500 is unreadable in the OCR text we have,
hence None. These are the paper's numbers, not ours; the reproduction and the ablation
tables both read them from here.
"""

from __future__ import annotations

from lsr1bench.reporting.runs import RunSummary

# (target test error in %, batch size): the cells of Table 1's MNIST rows.
PAPER_CELLS = [("1.1", "500"), ("1.2", "1000"), ("1.5", "10000")]
PAPER_TABLE1 = {
    "lsr1": {"500": 5, "1000": 6, "10000": 8},
    "adam": {"500": None, "1000": 3, "10000": 10},
    "nag": {"500": 35, "1000": 37, "10000": 194},
}


def paper_row(runs: list[RunSummary], default: str | None = None) -> dict[str, int | None]:
    """The paper's Table 1 row (batch -> epochs) for the optimizer of ``runs``, or of
    ``default`` when there are none; empty for runs of two optimizers or one the paper
    does not have."""
    found = {str(run.spec.get("optimizer")) for run in runs} or {default}
    return PAPER_TABLE1.get(found.pop(), {}) if len(found) == 1 else {}


# Numbers the paper states in its text, which docs/REPRODUCTION.md's prose quotes
# (docs/tools/prose_numbers.py checks the prose against them). Quoted from the paper's
# text, with where they are; kept here so that the check runs without the paper beside
# the repository.
PAPER_TEXT = {
    "repeats": 10,  # section 4: "All experiments were repeated 10 times to generate error bars"
    "figure1_epochs": 20,  # section 4.1.1: "The networks were trained for 20 epochs"
    "figure1_first_order_batch": 20,  # section 4.1.1: "a mini-batch size of 20 for the first order methods"
    "figure1_second_order_batch": 400,  # section 4.1.1: "a mini-batch size of 400 for the second order methods"
    "memory": 5,  # section 4.1.1: "The memory size was set to 5 for both L-SR1 and L-BFGS"
    "lbfgs_forget_every": 5,  # section 4: "L-BFGS with forgetting every 5 steps"
    "table1_epochs_small_batches": 50,  # section 4.1.3: "For minibatch sizes 500 and 1000 ... 50 epochs"
    "table1_epochs_batch_10000": 200,  # section 4.1.3: "minibatch size of 10000 ... 200 epochs"
    "skip_low_percent": 7,  # section 4.1.4: "ranging all the way from 7% to higher than 60%"
    "skip_high_percent": 60,  # the same sentence: "(for minibatch size 10000)"
    "minibatch_factor": 20,  # section 4.1.4: "a 20 fold increase in minibatch size"
    "first_order_lr": 0.003,  # appendix: "the learning rate was set to 0.003 where needed"
    "first_order_momentum": 0.9,  # appendix: "the momentum was set to 0.9, where needed"
    "l2": 0.0001,  # appendix: "L2 regularization with parameter 0.0001"
}
