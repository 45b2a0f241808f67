"""Where a run's work happens: one process, or P data-parallel ranks on torch.distributed.

The runner trains through one of these layout objects and never asks "am I distributed?":

* :class:`SingleProcess` is today's run: every method is the identity or a no-op.
* :class:`DataParallel` is one rank of P. Every rank draws the same seeded global
  minibatch and keeps rows ``[r b/P, (r+1) b/P)`` of it, so the global minibatches are
  those of the 1-rank run and epochs-to-target compare across P. The model is wrapped in
  ``DistributedDataParallel`` (gradients averaged during backward); evaluation splits the
  test set across ranks and all-reduces (loss sum, wrong, count).

Batch norm: on CUDA the model's BN layers become ``SyncBatchNorm``, so the trained
function is the 1-rank large-batch one. ``SyncBatchNorm`` refuses CPU tensors, so CPU
(gloo) runs normalise with per-rank batch statistics (each rank's b/P rows); the running
statistics are averaged over the ranks before each evaluation (for the running mean that
equals the 1-rank value, the mean of equal shards' means being the batch mean; the running
variance misses the spread between shards). ``run.json`` says which applies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def rows(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows ``[lo, hi)`` of ``count`` split into ``world_size`` balanced parts."""
    return rank * count // world_size, (rank + 1) * count // world_size


def _batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's option to leave buffers alone in forward (renamed in newer torch)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}  # still syncs once at init: the buffers start equal
    return {"broadcast_buffers": False}


class SingleProcess:
    """One process does everything (``ranks: 1``)."""

    world_size = 1
    rank = 0
    backend: str | None = None
    group: Any = None
    is_writer = True

    def shard(self, index: Tensor) -> Tensor:
        """This rank's part of a global minibatch's row indices."""
        return index

    def local_rows(self, count: int) -> tuple[int, int]:
        return 0, count

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to call in training (DDP around ``model`` when distributed)."""
        return model

    def sum(self, values: Tensor) -> Tensor:
        """The sum of ``values`` over the ranks (a copy; the input is left alone)."""
        return values.clone()

    def average(self, loss: Tensor) -> Tensor:
        """The mean of a scalar loss over the ranks, detached."""
        return loss.detach()

    def gather(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order."""
        return [value]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        return value

    def barrier(self) -> None:
        pass

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (so every rank takes the same branch)."""
        return flag

    def before_evaluation(self, model: nn.Module) -> None:
        """Make what evaluation reads (batch-norm running statistics) equal on every rank."""

    def batch_norm_mode(self, model: nn.Module, device: torch.device) -> str | None:
        return "batch statistics of the whole minibatch" if _batch_norm_layers(model) else None

    def describe(self) -> dict[str, Any]:
        return {"world_size": 1, "rank_of_writer": 0, "backend": None}


class DataParallel(SingleProcess):
    """This process as one rank of an initialised ``torch.distributed`` process group."""

    is_writer = False

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("DataParallel needs torch.distributed.init_process_group first")
        self.dist = dist
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.backend = str(dist.get_backend(group))
        self.is_writer = self.rank == 0
        self._sync_batch_norm = False

    def _device(self) -> torch.device:
        # NCCL collectives need CUDA tensors; gloo takes CPU ones
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def shard(self, index: Tensor) -> Tensor:
        lo, hi = rows(len(index), self.rank, self.world_size)
        return index[lo:hi]

    def local_rows(self, count: int) -> tuple[int, int]:
        return rows(count, self.rank, self.world_size)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            # convert_sync_batchnorm returns a new module only for a bare BN; the runner's
            # models hold their BN layers inside, so the conversion happens in place
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=self.group)
            if converted is not model:
                raise RuntimeError("the model is a bare batch-norm layer; wrap it in a container")
            self._sync_batch_norm = bool(_batch_norm_layers(model))
            return DistributedDataParallel(model, device_ids=[device], process_group=self.group, **_no_buffer_sync())
        # no buffer sync in forward: batch-norm running statistics stay per rank and are
        # averaged before evaluation (before_evaluation), not overwritten by rank 0's
        return DistributedDataParallel(model, process_group=self.group, **_no_buffer_sync())

    def sum(self, values: Tensor) -> Tensor:
        out = values.detach().to(self._device(), copy=True)
        self.dist.all_reduce(out, group=self.group)
        return out.to(values.device)

    def average(self, loss: Tensor) -> Tensor:
        total = self.sum(loss.detach().to(torch.float64).reshape(1))
        return (total[0] / self.world_size).to(loss.dtype)

    def gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, value, group=self.group)
        return out

    def broadcast(self, value: Any) -> Any:
        box = [value if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        # a tiny all-reduce rather than dist.barrier(): it honours the group's timeout on
        # every backend and needs no device guess on NCCL
        self.sum(torch.zeros(1))

    def any_rank(self, flag: bool) -> bool:
        return bool(self.sum(torch.tensor([1.0 if flag else 0.0]))[0] > 0)

    def before_evaluation(self, model: nn.Module) -> None:
        if self._sync_batch_norm:
            return  # SyncBatchNorm's running statistics are already global
        for layer in _batch_norm_layers(model):
            for buffer in (layer.running_mean, layer.running_var):
                if buffer is not None:
                    with torch.no_grad():
                        buffer.copy_(self.sum(buffer) / self.world_size)

    def batch_norm_mode(self, model: nn.Module, device: torch.device) -> str | None:
        if not _batch_norm_layers(model):
            return None
        if device.type == "cuda":
            return "SyncBatchNorm: batch statistics of the whole global minibatch"
        return (
            "per-rank batch statistics (SyncBatchNorm needs CUDA): each rank normalises its own "
            f"1/{self.world_size} of the minibatch; running statistics averaged over ranks before evaluation"
        )

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "rank_of_writer": 0, "backend": self.backend}
