"""A regen killed (SIGKILL) at random moments leaves every file wholly old or wholly new, and a
re-run finishes the job: the tree then equals a fresh generation plus the user's edits.

While the regen writes, the test also reads the files it changes, over and over: a reader never
sees a file half-written either."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ltgen import place
from regen_helpers import (
    appending,
    edit_file,
    edit_spec,
    inserting_before,
    ltgen,
    make_project,
    rendered,
    replacing,
    texts,
    tree,
)

EDITS = {
    "model.py": (
        inserting_before("def build_model(", "# mine: a note above the model"),
        appending("\n\ndef mine() -> int:\n    return 1\n"),
    ),
    "steps.py": (
        replacing("return F.cross_entropy(model(images), labels)", "    return F.nll_loss(model(images), labels)"),
    ),
}
SPEC_CHANGE = {
    "trainer.precision": "bf16-mixed",
    "cluster.gpus": 4,  # adds launch/torchrun.sh and changes most files
    "model.arch": "cnn",
    "hooks.emit": ["on_train_epoch_end", "on_fit_end"],
    "checkpoint.save_last": False,  # with save_top_k = 0: removes checkpoint.py
    "checkpoint.save_top_k": 0,
}
ATTEMPTS = 8
MORE_ATTEMPTS = 10  # only if no kill landed while files were being written (a very loaded machine)


def killed_regen(
    project: Path, rng: random.Random, during_writes: bool, watched: list[str]
) -> list[tuple[str, str | None]]:
    """Start `python -m ltgen regen` and SIGKILL it: at a random moment of its run, or a few
    milliseconds after it starts writing (its pending record appears; writing takes ~5 ms).
    While it writes, read the watched files over and over; return what was read."""
    process = subprocess.Popen([sys.executable, "-m", "ltgen", "regen", str(project)], stdout=subprocess.DEVNULL)
    seen = []
    try:
        if during_writes:
            pending = project / place.PENDING_FILE
            while process.poll() is None and not pending.exists():
                pass
            deadline = time.perf_counter() + rng.uniform(0, 0.003)
            while time.perf_counter() < deadline:
                seen += [(relative, place.read_text(project / relative)) for relative in watched]
        else:
            time.sleep(rng.uniform(0, 1.5))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return seen


def test_a_killed_regen_leaves_whole_files_and_a_rerun_completes_it(tmp_path: Path) -> None:
    pristine = make_project(tmp_path / "pristine")
    for relative, changes in EDITS.items():
        edit_file(pristine, relative, *changes)
    spec_text = edit_spec(pristine, SPEC_CHANGE)
    old = texts(pristine)

    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    assert ltgen("regen", reference).exit_code == 0
    new = texts(reference)
    fresh = {
        **rendered(spec_text),
        "ltgen.toml": spec_text,
        place.BASE_FILE: place.base_text(spec_text, rendered(spec_text)),
    }
    for relative, changes in EDITS.items():
        for change in changes:
            fresh[relative] = change(fresh[relative])
    assert new == fresh, "an uninterrupted regen gives a fresh generation plus the edits"
    changed = sorted(relative for relative in old.keys() | new.keys() if old.get(relative) != new.get(relative))
    assert len(changed) >= 6, "the spec change touches many files"

    rng = random.Random(20240611)
    during_writes = 0
    for attempt in range(ATTEMPTS + MORE_ATTEMPTS):
        if attempt >= ATTEMPTS and during_writes:
            break
        project = tmp_path / f"attempt-{attempt}"
        shutil.copytree(pristine, project)
        seen = killed_regen(project, rng, attempt % 2 == 0 or attempt >= ATTEMPTS, changed)
        for relative, text in seen:
            whole = text in (old.get(relative), new.get(relative))
            assert whole, f"attempt {attempt}: {relative} was read half-written"

        now = {relative: data.decode() for relative, data in tree(project).items()}
        pending = now.pop(place.PENDING_FILE, None)
        if pending is not None:
            during_writes += 1
            assert json.loads(pending)["base"]["files"] == rendered(spec_text), "the record is whole"
        leftovers = set(now) - old.keys() - new.keys()
        assert all(name.endswith(place.TEMPORARY_SUFFIX) for name in leftovers), leftovers
        files = {relative: now.get(relative) for relative in old.keys() | new.keys()}
        for relative, text in files.items():
            whole = text in (old.get(relative), new.get(relative))
            assert whole, f"attempt {attempt}: {relative} is neither old nor new"
        if files[place.BASE_FILE] == new[place.BASE_FILE]:
            finished = files == {relative: new.get(relative) for relative in files}
            assert finished, f"attempt {attempt}: the base advanced before every file was written"

        rerun = ltgen("regen", project)
        assert rerun.exit_code == 0, f"attempt {attempt}: {rerun.output}"
        assert texts(project) == new, f"attempt {attempt}: the re-run finishes the job"
    assert during_writes, "some kills landed while the regen was writing files"
