"""Several training processes under ``torchrun`` (``torch.distributed``): one process group, the model's
training step wrapped in DistributedDataParallel, a DistributedSampler over the training images, and
rank 0 the only writer of the run folder.

``--batch-size`` stays the global batch: each of N processes takes ``batch / N`` images per step and
DDP averages the gradients, so a step sees the same number of images as one process would and the
learning rate needs no change (N must divide the batch). Training runs on the CPU with the gloo
backend (the models' synthetic-anomaly and sampling code makes CPU tensors; GPU placement with NCCL is
not implemented). BatchNorm statistics are per process (SyncBatchNorm needs GPUs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from edgead.errors import EdgeadError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """The process that writes the run folder, prints and decides."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def join() -> World:
    """The process group torchrun describes in the environment, or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_available():
        raise EdgeadError("this torch build has no torch.distributed; run edgead train without torchrun")
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return World(dist.get_rank(), dist.get_world_size(), dist.get_backend())


def leave(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        dist.barrier()


def gather(world: World, obj) -> list:
    """Every process's ``obj``, in rank order (a list of one without torchrun)."""
    if not world.active:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def local_batch(world: World, batch: int) -> int:
    if batch % world.size:
        raise EdgeadError(f"--batch-size {batch} is the global batch: it must divide by the {world.size} processes "
                          f"(e.g. {batch - batch % world.size or world.size})")
    return batch // world.size


class Step(nn.Module):
    """The model's ``training_step`` as a ``forward``, so DistributedDataParallel sees the call it syncs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor, step: int) -> dict:
        return self.model.training_step(batch, step)


def wrap(world: World, model: nn.Module):
    """The callable that runs one training step: the model itself, or DDP around it under torchrun
    (parameters broadcast from rank 0 at construction; gradients averaged in ``backward``)."""
    if not world.active:
        return model.training_step
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # channels-last gradients do not match DDP's contiguous buckets: a copy, not an error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(Step(model), find_unused_parameters=model.steps_leave_parameters_unused)
