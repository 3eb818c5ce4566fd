"""Golden trees: golden/NAME/ is exactly what `ltgen new NAME --spec golden/NAME/ltgen.toml` writes.

A change to the emitted code shows up here as a diff. When it is intended, rewrite them with
`python tests/update_golden.py` and read `git diff golden/` before committing.
"""

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GOLDEN, run_python
from update_golden import generate

NAMES = sorted(p.name for p in GOLDEN.iterdir() if (p / "ltgen.toml").is_file())


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_reference_specs_are_all_there() -> None:
    assert {"mnist", "demo", "minimal", "cifar10", "textlm", "tabular"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_generation_matches_the_golden_tree_byte_for_byte(name: str, tmp_path: Path) -> None:
    expected, actual = files_of(GOLDEN / name), files_of(generate(name, tmp_path))
    assert sorted(actual) == sorted(expected), "the set of files differs"
    diffs = []
    for path in expected:
        if actual[path] != expected[path]:
            old, new = expected[path].decode().splitlines(True), actual[path].decode().splitlines(True)
            diffs += difflib.unified_diff(old, new, f"golden/{name}/{path}", f"generated/{name}/{path}")
    assert not diffs, "generated code differs from golden/ (python tests/update_golden.py rewrites it):\n" + "".join(
        diffs
    )


@pytest.mark.parametrize("name", NAMES)
def test_golden_project_passes_its_own_smoke_test(name: str) -> None:
    result = run_python(GOLDEN / name, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("tool", [["black", "--check", "."], ["ruff", "check", "--no-cache", "."]])
@pytest.mark.parametrize("name", NAMES)
def test_golden_project_is_black_and_ruff_clean(name: str, tool: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *tool], cwd=GOLDEN / name, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
