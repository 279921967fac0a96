"""Several training processes under ``torchrun`` (``torch.distributed``): one process group, the model's
training step wrapped in DistributedDataParallel, a DistributedSampler over the training images, and
rank 0 the only writer of the run folder.

``--batch-size`` stays the global batch: each of N processes takes ``batch / N`` images per step and
DDP averages the gradients, so a step sees the same number of images as one process would and the
learning rate needs no change (N must divide the batch). The device (``--device``): ``auto`` takes the
GPU of the process's local rank when CUDA is there (one GPU per process, the NCCL backend), else the
CPU (gloo). BatchNorm statistics are per process; the only BatchNorm layers trained are CRR's, and
its per-process statistics are kept as a single process would keep them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from edgead.errors import EdgeadError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    backend: str | None = None
    device: str = "cpu"  # where this process trains: cpu, or cuda:<local rank>

    @property
    def main(self) -> bool:
        """The process that writes the run folder, prints and decides."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def pick_device(requested: str = "auto") -> str:
    """``cpu`` or ``cuda:<local rank>`` for ``--device auto|cpu|cuda`` (cuda without a GPU is an error)."""
    if requested not in DEVICES:
        raise EdgeadError(f"--device {requested!r}: choose {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise EdgeadError("--device cuda: torch sees no CUDA GPU here (this torch build or driver has none); "
                          "use --device cpu")
    if requested == "cpu" or not cuda:
        return "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise EdgeadError(f"local rank {local} has no GPU ({torch.cuda.device_count()} here): start at most that many "
                          f"processes per node (--nproc / torchrun --nproc_per_node)")
    return f"cuda:{local}"


def join(requested: str = "auto") -> World:
    """The process group torchrun describes in the environment, or a world of one, with this process's device:
    NCCL between GPUs (one per process, by local rank), gloo between CPU processes."""
    one = World(device=pick_device(requested))
    if one.cuda:
        torch.cuda.set_device(torch.device(one.device))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return one
    import torch.distributed as dist

    if not dist.is_available():
        raise EdgeadError("this torch build has no torch.distributed; run edgead train without torchrun")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if one.cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), dist.get_backend(), one.device)


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
    gpu = [torch.device(world.device).index] if world.cuda else None
    return DistributedDataParallel(Step(model), device_ids=gpu,
                                   find_unused_parameters=model.steps_leave_parameters_unused)


def rng_state(world: World) -> dict:
    """This process's random state: the CPU generator's, and its GPU's when it trains on one."""
    state = {"cpu": torch.get_rng_state()}
    if world.cuda:
        state["cuda"] = torch.cuda.get_rng_state(torch.device(world.device))
    return state


def set_rng_state(world: World, state) -> None:
    """Back to a state of ``rng_state`` (or a bare CPU state, as checkpoints before GPU training held it)."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if world.cuda and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], torch.device(world.device))
