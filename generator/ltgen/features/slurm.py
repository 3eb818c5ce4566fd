"""SLURM: an sbatch script that checkpoints before the time limit and requeues the job."""

from __future__ import annotations

from typing import Any

from ltgen.checks import (
    SLURM_TIME_PATTERN,
    SLURM_WORD_PATTERN,
    Key,
    boolean,
    choice,
    integer,
    only_with,
    text,
    word_list,
)

ENABLED = (only_with("cluster.slurm.enabled", True, where="when the SLURM launcher is enabled"),)

KEYS: dict[str, dict[str, Key]] = {
    "cluster.slurm": {
        "enabled": Key(boolean, False, "emit launch/slurm.sbatch with walltime auto-requeue"),
        "partition": Key(
            text(SLURM_WORD_PATTERN, "a partition name", empty_ok=True), "", "empty: the cluster's default", ENABLED
        ),
        "time": Key(
            text(SLURM_TIME_PATTERN, 'a SLURM time limit such as "04:00:00" or "2-00:00:00"'),
            "04:00:00",
            "the job's time limit",
            ENABLED,
        ),
        "cpus_per_task": Key(integer(1, 4096), 8, "CPUs for each node's task (all its GPU processes)", ENABLED),
        "requeue_signal": Key(
            choice("USR1", "USR2"), "USR2", "sent before the time limit: checkpoint, then requeue", ENABLED
        ),
        "signal_seconds": Key(integer(10, 3600), 120, "how long before the time limit the signal comes", ENABLED),
        "sbatch_options": Key(word_list, [], 'extra #SBATCH options, e.g. ["--mem=64G", "--account=lab"]', ENABLED),
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    slurm = values["cluster.slurm"]
    return {
        "slurm": slurm["enabled"],
        "slurm_partition": slurm["partition"],
        "slurm_time": slurm["time"],
        "slurm_cpus_per_task": slurm["cpus_per_task"],
        "requeue_signal": slurm["requeue_signal"],
        "signal_seconds": slurm["signal_seconds"],
        "sbatch_options": list(slurm["sbatch_options"]),
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"slurm": f["slurm"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import os"] if f["slurm"] else []


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """A requeued job resumes from last.pt."""
    if values["cluster.slurm"]["enabled"] and not values["checkpoint"]["save_last"]:
        return [("cluster.slurm.enabled", "requeues the job to resume from last.pt: needs checkpoint.save_last = true")]
    return []
