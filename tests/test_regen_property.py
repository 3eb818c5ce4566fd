"""Property: whatever lines a user edits, inserts or deletes, and whatever the spec change, regen
keeps every line the user wrote, says 1 exactly when it leaves a conflict, and brings every file
the user did not touch to what a fresh `ltgen new` with the new spec writes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ltgen import merge, place
from ltgen.spec import default_text, with_values
from regen_helpers import ltgen, rendered, tree

START: dict[str, Any] = {"cluster.gpus": 2}
SPEC_CHANGES: list[dict[str, Any]] = [
    {},
    {"trainer.precision": "bf16-mixed"},
    {"early_stopping.enabled": True},
    {"hooks.emit": ["on_train_epoch_end"]},
    {"cluster.gpus": 1},
    {"cluster.gpus": 8, "data.dataset": "synthetic"},
    {"model.arch": "cnn", "logging.tensorboard": False},
    {"optim.optimizer": "sgd", "trainer.precision": "16-mixed"},
    {"checkpoint.save_last": False, "checkpoint.save_top_k": 0},
    {"model.arch": "cnn", "hooks.emit": ["on_fit_start", "on_train_batch_end"], "early_stopping.enabled": True},
]
LINE_EDITS = st.lists(
    st.tuples(st.sampled_from(["insert", "change", "delete"]), st.floats(0, 1, exclude_max=True)),
    min_size=1,
    max_size=6,
)


def edit_lines(text: str, edits: list[tuple[str, float]], tag: str) -> tuple[str, set[str]]:
    """Apply line edits at relative positions; return the text and the lines the user wrote that remain."""
    lines, written = text.splitlines(keepends=True), set()
    for number, (kind, where) in enumerate(edits):
        mine = f"# {tag}: user line {number}\n"
        if kind == "insert":
            at = int(where * (len(lines) + 1))
            lines.insert(at, mine)
            written.add(mine)
            continue
        if not lines:
            continue
        at = int(where * len(lines))
        written.discard(lines[at])
        if kind == "change":
            lines[at] = lines[at].rstrip("\n") + f"  # {tag}: user change {number}\n"
            written.add(lines[at])
        else:
            del lines[at]
    return "".join(lines), {line.rstrip("\n") for line in written}


def has_conflict(project: Path) -> bool:
    return any(merge.CONFLICT_START in data.decode().splitlines() for data in tree(project).values())


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), change=st.sampled_from(SPEC_CHANGES))
def test_regen_keeps_every_user_line_and_brings_untouched_files_to_a_fresh_generation(
    data: st.DataObject, change: dict[str, Any]
) -> None:
    old_spec = with_values(default_text("demo"), START)
    old = rendered(old_spec)
    files = data.draw(st.lists(st.sampled_from(sorted(old)), unique=True, min_size=1, max_size=5), label="edited files")
    deleted = data.draw(st.sets(st.sampled_from(sorted(old)), max_size=1), label="deleted files") - set(files)
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "demo"
        place.write_new(old, old_spec, project)
        written: dict[str, set[str]] = {}
        edited: dict[str, str] = {}
        for relative in files:
            text, written[relative] = edit_lines(old[relative], data.draw(LINE_EDITS, label=relative), relative)
            (project / relative).write_text(text)
            edited[relative] = text
        for relative in deleted:
            (project / relative).unlink()
        new_spec = with_values(old_spec, change)
        (project / "ltgen.toml").write_text(new_spec)
        new = rendered(new_spec)

        result = ltgen("regen", project)

        assert result.exit_code in (0, 1), result.output
        event(f"exit {result.exit_code}")  # pytest --hypothesis-show-statistics: how often each case came up
        for outcome in merge.Outcome:
            if f"  {outcome.value} " in result.output:
                event(outcome.value)
        assert (result.exit_code == 1) == has_conflict(project), result.output
        for relative, lines in written.items():
            assert lines <= set((project / relative).read_text().splitlines()), f"a user line of {relative} was lost"
            if old[relative] == new.get(relative):
                assert (project / relative).read_text() == edited[relative], "an edit the spec change didn't touch"
        for relative in (old.keys() | new.keys()) - set(files):
            path = project / relative
            on_disk = path.read_text() if path.exists() else None
            assert on_disk == (None if relative in deleted else new.get(relative)), f"{relative} is not as generated"
        assert (project / "ltgen.toml").read_text() == new_spec
        assert place.read_base(project).files == new

        if result.exit_code == 0:
            before = tree(project)
            again = ltgen("regen", project)
            assert again.exit_code == 0 and tree(project) == before, again.output
