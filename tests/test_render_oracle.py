"""The render oracle (tests/render_oracle.py): 300 random valid specs render to exactly the files they rendered to
when their digests were last written on purpose. A change to the generator or the templates that is meant to keep
the emitted code must keep all of them; one that is meant to change it rewrites the digests
(`python tests/render_oracle.py`) in the same commit as the goldens.

The same 300 renders also show that every checkpoint entry train.py restores on resume is one it saves, and the
other way round: an entry saved under one condition and read under another (as FSDP's schedulers once were)
fails here for the spec that has it."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from ltgen import render, spec
from render_oracle import DIGESTS, SPECS

SPEC_LIST = json.loads(SPECS.read_text())
# Saved for other readers than resume: the settings and data (check_compatible, predict.py), and FSDP's folder.
NOT_RESTORED = {"config", "data_info"}


def render_spec(overrides: dict) -> dict[str, str]:
    return render.render(spec.parse(spec.with_values(spec.default_text("oracle"), overrides)))


@pytest.fixture(scope="module")
def trees() -> list[dict[str, str]]:
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(render_spec, SPEC_LIST, chunksize=10))


def test_the_oracle_holds_a_few_hundred_distinct_specs() -> None:
    digests = json.loads(DIGESTS.read_text())
    assert len(SPEC_LIST) == len(digests) >= 300
    assert len({json.dumps(d["train.py"]) for d in digests}) >= 290, "the specs should give distinct loops"


def test_every_oracle_spec_renders_to_the_recorded_bytes(trees: list[dict[str, str]]) -> None:
    expected = json.loads(DIGESTS.read_text())
    differing = []
    for index, (want, tree) in enumerate(zip(expected, trees)):
        got = {path: hashlib.sha256(text.encode()).hexdigest() for path, text in tree.items()}
        if want != got:
            paths = sorted(path for path in set(want) | set(got) if want.get(path) != got.get(path))
            differing.append(f"spec {index} {json.dumps(SPEC_LIST[index], sort_keys=True)}: {', '.join(paths)}")
    assert not differing, f"{len(differing)} of {len(trees)} specs render differently:\n" + "\n".join(differing[:20])


def saved_and_restored(train_py: str) -> tuple[set[str], set[str]]:
    """The keys of save_checkpoint's state dict, and the keys main() reads back from a loaded checkpoint
    (`state[...]`, `state.get(...)`, and `found[0]` read before the model is built)."""
    tree = ast.parse(train_py)
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    save = next(node for node in ast.walk(main) if isinstance(node, ast.FunctionDef) and node.name == "save_checkpoint")
    state_dict = next(
        node.value for node in save.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
    )
    saved = {key.value for key in state_dict.keys}
    restored = set()
    inside_save = {id(node) for node in ast.walk(save)}
    for node in ast.walk(main):
        if id(node) in inside_save:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            holder = ast.unparse(node.value)
            if holder in ("state", "found[0]"):
                restored.add(node.slice.value)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("state.get", "found[0].get"):
            restored.add(node.args[0].value)
    return saved, restored


def test_every_checkpoint_entry_that_is_restored_is_saved_and_every_saved_one_is_restored(
    trees: list[dict[str, str]],
) -> None:
    checked, mismatched = 0, []
    for index, tree in enumerate(trees):
        if "--resume" not in tree["train.py"]:
            continue  # no save_last: nothing is ever restored
        saved, restored = saved_and_restored(tree["train.py"])
        checked += 1
        if restored != saved - NOT_RESTORED:
            mismatched.append(
                f"spec {index}: saved only {saved - NOT_RESTORED - restored}, read only {restored - saved}"
            )
    assert checked >= 200
    assert not mismatched, "\n".join(mismatched[:10])


def test_every_oracle_spec_renders_code_ruff_passes(trees: list[dict[str, str]], tmp_path: Path) -> None:
    """Ruff in each project's own settings: no unused value (one computed for a feature that is off), no
    undefined name (one a feature that is off would have defined), no import left over, across 300 combinations."""
    for index, tree in enumerate(trees):
        for path, text in tree.items():
            (tmp_path / str(index) / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / str(index) / path).write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_every_option_train_py_reads_is_one_it_defines(trees: list[dict[str, str]]) -> None:
    """`args.X` only for an X that parse_args adds (a feature that is off must not leave a read of its flag)."""
    undefined = []
    for index, tree in enumerate(trees):
        module = ast.parse(tree["train.py"])
        defined = {
            node.args[0].value.removeprefix("--").replace("-", "_")
            for node in ast.walk(module)
            # the parser's, or a group's of it (the finders' mutually exclusive flags)
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(".add_argument")
        }
        read = {
            node.attr
            for node in ast.walk(module)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args"
        }
        if read - defined:
            undefined.append(f"spec {index}: reads {sorted(read - defined)} but defines only {sorted(defined)}")
    assert not undefined, "\n".join(undefined[:10])
