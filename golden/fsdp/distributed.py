"""FSDP set-up: one process per GPU (or several on the CPU, with gloo) under torchrun; plain `python train.py`
still runs as a single process."""

import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

import flags


def setup(device: str) -> tuple[int, int, torch.device]:
    """Join the process group if torchrun started us; return (rank, world size, this process's device)."""
    single = "RANK" not in os.environ  # plain `python train.py`, not torchrun
    if device == "mps" and not single:
        raise SystemExit(
            "--device mps runs a single process (torch.distributed cannot use an Apple GPU): "
            "run `python train.py --device mps`, or torchrun with --device cpu"
        )
    chosen = flags.choose_device(device, mps=single)  # torch.distributed has no backend for an Apple GPU
    if single:
        return 0, 1, chosen
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if chosen.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        return rank, world_size, device
    dist.init_process_group("gloo")
    return rank, world_size, torch.device("cpu")


def shard(model: nn.Module, blocks: list[nn.Module]) -> None:
    """FSDP2: shard each block, then the rest of the model, across the ranks (in place: its parameters become
    DTensors, each rank holding 1/world_size of every one). In a forward pass a block's full weights are gathered
    just before it runs and freed after it; gradients are reduce-scattered back to the shards.
    A single process (plain `python train.py`) has nothing to shard and trains the model as it is."""
    if not dist.is_initialized():
        return
    options = {}
    for block in blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)  # the root: every parameter not in a block (embeddings, the output layer)


def print0(*args: object) -> None:
    """print, on rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args)


def end_process(status: int | str | None = 0) -> NoReturn:
    """End this process as `raise SystemExit(status)` would; under torchrun, leave the process group first.

    A rank ends with os._exit, skipping Python's shutdown: torch's DTensor internals keep the group's
    communication threads alive past destroy_process_group, and one that lets go of a tensor while Python shuts
    down aborts the process (SIGABRT: a finished job reported as failed). So atexit handlers do not run here:
    close what you open (a writer, a wandb run) before calling this."""
    if not dist.is_initialized():
        raise SystemExit(status)
    dist.destroy_process_group()
    if isinstance(status, str):
        print(status, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if isinstance(status, str) else status or 0)
