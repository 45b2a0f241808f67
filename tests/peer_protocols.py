"""Plugin optimizers that declare a step protocol (``lsr1bench_protocol``) and check, inside
their step, that the training loop's closure behaves as that protocol says. Each records
what it saw in ``SEEN`` so a test can read it after ``lsr1bench run`` (in-process)."""

from __future__ import annotations

from typing import Any

import torch

SEEN: dict[str, list[Any]] = {"backward": [], "create_graph": []}


class BackwardSpy(torch.optim.Optimizer):
    """A plain SGD step that first calls ``closure(backward=False)`` and checks it left
    ``.grad`` alone and returned the same loss as the full closure at the same point."""

    lsr1bench_protocol = "closure-backward"

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})

    def step(self, closure: Any) -> Any:  # a closure is required
        params = [p for group in self.param_groups for p in group["params"]]
        with torch.enable_grad():
            loss = closure()
        grads = [p.grad.clone() for p in params]
        loss_only = closure(backward=False)
        same_grads = all(torch.equal(p.grad, g) for p, g in zip(params, grads))
        SEEN["backward"].append((float(loss), float(loss_only), same_grads, loss_only.requires_grad))
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-self.param_groups[0]["lr"])
        return loss


class CreateGraphSpy(torch.optim.Optimizer):
    """A plain SGD step that takes one Hessian-vector product of the closure's gradient,
    which only works if the loop's backward kept the graph (``create_graph=True``)."""

    lsr1bench_protocol = "create-graph"

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})

    def step(self, closure: Any) -> Any:
        params = [p for group in self.param_groups for p in group["params"]]
        with torch.enable_grad():
            loss = closure()
        graph_kept = all(p.grad.requires_grad for p in params)
        if graph_kept:
            vectors = [torch.ones_like(p) for p in params]
            torch.autograd.grad([p.grad for p in params], params, grad_outputs=vectors)
        SEEN["create_graph"].append(graph_kept)
        with torch.no_grad():
            for p in params:
                p.add_(p.grad.detach(), alpha=-self.param_groups[0]["lr"])
        return loss


class BadProtocol(BackwardSpy):
    lsr1bench_protocol = "hvp"
