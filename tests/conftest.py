"""Shared test helpers: specs with overrides, cached renders, generated projects, emitted scripts run."""

from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from ltgen import place, render, spec

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"


def spec_text(name: str = "demo", overrides: dict[str, Any] | None = None) -> str:
    """The default spec for `name`, with dotted keys set: {"cluster.gpus": 4}."""
    return spec.with_values(spec.default_text(name), overrides or {})


@functools.cache
def _render(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(render.render(spec.parse(text)).items())


def rendered(text: str) -> dict[str, str]:
    """The tree rendered from spec text (cached: rendering takes ~0.4 s)."""
    return dict(_render(text))


def make_project(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Write a project as `ltgen new` does, named after its folder."""
    text = spec_text(path.name, overrides)
    place.write_new(rendered(text), text, path)
    return path


def run_python(
    project: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python ARGS` inside an emitted project; the output is captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        check=False,
    )


def run_dir(out_dir: Path) -> Path:
    """The one run folder in out_dir (train.py writes only in OUT_DIR/RUN/); fails unless there is exactly one."""
    runs = sorted(path for path in out_dir.iterdir() if path.is_dir())
    assert len(runs) == 1, f"expected one run folder in {out_dir}, found {[path.name for path in runs]}"
    return runs[0]


def assert_identical(actual: Any, expected: Any, where: str = "checkpoint") -> None:
    """Every tensor torch.equal, every other value ==, recursively."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), f"{where} differs"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys differ"
        for key in expected:
            assert_identical(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), f"{where}: lengths differ"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_identical(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A private single-node SLURM cluster with 2 GPUs' worth of slots (tests/slurm_cluster.py), shared by every
    test that submits jobs; skipped where SLURM is not installed, unless LTGEN_REQUIRE_SLURM is set."""
    from slurm_cluster import LocalSlurm, unavailable_reason

    reason = unavailable_reason()
    if reason:
        if os.environ.get("LTGEN_REQUIRE_SLURM"):
            pytest.fail(f"SLURM is required here (LTGEN_REQUIRE_SLURM is set) but {reason}")
        pytest.skip(reason)
    started = LocalSlurm.start(tmp_path_factory.mktemp("slurm"), gpus=2)
    yield started
    started.stop()


def import_module(project: Path, name: str = "model") -> ModuleType:
    """The project's NAME.py as a module (its own imports resolved in the project, then forgotten)."""
    sys.path.insert(0, str(project))
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(project))
        sys.modules.pop(name, None)
