"""`ltgen regen` and `ltgen diff`: every outcome, conflicts, refusals, interruptions, as a user meets them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltgen import __version__, merge, place, render
from ltgen.cli import app
from regen_helpers import (
    appending,
    edit_file,
    edit_spec,
    inserting_before,
    line_with,
    ltgen,
    make_project,
    mtimes,
    rendered,
    replacing,
    texts,
    tree,
)

SMOOTHED = "    return F.cross_entropy(model(images), labels, label_smoothing=0.1)  # mine"
TRAINING_LOSS = replacing("return F.cross_entropy(model(images), labels)", SMOOTHED)
MODEL_NOTE = inserting_before("def build_model(", "# mine: try a wider first layer next")
MODEL_HELPER = appending('\n\ndef my_helper() -> int:\n    """Mine."""\n    return 42\n')
CONFLICT_START, CONFLICT_END = merge.CONFLICT_START, merge.CONFLICT_END


def fresh_tree(spec_text: str) -> dict[str, str]:
    """What `ltgen new` writes for spec_text, file by file."""
    files = rendered(spec_text)
    return {**files, "ltgen.toml": spec_text, place.BASE_FILE: place.base_text(spec_text, files)}


def outcome_lines(output: str) -> list[str]:
    """The summary's per-file lines: '  updated   train.py'."""
    return [line for line in output.splitlines() if line[2:].split(" ")[0] in set(merge.Outcome) and line[:2] == "  "]


def optimizer_line(text: str) -> str:
    return line_with(text, "optimizer = torch.optim.")


def resolve(path: Path, resolution: str) -> None:
    """Resolve the conflict block in a file as a user would: replace it, markers and all."""
    lines = path.read_text().splitlines(keepends=True)
    first, last = lines.index(CONFLICT_START + "\n"), lines.index(CONFLICT_END + "\n")
    path.write_text("".join(lines[:first] + [resolution] + lines[last + 1 :]))


# --- the outcomes --------------------------------------------------------------------------------


def test_unchanged_spec_and_no_edits_rewrite_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    before, times = tree(project), mtimes(project)
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "Nothing changed" in result.output
    assert tree(project) == before
    assert mtimes(project) == times, "no file (nor folder) was touched"


def test_a_spec_change_makes_untouched_files_equal_a_fresh_generation(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    text = edit_spec(project, {"trainer.precision": "bf16-mixed"})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "  updated   train.py" in outcome_lines(result.output)
    assert texts(project) == fresh_tree(text)

    before, times = tree(project), mtimes(project)
    again = ltgen("regen", project)
    assert again.exit_code == 0 and "Nothing changed" in again.output
    assert (tree(project), mtimes(project)) == (before, times), "a second regen is a no-op, byte for byte"


def test_edits_and_spec_changes_in_the_same_files_merge(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    edit_file(project, "steps.py", TRAINING_LOSS)
    edit_file(project, "model.py", MODEL_NOTE, MODEL_HELPER)
    text = edit_spec(project, {"optim.optimizer": "sgd", "model.arch": "cnn"})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert {"  merged    model.py", "  merged    steps.py"} <= set(outcome_lines(result.output))
    expected = fresh_tree(text)
    expected["steps.py"] = TRAINING_LOSS(expected["steps.py"])
    expected["model.py"] = MODEL_HELPER(MODEL_NOTE(expected["model.py"]))
    assert texts(project) == expected
    assert "torch.optim.SGD(" in expected["steps.py"] and "nn.Conv2d(" in expected["model.py"]


def test_an_edit_the_spec_change_also_touches_conflicts_and_loses_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    generated = optimizer_line((project / "steps.py").read_text())
    mine = generated.replace("lr=lr", "lr=lr * 2") + "  # tuned"
    edit_file(project, "steps.py", replacing("optimizer = torch.optim.", mine))
    text = edit_spec(project, {"optim.betas": [0.9, 0.95]})  # the spec changes that same line
    result = ltgen("regen", project)

    assert result.exit_code == 1, result.output
    assert "  conflict  steps.py (1 conflict)" in outcome_lines(result.output)
    assert "Conflicts in steps.py" in result.output
    regenerated = optimizer_line(rendered(text)["steps.py"])
    block = [CONFLICT_START, mine, f"||||||| {merge.BASE_LABEL}", generated, "=======", regenerated, CONFLICT_END]
    lines = (project / "steps.py").read_text().splitlines()
    start = lines.index(CONFLICT_START)
    assert lines[start : start + len(block)] == block
    assert place.read_base(project).files == rendered(text), "the new render is the base now"


def test_regen_refuses_while_conflict_markers_remain_and_resolved_hunks_stay_resolved(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    mine = optimizer_line((project / "steps.py").read_text()) + "  # tuned"
    edit_file(project, "steps.py", replacing("optimizer = torch.optim.", mine))
    edit_spec(project, {"optim.optimizer": "sgd"})
    assert ltgen("regen", project).exit_code == 1

    before, times = tree(project), mtimes(project)
    for command in ("regen", "diff"):
        refused = ltgen(command, project)
        assert refused.exit_code == 2, refused.output
        start = (project / "steps.py").read_text().splitlines().index(CONFLICT_START) + 1
        assert f"conflict markers from the last regen remain in steps.py:{start}," in refused.output
        assert (tree(project), mtimes(project)) == (before, times)

    resolution = mine.replace("AdamW", "SGD") + "\n"
    resolve(project / "steps.py", resolution)
    after = ltgen("regen", project)
    assert after.exit_code == 0 and "Nothing changed" in after.output, after.output

    text = edit_spec(project, {"hooks.emit": ["on_train_epoch_end"]})
    later = ltgen("regen", project)
    assert later.exit_code == 0, later.output
    assert "  merged    steps.py" in outcome_lines(later.output)
    regenerated = rendered(text)["steps.py"]
    assert "def on_train_epoch_end(" in regenerated
    assert (project / "steps.py").read_text() == regenerated.replace(optimizer_line(regenerated) + "\n", resolution)


def test_equal_signs_and_foreign_markers_in_code_are_not_taken_for_a_conflict(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    banner = '\n\nBANNER = """\n<<<<<<< HEAD\n=======\n>>>>>>> main\n"""\n'
    edit_file(project, "steps.py", appending(banner))
    edit_spec(project, {"optim.optimizer": "sgd"})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert banner in (project / "steps.py").read_text()
    assert ltgen("regen", project).exit_code == 0


def test_a_newly_rendered_file_is_added(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    text = edit_spec(project, {"cluster.gpus": 4})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "  added     launch/torchrun.sh" in outcome_lines(result.output)
    assert texts(project) == fresh_tree(text)
    assert (project / "launch/torchrun.sh").stat().st_mode & 0o777 == 0o755


def test_a_file_no_longer_rendered_and_untouched_is_removed(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo", {"cluster.gpus": 4})
    text = edit_spec(project, {"cluster.gpus": 1})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "  removed   launch/torchrun.sh" in outcome_lines(result.output)
    assert texts(project) == fresh_tree(text)
    assert not (project / "launch").exists(), "the folder it leaves empty goes too"


def test_a_file_no_longer_rendered_but_edited_is_kept(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo", {"cluster.gpus": 4})
    mine = edit_file(project, "launch/torchrun.sh", appending("# mine: NCCL_DEBUG=INFO helps here\n"))
    edit_spec(project, {"cluster.gpus": 1})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "  kept      launch/torchrun.sh (no longer generated, but you edited it" in result.output
    assert (project / "launch/torchrun.sh").read_text() == mine
    assert "launch/torchrun.sh" not in place.read_base(project).files, "it is the user's file now"
    again = ltgen("regen", project)
    assert again.exit_code == 0 and "torchrun" not in again.output


def test_a_generated_file_the_user_deleted_stays_deleted_unless_restore(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    (project / "data.py").unlink()
    text = edit_spec(project, {"data.dataset": "synthetic"})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "  skipped   data.py (you deleted it, so it stays deleted; --restore brings it back)" in result.output
    assert not (project / "data.py").exists()
    assert place.read_base(project).files["data.py"] == rendered(text)["data.py"], "the base records the render"

    before, times = tree(project), mtimes(project)
    again = ltgen("regen", project)
    assert again.exit_code == 0 and "  skipped   data.py" in again.output
    assert (tree(project), mtimes(project)) == (before, times)

    restored = ltgen("regen", "--restore", project)
    assert restored.exit_code == 0, restored.output
    assert "  restored  data.py" in outcome_lines(restored.output)
    assert texts(project) == fresh_tree(text)


def test_a_user_file_where_the_render_adds_one_is_merged_against_an_empty_base(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    (project / "launch").mkdir()
    (project / "launch/torchrun.sh").write_text("#!/bin/sh\n# mine\ntorchrun train.py\n")
    edit_spec(project, {"cluster.gpus": 4})
    result = ltgen("regen", project)
    assert result.exit_code == 1, result.output
    assert "  conflict  launch/torchrun.sh (1 conflict)" in outcome_lines(result.output)
    merged = (project / "launch/torchrun.sh").read_text()
    assert f"||||||| {merge.NO_BASE_LABEL}" in merged.splitlines()
    assert "# mine" in merged.splitlines() and "torchrun train.py" in merged.splitlines()


# --- diff and --dry-run ----------------------------------------------------------------------------


def test_diff_and_dry_run_show_every_outcome_with_a_unified_diff_and_write_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo", {"cluster.gpus": 4})
    edit_file(project, "steps.py", replacing("optimizer = torch.optim.", "    optimizer = None  # mine"))
    edit_file(project, "model.py", MODEL_NOTE)
    edit_spec(project, {"optim.optimizer": "sgd", "cluster.gpus": 1, "model.arch": "cnn"})
    before, times = tree(project), mtimes(project)

    shown = ltgen("diff", project)
    assert shown.exit_code == 1, "diff exits as regen would: 1 for conflicts"
    dry = ltgen("regen", "--dry-run", project)
    assert (tree(project), mtimes(project)) == (before, times), "nothing was written"
    assert dry.output == shown.output and dry.exit_code == shown.exit_code
    for expected in ("--- a/train.py\n+++ b/train.py\n", "--- a/launch/torchrun.sh\n+++ /dev/null\n"):
        assert expected in shown.output
    assert "+" + CONFLICT_START + "\n" in shown.output
    assert "Dry run: nothing was written." in shown.output and "There would be conflicts in steps.py" in shown.output

    done = ltgen("regen", project)
    assert done.exit_code == 1
    assert outcome_lines(done.output) == outcome_lines(shown.output), "diff predicted exactly what regen did"
    outcomes = set(outcome_lines(done.output))
    assert {"  merged    model.py", "  removed   launch/torchrun.sh", "  conflict  steps.py (1 conflict)"} <= outcomes


def test_diff_without_conflicts_exits_0_and_shows_added_files(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    edit_spec(project, {"cluster.gpus": 4})
    before = tree(project)
    shown = ltgen("diff", project)
    assert shown.exit_code == 0, shown.output
    assert "--- /dev/null\n+++ b/launch/torchrun.sh\n" in shown.output
    assert "  added     launch/torchrun.sh" in outcome_lines(shown.output)
    assert tree(project) == before


# --- upgrades, formatting, the spec ---------------------------------------------------------------


def older_template(text: str) -> str:
    """What an older template wrote: a header comment the current one dropped."""
    return "# Generated by ltgen 0.0.1; do not edit.\n" + text


def test_a_project_from_an_older_ltgen_gets_the_template_changes_and_keeps_edits(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    record = json.loads((project / place.BASE_FILE).read_text())
    record["ltgen_version"] = "0.0.1"
    for relative in ("train.py", "model.py"):
        record["files"][relative] = older_template(record["files"][relative])
        (project / relative).write_text(record["files"][relative])
    (project / place.BASE_FILE).write_text(json.dumps(record))
    edit_file(project, "model.py", MODEL_HELPER)

    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "Last generated by ltgen 0.0.1" in result.output
    assert {"  updated   train.py", "  merged    model.py"} <= set(outcome_lines(result.output))
    expected = fresh_tree((project / "ltgen.toml").read_text())
    expected["model.py"] = MODEL_HELPER(expected["model.py"])
    assert texts(project) == expected
    assert place.read_base(project).ltgen_version == __version__


def test_base_and_render_are_the_same_black_formatted_text(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    text = edit_spec(project, {"early_stopping.enabled": True})
    assert ltgen("regen", project).exit_code == 0
    files = place.read_base(project).files
    assert files == rendered(text)
    python = {path: source for path, source in files.items() if path.endswith(".py")}
    assert python and all(render.format_python(source, path) == source for path, source in python.items())


def test_the_spec_keeps_its_comments_and_layout(tmp_path: Path) -> None:
    source = tmp_path / "mine.toml"
    layout = "# my sweep\n[trainer]\nmax_epochs   =   3   # quick\n\n[logging]\n"
    source.write_text(layout + "# TensorBoard on\ntensorboard = true\n")
    created = CliRunner().invoke(app, ["new", "exp", "--dir", str(tmp_path), "--spec", str(source), "--gpus", "2"])
    assert created.exit_code == 0, created.output
    project = tmp_path / "exp"
    spec_path = project / "ltgen.toml"
    assert spec_path.read_text().startswith(layout), "ltgen new set --gpus and the name, keeping the rest"
    spec_path.write_text(spec_path.read_text().replace("tensorboard = true", "tensorboard = false  # off for now"))
    before = spec_path.read_bytes()
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert spec_path.read_bytes() == before, "regen never rewrites ltgen.toml"
    assert place.read_base(project).spec == before.decode()


# --- refusals and bad input ------------------------------------------------------------------------


def test_no_base_is_refused_with_exit_2(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    (project / place.BASE_FILE).unlink()
    edit_spec(project, {"cluster.gpus": 4})
    before = tree(project)
    result = ltgen("regen", project)
    assert result.exit_code == 2
    assert "base.json is missing, so ltgen cannot tell your edits from what it generated" in result.output
    assert "Traceback" not in result.output and tree(project) == before


@pytest.mark.parametrize(
    "damage", ["{not json", '{"ltgen_version": "0.1.0"}', '{"ltgen_version": "0", "spec": "", "files": {"../x": ""}}']
)
def test_a_damaged_base_is_refused_with_exit_2(tmp_path: Path, damage: str) -> None:
    project = make_project(tmp_path / "demo")
    (project / place.BASE_FILE).write_text(damage)
    result = ltgen("regen", project)
    assert result.exit_code == 2 and "base.json is damaged" in result.output, result.output


def test_a_folder_without_a_spec_is_refused(tmp_path: Path) -> None:
    result = ltgen("regen", tmp_path)
    assert result.exit_code == 2 and "cannot read" in result.output and "ltgen.toml" in result.output


def test_a_bad_spec_prints_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    edit_spec(project, {"trainer.precision": "bf17", "cluster.gpus": -1})
    before, times = tree(project), mtimes(project)
    for args in (["regen"], ["diff"], ["regen", "--dry-run"]):
        result = ltgen(*args, project)
        assert result.exit_code == 2
        assert "trainer.precision" in result.output and "cluster.gpus" in result.output
        assert "nothing was written" in result.output
        assert (tree(project), mtimes(project)) == (before, times)


def test_a_non_utf8_file_is_refused_clearly(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    (project / "model.py").write_bytes(b"\xff\xfe binary")
    edit_spec(project, {"model.arch": "cnn"})
    result = ltgen("regen", project)
    assert result.exit_code == 2 and "model.py is not UTF-8 text" in result.output


# --- interruptions ---------------------------------------------------------------------------------


class Interrupt(BaseException):
    """Stands for Ctrl-C or a kill at a chosen write."""


def interrupted_regen(project: Path, spec_text: str, monkeypatch: pytest.MonkeyPatch, at: int | None = None) -> bool:
    """Run a regen stopped just before its write number `at` (None: base.json's); True if it was stopped."""
    write, calls = place.write_file, []

    def stopping(path: Path, text: str, mode: int = 0o644) -> None:
        calls.append(path)
        if len(calls) == at or (at is None and path == project / place.BASE_FILE):
            raise Interrupt
        write(path, text, mode)

    monkeypatch.setattr(place, "write_file", stopping)
    try:
        place.regen(project, spec_text, rendered(spec_text))
    except Interrupt:
        return True
    finally:
        monkeypatch.setattr(place, "write_file", write)
    return False


def edited_project(path: Path) -> tuple[Path, str]:
    """A project with hand edits and a spec change that merges, updates, adds and removes files."""
    project = make_project(path)
    edit_file(project, "steps.py", TRAINING_LOSS)
    edit_file(project, "model.py", MODEL_NOTE, MODEL_HELPER)
    updates = {"model.arch": "cnn", "cluster.gpus": 4, "optim.optimizer": "sgd", "trainer.precision": "bf16-mixed"}
    return project, edit_spec(project, {**updates, "checkpoint.save_last": False, "checkpoint.save_top_k": 0})


def test_a_regen_stopped_at_any_write_leaves_whole_files_and_a_rerun_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, text = edited_project(tmp_path / "original")
    old = texts(original)
    done = tmp_path / "done"
    shutil.copytree(original, done)
    assert ltgen("regen", done).exit_code == 0
    new = texts(done)
    assert "checkpoint.py" in old and "checkpoint.py" not in new and "launch/torchrun.sh" in new

    at = 1
    while True:
        project = tmp_path / f"stopped-{at}"
        shutil.copytree(original, project)
        if not interrupted_regen(project, text, monkeypatch, at):
            break
        now = texts(project)
        for relative in old.keys() | new.keys():
            assert now.get(relative) in (old.get(relative), new.get(relative)), f"{relative} after write {at}"
        assert (project / place.PENDING_FILE).exists() == (at > 1), "the record comes first"
        if now[place.BASE_FILE] == new[place.BASE_FILE]:
            assert {k: v for k, v in now.items() if k != place.PENDING_FILE} == new, "the base advances last"
        rerun = ltgen("regen", project)
        assert rerun.exit_code == 0, rerun.output
        owed = [path for path in new if not path.startswith(".ltgen/") and now.get(path) != new[path]]
        assert ("An interrupted regen left" in rerun.output) == (at > 1 and bool(owed))
        assert texts(project) == new, f"stopped at write {at}, the rerun finishes the job"
        at += 1
    assert at > 5, "the regen made several writes"


def test_an_edit_made_after_an_interruption_is_kept_and_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, text = edited_project(tmp_path / "demo")
    assert interrupted_regen(project, text, monkeypatch, at=3), "stopped after the record and one file"
    assert place.read_base(project).spec != text
    again = edit_file(project, "model.py", appending("# and one more, after the interruption\n"))
    assert "nn.Conv2d(" not in again, "model.py was not written before the stop"

    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "An interrupted regen left" in result.output
    expected = MODEL_HELPER(MODEL_NOTE(rendered(text)["model.py"])) + "# and one more, after the interruption\n"
    assert (project / "model.py").read_text() == expected


def test_diff_after_an_interruption_shows_the_writes_it_owes_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, text = edited_project(tmp_path / "demo")
    assert interrupted_regen(project, text, monkeypatch, at=3)
    before, times = tree(project), mtimes(project)
    shown = ltgen("diff", project)
    assert shown.exit_code == 0, shown.output
    assert "An interrupted regen left" in shown.output and "ltgen regen finishes that first" in shown.output
    assert "--- a/model.py\n+++ b/model.py\n" in shown.output, "the writes still owed show like any other change"
    assert "Nothing would change" not in shown.output
    assert (tree(project), mtimes(project)) == (before, times)
    done = ltgen("regen", project)
    assert done.exit_code == 0, done.output
    assert outcome_lines(done.output) == outcome_lines(shown.output), "diff predicted exactly what regen did"
    assert ltgen("diff", project).output.count("Nothing would change") == 1


def test_a_conflict_written_before_an_interruption_does_not_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "demo")
    mine = optimizer_line((project / "steps.py").read_text()) + "  # tuned"
    edit_file(project, "steps.py", replacing("optimizer = torch.optim.", mine))
    text = edit_spec(project, {"optim.optimizer": "sgd"})
    assert interrupted_regen(project, text, monkeypatch), "stopped before base.json was replaced"
    assert CONFLICT_START in (project / "steps.py").read_text().splitlines()

    refused = ltgen("regen", project)
    assert refused.exit_code == 2 and "steps.py:" in refused.output
    assert place.read_base(project).files == rendered(text), "the interrupted regen was finished first"
    resolve(project / "steps.py", mine + "\n")
    result = ltgen("regen", project)
    assert result.exit_code == 0 and "Nothing changed" in result.output, result.output


def test_temporary_files_a_killed_regen_left_are_removed(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    stale = [project / ".train.py.k1l2.ltgen-tmp", project / ".ltgen/.base.json.x9.ltgen-tmp"]
    for path in stale:
        path.write_text("half")
    before = {k: v for k, v in tree(project).items() if not k.endswith(".ltgen-tmp")}
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in stale)
    assert tree(project) == before


# --- as a new user tries it ------------------------------------------------------------------------


def test_done_when_a_new_user_generates_edits_and_regenerates(tmp_path: Path) -> None:
    """The issue's acceptance scenario, through the CLI with real renders."""
    runner = CliRunner()

    def run(*args: str | Path):
        return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)

    assert run("new", "demo", "--dir", tmp_path, "--dataset", "synthetic").exit_code == 0
    project = tmp_path / "demo"
    edits = {"model.py": (MODEL_NOTE, MODEL_HELPER), "steps.py": (TRAINING_LOSS,)}
    for relative, changes in edits.items():
        edit_file(project, relative, *changes)
    updates = {"trainer.precision": "bf16-mixed", "early_stopping.enabled": True, "model.arch": "cnn"}
    edit_spec(project, {**updates, "hooks.emit": ["on_train_epoch_end"]})

    result = run("regen", project)
    assert result.exit_code == 0, result.output
    assert run("new", "demo", "--dir", tmp_path / "fresh", "--spec", project / "ltgen.toml").exit_code == 0
    expected = texts(tmp_path / "fresh/demo")
    for relative, changes in edits.items():
        for change in changes:
            expected[relative] = change(expected[relative])
    assert texts(project) == expected, "a fresh generation, plus the edits"

    steps = (project / "steps.py").read_text()
    mine = optimizer_line(steps).replace("fused=fused", "fused=False") + "  # mine"
    edit_file(project, "steps.py", replacing("optimizer = torch.optim.", mine))
    edit_spec(project, {"optim.optimizer": "adam"})
    before, times = tree(project), mtimes(project)
    shown = run("diff", project)
    assert shown.exit_code == 1 and "There would be conflicts in steps.py" in shown.output
    assert (tree(project), mtimes(project)) == (before, times), "ltgen diff writes nothing"

    result = run("regen", project)
    assert result.exit_code == 1 and "Conflicts in steps.py" in result.output
    steps = (project / "steps.py").read_text()
    assert CONFLICT_START in steps.splitlines() and mine in steps.splitlines()
    assert SMOOTHED in steps.splitlines() and "def on_train_epoch_end(" in steps, "nothing lost"
    assert (project / "model.py").read_text() == expected["model.py"]
