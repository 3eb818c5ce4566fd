"""Upgrading ltgen under an edited project: the projects release 0.1.0 wrote (tests/fixtures/release-0.1.0, see its
README), edited by hand, then brought up to this ltgen with `ltgen regen`, as a user who upgraded would."""

from __future__ import annotations

import ast
import difflib
import shutil
from pathlib import Path

import pytest

from conftest import run_python
from ltgen import merge, place
from regen_helpers import Edit, edit_file, edit_spec, inserting_before, ltgen, rendered, replacing, texts

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"

SMOOTHED_CROSS_ENTROPY = '''def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mine: cross-entropy against targets smoothed by 0.1."""
    return F.cross_entropy(logits, labels, label_smoothing=0.1)

'''
SMOOTHED_ONES = '''def smoothed_ones(real: torch.Tensor) -> torch.Tensor:
    """Mine: one-sided label smoothing (Salimans et al., 2016): real images are labelled 0.9, not 1."""
    return torch.full((len(real),), 0.9, device=real.device)

'''
HAND_EDITS: dict[str, dict[str, tuple[Edit, ...]]] = {
    "mnist": {
        "steps.py": (
            inserting_before("def training_step(", SMOOTHED_CROSS_ENTROPY),
            replacing(
                "return F.cross_entropy(model(images), labels)",
                "    return smoothed_cross_entropy(model(images), labels)  # mine",
            ),
        ),
        "model.py": (
            replacing(
                "nn.ReLU(), nn.Dropout(DROPOUT)]",
                "        layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(DROPOUT)]  # mine: GELU",
            ),
            inserting_before("layers.append(nn.Linear(width,", "    layers.append(nn.LayerNorm(width))  # mine"),
        ),
    },
    "gan": {
        "steps.py": (
            inserting_before("def training_step(", SMOOTHED_ONES),
            replacing(
                "loss_real = F.binary_cross_entropy_with_logits(discriminator(real), real_label)",
                "        loss_real = F.binary_cross_entropy_with_logits(discriminator(real), smoothed_ones(real))  # mine",
            ),
        ),
        "model.py": (
            replacing(
                "nn.BatchNorm2d(GENERATOR_WIDTH),", "            nn.BatchNorm2d(GENERATOR_WIDTH, momentum=0.2),  # mine"
            ),
            inserting_before("nn.Flatten(),", "            nn.Dropout(0.3),  # mine: a noisier discriminator"),
        ),
    },
}
HAND_EDITS["manual"] = {
    "steps.py": (
        inserting_before("def training_step(", SMOOTHED_CROSS_ENTROPY),
        replacing(
            "loss = F.cross_entropy(model(images), labels)",
            "    loss = smoothed_cross_entropy(model(images), labels)  # mine",
        ),
    ),
    "model.py": HAND_EDITS["mnist"]["model.py"],
}
SPEC_CHANGES = {
    "mnist": {"trainer.precision": "bf16-mixed", "trainer.accumulate_grad_batches": 2},
    "gan": {"trainer.precision": "bf16-mixed", "checkpoint.every_n_steps": 100},
    "manual": {"trainer.precision": "bf16-mixed", "checkpoint.every_n_steps": 100},
}
PROJECTS = pytest.mark.parametrize("name", sorted(HAND_EDITS))

MINE = "  # mine: edited by hand"
CONTEXT = 3  # unchanged lines either side of a hand edit that must not conflict (git conflicts on abutting changes)


def release_project(tmp_path: Path, name: str) -> Path:
    """A copy of the project release 0.1.0 wrote, .ltgen/base.json included."""
    project = tmp_path / name
    shutil.copytree(RELEASE / name, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def edit_by_hand(project: Path, name: str) -> None:
    for relative, edits in HAND_EDITS[name].items():
        edit_file(project, relative, *edits)


def fresh_generation(project: Path, tmp_path: Path) -> dict[str, str]:
    """What `ltgen new` writes today, elsewhere, from the project's ltgen.toml: file by file."""
    result = ltgen("new", project.name, "--dir", tmp_path / "fresh", "--spec", project / "ltgen.toml")
    assert result.exit_code == 0, result.output
    return texts(tmp_path / "fresh" / project.name)


def with_hand_edits(files: dict[str, str], name: str) -> dict[str, str]:
    """files with the same hand edits made to them."""
    edited = dict(files)
    for relative, edits in HAND_EDITS[name].items():
        for edit in edits:
            edited[relative] = edit(edited[relative])
    return edited


def regen_cleanly(project: Path) -> list[str]:
    """`ltgen regen` the project: it must finish without a conflict. Its output, line by line."""
    result = ltgen("regen", project)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def assert_fast_dev_run(project: Path) -> None:
    done = run_python(project, "train.py", "--fast-dev-run", "--device", "cpu", "--dataset", "synthetic")
    assert done.returncode == 0, done.stdout + done.stderr


# --- where release 0.1.0's train.py and this ltgen's differ, from the data ----------------------------------------


def train_py_renders(project: Path) -> tuple[list[str], list[str]]:
    """train.py's lines as release 0.1.0 rendered it (on disk, and in base.json) and as this ltgen renders its spec."""
    old = (project / "train.py").read_text()
    assert place.read_base(project).files["train.py"] == old, "the fixture is untouched"
    return old.splitlines(), rendered((project / "ltgen.toml").read_text())["train.py"].splitlines()


def loop_regions(lines: list[str]) -> dict[str, range]:
    """Line indexes of the bodies of evaluate() and of the training loop (the `for` over train_loader)."""
    regions = {}
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef) and node.name == "evaluate":
            regions["evaluate"] = range(node.body[1].lineno - 1, node.end_lineno)  # body[0]: the docstring
        elif isinstance(node, ast.For) and "train_loader" in ast.unparse(node.iter):
            regions["the training loop"] = range(node.body[0].lineno - 1, node.end_lineno)
    assert len(regions) == 2, f"found only {sorted(regions)} in train.py"
    return regions


def opcodes(old: list[str], new: list[str]) -> list[tuple[str, int, int, int, int]]:
    return difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()


def unchanged_lines(old: list[str], new: list[str]) -> dict[int, int]:
    """Old line -> the same line in the new render, for lines found once in each whose CONTEXT lines either side
    are unchanged too."""
    kept = {
        i: j1 + i - i1
        for tag, i1, i2, j1, _ in opcodes(old, new)
        if tag == "equal"
        for i in range(i1 + CONTEXT, i2 - CONTEXT)
    }
    return {i: j for i, j in kept.items() if old[i].strip() and old.count(old[i]) == new.count(old[i]) == 1}


def changed_lines(old: list[str], new: list[str]) -> list[int]:
    """Old lines the new render changed: those gone from it (any diff sees them change); failing that, the lines
    of the changed regions, or the line each pure addition follows."""
    present = set(new)
    gone = [i for i, line in enumerate(old) if line.strip() and line not in present]
    regions = [range(i1, i2) or [max(i1 - 1, 0)] for tag, i1, i2, _, _ in opcodes(old, new) if tag != "equal"]
    return gone or [i for region in regions for i in region if old[i].strip()]


def by_hand(line: str) -> str:
    """A user's edit to one line: a note at its end (the code still runs the same)."""
    return line + MINE


def editing_line(index: int) -> Edit:
    """An edit that changes line `index` (from 0) by hand."""

    def edit(text: str) -> str:
        lines = text.split("\n")
        lines[index] = by_hand(lines[index])
        return "\n".join(lines)

    return edit


# --- the tests ----------------------------------------------------------------------------------------------------


@PROJECTS
def test_an_edited_release_project_regenerates_to_a_fresh_generation_plus_the_edits(tmp_path: Path, name: str) -> None:
    """Hand edits to steps.py and model.py, then regen with this ltgen: clean, and only the edits differ from new."""
    project = release_project(tmp_path, name)
    edit_by_hand(project, name)
    regen_cleanly(project)
    assert texts(project) == with_hand_edits(fresh_generation(project, tmp_path), name)
    assert_fast_dev_run(project)


@PROJECTS
def test_a_spec_change_in_the_same_regen_reaches_train_py_and_the_edits_stay(tmp_path: Path, name: str) -> None:
    """Hand edits and a spec change (bf16-mixed, and accumulation or step checkpoints) brought in by one regen."""
    project = release_project(tmp_path, name)
    release_train = (project / "train.py").read_text()
    edit_by_hand(project, name)
    edit_spec(project, SPEC_CHANGES[name])
    output = regen_cleanly(project)
    assert "  updated   train.py" in output
    assert texts(project) == with_hand_edits(fresh_generation(project, tmp_path), name)
    train = (project / "train.py").read_text()
    assert "dtype=torch.bfloat16" in train and "dtype=torch.bfloat16" not in release_train
    assert_fast_dev_run(project)


@PROJECTS
def test_a_hand_edit_where_the_loop_did_not_change_merges_cleanly(tmp_path: Path, name: str) -> None:
    """A line of evaluate() and one of the training loop (global_step += 1 where it can), that this ltgen renders as
    release 0.1.0 did, lines around included, edited by hand: regen keeps both edits, with no conflict."""
    project = release_project(tmp_path, name)
    old, new = train_py_renders(project)
    unchanged = unchanged_lines(old, new)
    picks = []
    for lines in loop_regions(old).values():
        candidates = [i for i in lines if i in unchanged]
        preferred = [i for i in candidates if old[i].strip() == "global_step += 1"]
        picks += (preferred or candidates)[:1]
    if not picks:
        pytest.skip(f"no line of {name}'s evaluate() or training loop is unchanged, with its neighbours, in this ltgen")
    edit_file(project, "train.py", *(editing_line(i) for i in picks))

    regen_cleanly(project)
    expected = [by_hand(line) if j in {unchanged[i] for i in picks} else line for j, line in enumerate(new)]
    assert (project / "train.py").read_text().splitlines() == expected
    assert_fast_dev_run(project)


@PROJECTS
def test_a_hand_edit_on_a_line_this_ltgen_changed_conflicts_there_and_only_there(tmp_path: Path, name: str) -> None:
    """A train.py line (of evaluate() or the training loop where it can) that this ltgen renders differently from
    release 0.1.0, edited by hand: regen leaves one conflict, at that line, in train.py alone; the rest of train.py is
    the new render. Skipped where the two render train.py byte for byte alike."""
    project = release_project(tmp_path, name)
    old, new = train_py_renders(project)
    if old == new:
        pytest.skip(f"this ltgen renders {name}'s train.py byte for byte as release 0.1.0 did: no changed line to edit")
    changed = changed_lines(old, new)
    in_loop = [i for i in changed if any(i in lines for lines in loop_regions(old).values())]
    index = (in_loop or changed)[0]
    edit_file(project, "train.py", editing_line(index))

    result = ltgen("regen", project)
    assert result.exit_code == 1, result.output
    assert [line for line in result.output.splitlines() if line.startswith("  conflict  ")] == [
        "  conflict  train.py (1 conflict)"
    ], result.output
    assert "Conflicts in train.py:" in result.output
    merged = (project / "train.py").read_text().splitlines()
    markers = (merge.CONFLICT_START, merge.CONFLICT_BASE, merge.CONFLICT_SEPARATOR, merge.CONFLICT_END)
    assert [merged.count(marker) for marker in markers] == [1, 1, 1, 1], "exactly one conflict region"
    start, base, separator, end = (merged.index(marker) for marker in markers)
    yours, release, regenerated = merged[start + 1 : base], merged[base + 1 : separator], merged[separator + 1 : end]
    assert by_hand(old[index]) in yours and old[index] in release, "the conflict is at the edited line"
    assert [line.removesuffix(MINE) for line in yours] == release, "your side is the release's, plus your edit"
    assert merged[:start] + regenerated + merged[end + 1 :] == new, "outside the conflict, train.py is the new render"
