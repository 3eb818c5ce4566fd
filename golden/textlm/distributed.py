"""DDP set-up: one process per GPU (or several on the CPU, with gloo) under torchrun; plain `python train.py`
still runs as a single process."""

import gc
import os

import torch
import torch.distributed as dist


def setup(device: str) -> tuple[int, int, torch.device]:
    """Join the process group if torchrun started us; return (rank, world size, this process's device)."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    if "RANK" not in os.environ:  # plain `python train.py`: a single process
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        return rank, world_size, device
    dist.init_process_group("gloo")
    return rank, world_size, torch.device("cpu")


def print0(*args: object) -> None:
    """print, on rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args)


def leave_process_group() -> None:
    """Leave the process group, if torchrun started us. The caller drops its DDP wrapper first: one still alive
    (it sits in reference cycles) is destroyed at the exit, after the group, and can abort the process."""
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
