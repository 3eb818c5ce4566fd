"""torch.profiler over a few training steps (--profile N)."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean

KEYS: dict[str, dict[str, Key]] = {
    "debug": {
        "profiler": Key(boolean, False, "emit --profile N: torch.profiler over N training steps (trace and op table)")
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"profiler": values["debug"]["profiler"]}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"profiler": f["profiler"]}


def imports(f: dict[str, Any]) -> list[str]:
    # the profile's folder is a Path also where no run folders (and so no Path) are otherwise imported
    return ["from pathlib import Path"] if f["profiler"] else []
