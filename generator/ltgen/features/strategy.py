"""Distributed training: GPUs and nodes, and the strategy across them (DDP, or FSDP2 sharding)."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean, choice, integer
from ltgen.features.precision import AMP_DTYPES
from ltgen.unit import Entry, whole

KEYS: dict[str, dict[str, Key]] = {
    "cluster": {
        "gpus": Key(integer(0, 1024), 1, "GPUs per node; more than 1 (or more nodes) trains distributed, by strategy"),
        "nodes": Key(integer(1, 100000), 1, "machines"),
        "strategy": Key(
            choice("ddp", "fsdp"),
            "ddp",
            '"ddp": a model copy per GPU | "fsdp": parameters, gradients and optimizer state sharded (FSDP2)',
        ),
        "fsdp_cpu_offload": Key(boolean, False, "fsdp: keep the sharded parameters and optimizer state in CPU memory"),
    }
}


def distributed(values: dict[str, dict[str, Any]]) -> bool:
    """Whether the spec trains in several processes: more than one GPU or node, or under SLURM."""
    cluster = values["cluster"]
    return cluster["gpus"] > 1 or cluster["nodes"] > 1 or values["cluster.slurm"]["enabled"]


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """What FSDP needs, and what it does not support (yet)."""
    cluster = values["cluster"]
    fsdp = cluster["strategy"] == "fsdp"
    out = []
    if fsdp and not distributed(values):
        out.append(("cluster.strategy", '"fsdp" shards across processes: set gpus > 1, nodes > 1 or slurm'))
    if fsdp and values["model"]["arch"] == "gan":
        out.append(("cluster.strategy", '"fsdp" does not support arch = "gan" (two models) yet: use "ddp"'))
    if fsdp and values["model"]["arch"] == "timm":
        out.append(
            ("cluster.strategy", '"fsdp" does not support arch = "timm" yet (its blocks vary by model): use "ddp"')
        )
    if fsdp and values["trainer"]["compile"]:
        out.append(("trainer.compile", 'expected false with strategy = "fsdp" (not supported together yet)'))
    if cluster["fsdp_cpu_offload"] and not fsdp:
        out.append(("cluster.fsdp_cpu_offload", 'needs strategy = "fsdp"'))
    return out


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One process, or several: DDP's replicas or FSDP2's shards."""
    cluster, several = values["cluster"], distributed(values)
    fsdp = several and cluster["strategy"] == "fsdp"
    return {
        "distributed": several,
        "ddp": several and not fsdp,
        # FSDP2 shards the model in place (no wrapper); its checkpoints are folders of shards, not .pt files.
        "fsdp": fsdp,
        "fsdp_cpu_offload": fsdp and cluster["fsdp_cpu_offload"],
        "fsdp_param_dtype": AMP_DTYPES[values["trainer"]["precision"]] if fsdp else "",  # cast once per gather
        "ckpt_ext": "" if fsdp else ".pt",
        "gpus": cluster["gpus"],
        "gpus_per_node": max(1, cluster["gpus"]),  # processes per node: one per GPU, or one on the CPU
        "nodes": cluster["nodes"],
    }


def paste(f: dict[str, Any]) -> dict[str, Any]:
    every_rank = ". Every rank must call this: it gathers their random states" if f["distributed"] else ""
    return {
        "say": "print0" if f["distributed"] else "print",
        "save_doc": "Save the whole training state as ckpt_dir/name"
        + ("/, a folder of every rank's shards. Every rank must call this" if f["fsdp"] else every_rank)
        + ".",
        "shard_options": (f", param_dtype={_param_dtype(f)}" if f["fsdp_param_dtype"] else "")
        + (", cpu_offload=True" if f["fsdp_cpu_offload"] else ""),
    }


def _param_dtype(f: dict[str, Any]) -> str:
    """FSDP's compute dtype: the autocast dtype, which for 16-mixed is float16 on a GPU only (bf16 on the CPU)."""
    if f["grad_scaler"]:
        return 'torch.float16 if device.type == "cuda" else torch.bfloat16'
    return f["fsdp_param_dtype"]


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {
        "single": not f["distributed"],
        "distributed": f["distributed"],
        "ddp": f["ddp"],
        "fsdp": f["fsdp"],
        "whole_model": not f["fsdp"],
    }


def imports(f: dict[str, Any]) -> list[str]:
    lines = ["import torch.distributed as dist", "from distributed import end_process, print0, setup"]
    lines = lines if f["distributed"] else []
    lines += ["from torch.nn.parallel import DistributedDataParallel"] if f["ddp"] else []
    lines += ["from distributed import shard", "from model import fsdp_blocks"] if f["fsdp"] else []
    lines += ["from torch.distributed.tensor import DTensor"] if f["fsdp"] and f["grad_norm"] else []
    return lines


def state(f: dict[str, Any]) -> list[Entry]:
    # FSDP's model (and optimizer) state go through its sharded checkpoint folder instead.
    return [] if f["fsdp"] else [whole("model", f["raw"])]
