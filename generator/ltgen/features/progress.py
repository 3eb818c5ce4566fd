"""The tqdm progress bar."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean
from ltgen.unit import Field

KEYS: dict[str, dict[str, Key]] = {"logging": {"progress_bar": Key(boolean, True, "a tqdm bar per epoch")}}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"progress_bar": values["logging"]["progress_bar"]}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {
        "progress": f["progress_bar"],
        "timer": f["progress_bar"] or f["throughput"],  # steps per second since the last logging step
        "plain_log": not f["progress_bar"] and not f["loggers"],  # else the loss would be nowhere
    }


def imports(f: dict[str, Any]) -> list[str]:
    return ["import sys", "import time", "from tqdm import tqdm"] if f["progress_bar"] else []


def fields(f: dict[str, Any]) -> list[Field]:
    return [Field("progress_bar", "logging.progress_bar", "bool")] if f["progress_bar"] else []
