"""Data-parallel training with ``torch.distributed``: one process per device.

Launched by ``torchrun``, which starts N copies of the program and tells each its ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`pyrovae.fit` (and so ``pyrovae fit``) sees that
environment and trains data-parallel:

- rank r uses device ``cuda:LOCAL_RANK`` (NCCL) on GPUs, the CPU (gloo) otherwise;
- ``batch_size`` is the *global* batch: every rank draws the same permutation of the epoch
  and takes its contiguous share of each batch (:meth:`ProcessGroup.shard`), so the run
  makes the same steps, with the same data, as one process with that batch size;
- each rank has its own random stream (seed + rank) for the guide's draws and binarization;
- ``DistributedDataParallel`` around the loss module averages the gradients; a rank whose
  share is smaller weights its loss so that the average is the gradient of the mean over
  the whole batch;
- rank 0 writes the checkpoints, metrics and run.json (with every rank's random state, so a
  resumed run continues each stream exactly); the others wait at a barrier;
- at the end the module and optimizer are deleted, then ``barrier`` and
  ``destroy_process_group``.

    torchrun --nproc_per_node 4 $(which pyrovae) fit --data mnist --batch-size 400 --out runs/dp

See docs/performance.md for several nodes.

>>> launched({"RANK": "0", "WORLD_SIZE": "1"})
False
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist


def launched(environ=None) -> bool:
    """Whether this process is one of several started by ``torchrun`` (or an equivalent
    launcher setting ``RANK`` and ``WORLD_SIZE``)."""
    environ = os.environ if environ is None else environ
    return "RANK" in environ and int(environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class ProcessGroup:
    """This process's place in a data-parallel run.

    :ivar int rank: 0..world_size-1; rank 0 writes the run folder.
    :ivar int world_size: the number of processes.
    :ivar torch.device device: this process's device.
    :ivar bool owned: whether :func:`init` created the default process group (and
        :meth:`close` destroys it).
    """

    rank: int
    world_size: int
    device: torch.device
    owned: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], float]:
        """This rank's contiguous rows of a global batch (views, no copies) and the weight of
        its loss, ``rows * world_size / total``, that makes the averaged gradient that of the
        mean over all rows."""
        total = next(iter(batch.values())).shape[0]
        local = {key: value.tensor_split(self.world_size)[self.rank] for key, value in batch.items()}
        rows = next(iter(local.values())).shape[0]
        return local, rows * self.world_size / total

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the ranks (a new tensor)."""
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @torch.no_grad()
    def copy_from_main(self, tensors) -> None:
        """Overwrite each of ``tensors`` on every rank by rank 0's (in place)."""
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)

    def on_main(self, fn):
        """Run ``fn()`` on rank 0 only and return its result on every rank; an exception it
        raises is raised on every rank (so that none waits for the others forever)."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as caught:  # noqa: BLE001 - re-raised on every rank below
                error = caught
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self) -> None:
        """Wait for every rank, then destroy the process group if :func:`init` created it.
        Delete the DistributedDataParallel module and its optimizer before calling this."""
        self.barrier()
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def init(device: torch.device) -> ProcessGroup:
    """Join (or start, from torchrun's environment) the default process group.

    :param torch.device device: the device asked for: a CUDA device becomes
        ``cuda:LOCAL_RANK`` (backend NCCL), the CPU stays (backend gloo).
    """
    device = torch.device(device)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = False
    if not dist.is_initialized():
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"distributed training needs the environment torchrun sets ({', '.join(missing)} missing): "
                "launch with `torchrun --nproc_per_node N ...`, or call "
                "torch.distributed.init_process_group yourself before fit")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                **({"device_id": device} if device.type == "cuda" else {}))
        owned = True
    return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, owned=owned)


def wrap(module: torch.nn.Module, group: ProcessGroup) -> torch.nn.Module:
    """``DistributedDataParallel`` around a loss module: its gradients are averaged over the
    ranks in the backward pass; rank 0's parameters are copied to every rank first."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    device_ids = [group.device.index] if group.device.type == "cuda" else None
    # the buffers (e.g. a prior's constant loc) need no copy at every forward pass
    buffers = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    return DistributedDataParallel(module, device_ids=device_ids, **{buffers: False})


def wanted(distributed: Optional[bool]) -> bool:
    """``fit(distributed=...)``: None follows the environment (torchrun), True insists."""
    if distributed is None:
        return launched() or (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    if distributed and not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    return bool(distributed)
