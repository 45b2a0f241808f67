"""What every run computes, whatever the optimizer: the objective, the minibatches, the
evaluations, and the guard that keeps batch-norm statistics to the accepted points.

See :mod:`lsr1bench.runner` for how a run puts them together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from lsr1bench.execute.data import DeviceData
from lsr1bench.grid import RunSpec
from lsr1bench.parallel import SingleProcess
from lsr1bench.registry.models import l2_penalty

# Test-set evaluation batch: large enough to be quick, small enough for ResNet-20 on CPU.
EVAL_BATCH = 1000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, x: Tensor, y: Tensor, parallel: SingleProcess | None = None
) -> tuple[float, float]:
    """(mean cross-entropy, error %) over ``x, y`` in eval mode; restores train mode.

    With P ranks each evaluates its 1/P of the rows and (loss sum, wrong, count) are summed.
    """
    parallel = parallel or SingleProcess()
    parallel.before_evaluation(model)
    was_training = model.training
    model.eval()
    lo, hi = parallel.local_rows(len(y))
    totals = torch.zeros(3, dtype=torch.float64, device=x.device)  # loss sum, wrong, count
    for start in range(lo, hi, EVAL_BATCH):
        stop = min(start + EVAL_BATCH, hi)
        logits = model(x[start:stop])
        target = y[start:stop]
        totals[0] += F.cross_entropy(logits, target, reduction="sum").double()
        totals[1] += (logits.argmax(dim=1) != target).sum()
        totals[2] += stop - start
    model.train(was_training)
    loss_sum, wrong, n = (float(v) for v in parallel.sum(totals))
    return loss_sum / n, 100.0 * wrong / n


@torch.no_grad()
def initial_objective(
    model: torch.nn.Module,
    data: DeviceData,
    batch_size: int,
    weight_decay: float,
    parallel: SingleProcess | None = None,
) -> float:
    """Epoch 0's train loss: cross-entropy + L2 at the initial point, as training sees it.

    Train mode over consecutive minibatches of the run's batch size (batch norm uses
    batch statistics, as in every later row), with the batch-norm running statistics
    saved and restored, so measuring the start point does not change the run. With P
    ranks each takes its rows of every minibatch, as in training, and the sums are added.
    """
    parallel = parallel or SingleProcess()
    saved = [buffer.clone() for buffer in model.buffers()]
    total = torch.zeros(1, dtype=torch.float64, device=data.train_y.device)
    n = len(data.train_y)
    # full minibatches, the remainder joining the last (a batch of one breaks batch norm)
    edges = list(range(0, n, batch_size))[: max(1, n // batch_size)] + [n]
    for start, stop in zip(edges, edges[1:]):
        lo, hi = parallel.local_rows(stop - start)
        x, y = data.train_x[start + lo : start + hi], data.train_y[start + lo : start + hi]
        total += F.cross_entropy(model(x), y, reduction="sum").double()
    for buffer, value in zip(model.buffers(), saved):
        buffer.copy_(value)
    return float(parallel.sum(total)[0]) / n + float(l2_penalty(model, weight_decay))


def minibatch_objective(
    logits: Tensor, targets: Tensor, model: torch.nn.Module, spec: RunSpec, world_size: int = 1
) -> Tensor:
    """The function the optimizer minimises on this rank's rows of one minibatch of b examples.

    ``loss_reduction: mean`` (the paper's objective): mean cross-entropy + L2.
    ``loss_reduction: sum``: the cross-entropy summed over the minibatch + L2. Only the data
    term is b times larger; the L2 term is the same ``l2_penalty`` as with mean, so the
    weight decay is relatively b times weaker. A first-order method's step on the data
    term is then b times that of the mean at the same learning rate (what a framework whose
    loss sums over the batch does). With P ranks each holds b / P rows and DDP averages the
    gradients, so each rank's sum is multiplied by P: the average is the global sum.
    """
    if spec.loss_reduction == "sum":
        data = F.cross_entropy(logits, targets, reduction="sum") * world_size
    else:
        data = F.cross_entropy(logits, targets)
    return data + l2_penalty(model, spec.weight_decay)


class MeanLoss:
    """An epoch's ``train_loss``: the per-example mean cross-entropy + L2 at each step's
    start point, averaged over the steps, whatever ``loss_reduction`` the optimizer saw.

    A step reports the objective it minimised; with ``sum`` that is b * mean + L2, so the
    L2 term at the start point is taken before the step (``start``) and the mean recovered
    as (loss - L2) / b + L2, summed on the device (no host transfer per step).
    """

    def __init__(self, loss_reduction: str, weight_decay: float) -> None:
        self.summed = loss_reduction == "sum"
        self.weight_decay = weight_decay
        self.total = 0.0
        self.l2_total: Tensor | float = 0.0
        self.steps = 0

    def start(self, model: torch.nn.Module) -> Tensor | None:
        if not self.summed:
            return None
        with torch.no_grad():
            return l2_penalty(model, self.weight_decay)

    def add(self, loss: float, batch: int, l2_at_start: Tensor | None) -> None:
        self.steps += 1
        if l2_at_start is None:
            self.total += loss
        else:
            self.total += loss / batch
            self.l2_total = self.l2_total + l2_at_start * (1.0 - 1.0 / batch)

    def mean(self) -> float:
        return (self.total + float(self.l2_total)) / max(self.steps, 1)


class RunningStatsGuard:
    """Keeps batch-norm running statistics to one update per step, at the accepted point.

    ``protect(closure)`` returns a closure that restores the running statistics (and
    ``num_batches_tracked``) to their values at the start of the step after every call;
    ``update(x)`` then runs one forward pass in train mode without gradients on the
    step's minibatch at the current parameters, which updates them exactly once.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.buffers = [
            b
            for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked)
            if b is not None
        ]

    def protect(self, closure: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if not self.buffers:
            return closure
        saved = [b.clone() for b in self.buffers]

        def guarded(*args: object, **kwargs: object) -> Tensor:  # closure(backward=False) too
            loss = closure(*args, **kwargs)
            with torch.no_grad():
                torch._foreach_copy_(self.buffers, saved)
            return loss

        return guarded

    def update(self, x: Tensor) -> None:
        if self.buffers:
            with torch.no_grad():
                self.model(x)


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator).to(device)
    if batch_size >= n:
        yield order
        return
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def current_lr(optimizer: torch.optim.Optimizer) -> float | None:
    lr = optimizer.param_groups[0].get("lr")
    return float(lr) if isinstance(lr, (int, float, Tensor)) else None
