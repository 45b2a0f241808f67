"""Where the optimizer's data lives, as one object the step calls: ``LocalLayout`` (one
process), ``ReplicatedLayout`` and ``ShardedLayout`` (a torch.distributed group).

The step never asks which it has. Through the layout it makes every reduction over the
n coordinates (``gather``: one blocking transfer, one collective with a group), forms the
full vector of a rank's slice (``full``, ``full_rows``: all-gathers when sharded, the
slice itself otherwise), copies this rank's slice of the gradient (``grad_into``), adds
the check that the ranks' decisions agree (``consistency_parts`` / ``consistent``) and
returns the step's loss (``step_loss``: averaged over the group). Saving and restoring x
needs nothing of the layout: every rank keeps a full copy, so a rejected step restores it
with no collective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._compact import SMALL, products
from ._distributed import Coordinates, check_consistent, make_coordinates


class LocalLayout:
    """Every coordinate on this process: reductions are local, gathers are the identity.

    ``gather`` takes device tensors (partial inner products, losses), concatenates them
    as float64 on the device and copies the result to the host in ONE blocking transfer;
    ``syncs`` counts those transfers. A step makes two on its common path: one after the
    gradient at x, one after the trial point. A group's layout all-reduces the small
    concatenated vector before the copy, so every reduction over n costs the group one
    collective of O(m) float64 values.
    """

    def __init__(self, coordinates: Coordinates) -> None:
        self.coordinates = coordinates
        self.syncs = 0

    # --- geometry -------------------------------------------------------------------
    @property
    def lo(self) -> int:
        return self.coordinates.lo

    @property
    def hi(self) -> int:
        return self.coordinates.hi

    @property
    def width(self) -> int:
        return self.coordinates.width

    @property
    def total(self) -> int:
        return self.coordinates.total

    @property
    def world_size(self) -> int:
        return self.coordinates.world_size

    def describe(self) -> dict:
        return self.coordinates.describe()

    # --- reductions -----------------------------------------------------------------
    def gather(self, parts: list[Tensor], *, means: int = 0) -> Tensor:
        """[parts...] flattened into one float64 CPU vector (one blocking transfer).

        The first ``means`` entries are averages over the data (losses), the rest are
        sums over the parameters (inner products); a group's layout treats them so.
        """
        flat = torch.cat([p.detach().reshape(-1).to(SMALL) for p in parts])
        flat = self._reduce(flat, means)
        self.syncs += 1
        return flat.to("cpu")

    def _reduce(self, flat: Tensor, means: int) -> Tensor:
        return flat

    def rows(self, matrix: Tensor, vector: Tensor) -> Tensor:
        """matrix (r x n) times a vector (n,) -> (r,), float64 CPU (one transfer)."""
        return self.gather([products(matrix, vector.unsqueeze(0))]).reshape(-1)

    def dots(self, pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
        """[u_i . v_i] for each pair, in one small float64 CPU tensor (one transfer)."""
        return self.gather([products(u.unsqueeze(0), v.unsqueeze(0)).reshape(1) for u, v in pairs])

    # --- the ranks' agreement (nothing to check in one process) -------------------------
    def consistency_parts(self, digest: float, device: torch.device) -> list[Tensor]:
        """Entries to append after the losses of the first gather of a step."""
        return []

    def consistent(self, values: Tensor, means: int, step: int) -> Tensor:
        """``values`` without the entries ``consistency_parts`` added (raising if the ranks
        disagree)."""
        return values

    # --- where vectors live -------------------------------------------------------------
    def grad_into(self, params: list[Tensor], local: Tensor, views: Callable[[Tensor], list[Tensor]]) -> None:
        """This rank's slice of the flat gradient into ``local`` (``views(local)``: its
        per-parameter views when it is full length)."""
        targets = views(local)
        grads = [p.grad for p in params]
        if any(g is None for g in grads):
            for view, grad in zip(targets, grads):
                if grad is None:
                    view.zero_()
            pairs = [(v, g) for v, g in zip(targets, grads) if g is not None]
            if pairs:
                torch._foreach_copy_([v for v, _ in pairs], [g for _, g in pairs])
        else:
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LSR1 does not support sparse gradients")
            torch._foreach_copy_(targets, grads)

    def grad_minus_into(self, params: list[Tensor], local: Tensor, base: Tensor,
                        views: Callable[[Tensor], list[Tensor]]) -> None:
        """``grad_into`` of the gradient minus ``base`` (this rank's slice too): the gradient
        difference y = g(x + s) - g in one pass, never a copy of the gradient first. The same
        subtraction as copying and then ``sub_``, so the same bits."""
        for target, subtrahend, p in zip(views(local), views(base), params):
            if p.grad is None:
                target.zero_().sub_(subtrahend)
            elif p.grad.is_sparse:
                raise RuntimeError("LSR1 does not support sparse gradients")
            else:
                torch.sub(p.grad, subtrahend, out=target)

    def full(self, local: Tensor, work: Tensor) -> Tensor:
        """The full-length vector of which ``local`` is this rank's slice (``work``: a
        full-length buffer the layout may fill)."""
        return local

    def full_rows(self, rows: Tensor) -> Tensor:
        """``full`` for every row of a matrix of slices (a collective with a group)."""
        return rows

    def step_loss(self, loss: Tensor, reduced: float | None, dtype: torch.dtype) -> Tensor:
        """What ``step`` returns: the closure's loss."""
        return loss

    def statistics(self) -> dict:
        """The layout's entries of ``LSR1.statistics()``."""
        return {}


class GroupLayout(LocalLayout):
    """A torch.distributed group: all-reduces the concatenated small vector; counts the
    collectives and the bytes this rank sends (payload size).

    The vector's first ``means`` entries are averaged over the ranks (losses: each rank's
    closure returns the mean over its equal shard); the next ``checks`` entries are summed
    (the consistency check); the rest are inner products, combined by ``_inner_products``.
    """

    def __init__(self, group, coordinates: Coordinates) -> None:
        super().__init__(coordinates)
        import torch.distributed as dist

        self.dist = dist
        self.group = group
        self.collectives = 0
        self.bytes = 0
        self.checks = 0

    def _inner_products(self, flat: Tensor, start: int) -> Tensor:
        return flat

    def _reduce(self, flat: Tensor, means: int) -> Tensor:
        checks, self.checks = self.checks, 0
        flat = self._inner_products(flat, means + checks)
        self.dist.all_reduce(flat, group=self.group)
        self.collectives += 1
        self.bytes += flat.numel() * flat.element_size()
        if means:
            flat[:means] /= self.coordinates.world_size
        return flat

    def _all_gather(self, local: Tensor, full: Tensor) -> Tensor:
        """full <- the ranks' equal slices, in rank order."""
        chunks = list(full.split(self.coordinates.width))
        self.dist.all_gather(chunks, local.contiguous(), group=self.group)
        self.collectives += 1
        self.bytes += local.numel() * local.element_size()
        return full

    def consistency_parts(self, digest: float, device: torch.device) -> list[Tensor]:
        self.checks = 2
        return [torch.tensor([digest, digest * digest], dtype=SMALL, device=device)]

    def consistent(self, values: Tensor, means: int, step: int) -> Tensor:
        check_consistent(float(values[means]), float(values[means + 1]), self.coordinates.world_size, step)
        return torch.cat([values[:means], values[means + 2 :]])

    def step_loss(self, loss: Tensor, reduced: float | None, dtype: torch.dtype) -> Tensor:
        """The loss averaged over the group (every rank returns the same value)."""
        return loss if reduced is None else torch.tensor(reduced, dtype=dtype)

    def statistics(self) -> dict:
        return {"world_size": self.coordinates.world_size,
                "layout": "sharded" if self.coordinates.sharded else "replicated",
                "collectives": self.collectives, "bytes_communicated": self.bytes}


class ReplicatedLayout(GroupLayout):
    """Every rank keeps all coordinates: inner products are rank 0's (every rank computed
    the same values; a sum would only add rounding), vectors need no gathering."""

    def _inner_products(self, flat: Tensor, start: int) -> Tensor:
        if self.coordinates.rank != 0:
            flat = flat.clone()
            flat[start:] = 0.0
        return flat


class ShardedLayout(GroupLayout):
    """Each rank keeps the columns [lo, hi) of the memory and work rows: inner products
    are sums of the ranks' partial sums, full vectors are all-gathered."""

    def __init__(self, group, coordinates: Coordinates, numels: list[int]) -> None:
        super().__init__(group, coordinates)
        # (parameter index, start in it, end in it, start in the local slice) for every
        # parameter that overlaps this rank's coordinates [lo, hi)
        self._overlaps: list[tuple[int, int, int, int]] = []
        offset = 0
        for index, numel in enumerate(numels):
            a, b = max(coordinates.lo, offset), min(coordinates.hi, offset + numel)
            if a < b:
                self._overlaps.append((index, a - offset, b - offset, a - coordinates.lo))
            offset += numel

    def grad_into(self, params: list[Tensor], local: Tensor, views: Callable[[Tensor], list[Tensor]]) -> None:
        for index, a, b, start in self._overlaps:  # no full-length copy
            grad = params[index].grad
            target = local[start : start + b - a]
            if grad is None:
                target.zero_()
            else:
                target.copy_(grad.reshape(-1)[a:b])

    def grad_minus_into(self, params: list[Tensor], local: Tensor, base: Tensor,
                        views: Callable[[Tensor], list[Tensor]]) -> None:
        for index, a, b, start in self._overlaps:
            grad = params[index].grad
            target, subtrahend = local[start : start + b - a], base[start : start + b - a]
            if grad is None:
                target.zero_().sub_(subtrahend)
            else:
                torch.sub(grad.reshape(-1)[a:b], subtrahend, out=target)

    def full(self, local: Tensor, work: Tensor) -> Tensor:
        return self._all_gather(local, work)

    def full_rows(self, rows: Tensor) -> Tensor:
        full = rows.new_zeros((rows.shape[0], self.coordinates.total))
        for row in range(rows.shape[0]):
            self._all_gather(rows[row], full[row])
        return full


def make_layout(n: int, numels: list[int], process_group=None, shard_memory: bool = True) -> LocalLayout:
    """The layout of ``n`` coordinates (parameters of sizes ``numels``) for a group."""
    if process_group is None:
        return LocalLayout(make_coordinates(n, 1, 0, False))
    import torch.distributed as dist

    world, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
    coordinates = make_coordinates(n, world, rank, shard_memory)
    if coordinates.sharded:
        return ShardedLayout(process_group, coordinates, numels)
    return ReplicatedLayout(process_group, coordinates)
