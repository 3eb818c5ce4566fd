"""The `ltgen` command: a thin Typer layer over spec, render and place."""

from __future__ import annotations

import difflib
import enum
import shlex
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from ltgen import __version__
from ltgen.spec import (
    ARCHS,
    DATASETS,
    NAME_PATTERN,
    SPEC_FILE,
    Spec,
    SpecError,
    dataset_seeds,
    default_text,
    model_seeds,
    pair_seeds,
    parse,
    read,
    with_values,
)

if TYPE_CHECKING:  # imported where a command needs them: `ltgen --help` and `ltgen check` stay quick
    from ltgen import merge, place

app = typer.Typer(
    help="Generate plain-PyTorch training projects from a short spec (ltgen.toml), and regenerate them without losing edits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Precision(str, enum.Enum):
    full = "32"
    fp16 = "16-mixed"
    bf16 = "bf16-mixed"


Dataset = enum.Enum("Dataset", {name: name for name in DATASETS}, type=str)
Arch = enum.Enum("Arch", {name: name for name in ARCHS}, type=str)


class Strategy(str, enum.Enum):
    ddp = "ddp"
    fsdp = "fsdp"


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def report_problems(error: SpecError, file: str) -> NoReturn:
    """Print every problem of a spec (one per line) and exit 2."""
    count = len(error.problems)
    lines = [*map(str, error.problems), f"{count} problem{'s' if count > 1 else ''} in {file}; nothing was written."]
    typer.echo("\n".join(lines), err=True)
    raise typer.Exit(2)


def validated(text: str, file: str) -> Spec:
    """Parse spec text, or print every problem and exit 2."""
    try:
        return parse(text, file=file)
    except SpecError as error:
        report_problems(error, file)


def warn(spec: Spec) -> None:
    """Print the spec's keys set where they have no effect, one per line: warnings, so the command goes on."""
    for warning in spec.warnings:
        typer.echo(str(warning), err=True)


def read_spec(path: Path, label: str = "", hint: str = "") -> str:
    """A spec file's text, or one line saying why it can't be read (with label and hint) and exit 2."""
    try:
        return read(path)
    except SpecError as error:
        report_problems(error, str(path))
    except OSError as error:
        fail(f"cannot read {label}{path} ({error.strerror or error}){hint}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ltgen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Generate plain-PyTorch training projects from a short spec (ltgen.toml)."""


@app.command()
def new(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Project name: the folder to create, and [project] name.")
    ],
    parent: Annotated[Path, typer.Option("--dir", help="Create the project inside this folder.")] = Path("."),
    gpus: Annotated[
        int | None, typer.Option(min=0, help="GPUs per node ([cluster] gpus); more than 1 emits DDP.")
    ] = None,
    nodes: Annotated[int | None, typer.Option(min=1, help="Machines ([cluster] nodes).")] = None,
    precision: Annotated[Precision | None, typer.Option(help="[trainer] precision.")] = None,
    dataset: Annotated[
        Dataset | None, typer.Option(help="[data] dataset; also picks its usual model unless --model says.")
    ] = None,
    model: Annotated[Arch | None, typer.Option(help="[model] arch; gan also turns on manual optimization.")] = None,
    strategy: Annotated[
        Strategy | None, typer.Option(help="[cluster] strategy: ddp, or fsdp to shard the model across GPUs.")
    ] = None,
    slurm: Annotated[
        bool | None, typer.Option("--slurm/--no-slurm", help="Emit a SLURM launcher ([cluster.slurm] enabled).")
    ] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="Start from this ltgen.toml instead of the defaults.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write into a non-empty folder that is not an ltgen project; files it replaces are moved aside.",
        ),
    ] = False,
) -> None:
    """Create a new project: ltgen.toml plus a standalone PyTorch project generated from it.

    Examples:

        ltgen new mnist --gpus 4

        ltgen new demo --dataset synthetic --model cnn --precision bf16-mixed

        ltgen new big --gpus 8 --nodes 2 --slurm --dir ~/projects
    """
    if not NAME_PATTERN.fullmatch(name):
        fail(f"project name {name!r}: use letters, digits, '_' and '-', starting with a letter (at most 64)")
    from ltgen import place, render

    target = parent / name
    try:
        place.check_target(target, force)
    except place.Refused as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot look into {target} ({error.strerror or error})")
    source = str(spec_file) if spec_file else SPEC_FILE
    text = read_spec(spec_file, label="--spec ") if spec_file is not None else default_text(name)
    given = {"cluster.gpus": gpus, "cluster.nodes": nodes, "cluster.slurm.enabled": slurm, "cluster.strategy": strategy}
    given |= {"trainer.precision": precision, "data.dataset": dataset, "model.arch": model}
    seeds = {
        key: value.value if isinstance(value, enum.Enum) else value for key, value in given.items() if value is not None
    }
    if dataset is not None:  # the dataset's usual model and settings, under what the command line says
        seeds = dataset_seeds(dataset.value) | seeds
    if "model.arch" in seeds:  # and the model's own (a GAN's manual optimization)
        seeds = model_seeds(seeds["model.arch"]) | seeds
    if "data.dataset" in seeds and "model.arch" in seeds:  # and the pair's (a timm backbone's image size)
        seeds = pair_seeds(seeds["data.dataset"], seeds["model.arch"]) | seeds
    updates = {"project.name": name, **seeds}
    try:
        text = with_values(text, updates)
    except ValueError as error:  # not TOML, or a key where a table should be: parse() says where
        validated(text, source)
        fail(f"cannot set {', '.join(updates)} in {source} ({error}); set them in the file itself")
    spec = validated(text, source)
    warn(spec)
    try:
        tree = render.render(spec)
        created = place.write_new(tree, text, target, force=force)
    except place.Refused as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write into {error.filename or target} ({error.strerror or error})")
    if created.moved_aside:
        typer.echo(f"--force: moved the {len(created.moved_aside)} file(s) of yours that the project replaces aside:")
        for relative, destination in created.moved_aside.items():
            typer.echo(f"  {target / relative} -> {destination}")
    typer.echo(f"Created {target}/ ({len(created.files)} files) from {SPEC_FILE}. Next:")
    dependencies = tomllib.loads(tree["pyproject.toml"])["project"]["dependencies"]
    steps = [
        (f"cd {shlex.quote(str(target))}", ""),
        (f"pip install {shlex.join(dependencies)}", "its dependencies (pyproject.toml)"),
        ("python train.py --fast-dev-run --dataset synthetic", "does it all run? (one batch, writes nothing)"),
    ]
    if spec["cluster"]["gpus"] > 1 or spec["cluster"]["nodes"] > 1:
        steps.append(("bash launch/torchrun.sh", "train with DDP on this machine's GPUs"))
    if spec["cluster.slurm"]["enabled"]:
        steps.append(("sbatch launch/slurm.sbatch", "train on SLURM; requeues itself before the time limit"))
    steps.append(("python train.py", "train"))
    width = max(len(command) for command, _ in steps)
    for command, why in steps:
        typer.echo(f"  {command.ljust(width)}   # {why}" if why else f"  {command}")
    typer.echo(f"Edit the code freely; change {SPEC_FILE} and run `ltgen regen` to bring the change in.")


@app.command()
def check(
    path: Annotated[Path, typer.Argument(help="A project folder or a spec file.")] = Path("."),
) -> None:
    """Validate a spec: every problem on its own line (file, key, what was expected); exit 2 if any.

    Keys set where they have no effect (another dataset's or model's, say) are warned about; they do not fail it.
    """
    spec_path = path / SPEC_FILE if path.is_dir() else path
    spec = validated(read_spec(spec_path), str(spec_path))
    warn(spec)
    cluster = spec["cluster"]
    typer.echo(
        f"{spec_path}: ok ({spec['project']['name']}: {spec['model']['arch']} on {spec['data']['dataset']}, "
        f"{cluster['gpus']} GPU(s) x {cluster['nodes']} node(s){', fsdp' if cluster['strategy'] == 'fsdp' else ''}, "
        f"precision {spec['trainer']['precision']})"
    )


PROJECT_HELP = "The project folder (the one with ltgen.toml)."
RESTORE_HELP = "Bring back generated files you deleted (otherwise they stay deleted)."
DRY_RUN_HELP = "Show what would change (as ltgen diff does); write nothing."


@app.command()
def regen(
    path: Annotated[Path, typer.Argument(metavar="DIR", help=PROJECT_HELP)] = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help=DRY_RUN_HELP)] = False,
    restore: Annotated[bool, typer.Option("--restore", help=RESTORE_HELP)] = False,
) -> None:
    """Bring ltgen.toml changes into the project and keep your edits: a three-way merge per file.

    Each file is merged from what ltgen generated last time (kept in .ltgen/base.json), your
    version on disk, and the new render. Where your edit and the change touch the same lines,
    the file gets diff3 conflict markers and regen refuses to run again until they are gone.
    ltgen.toml itself is never rewritten. The project need not be a git repository.

    Outcomes: unchanged, updated (only ltgen's side changed), merged, conflict, added,
    removed (no longer generated, untouched), kept (no longer generated, but edited by you),
    skipped (a generated file you deleted; --restore brings it back: restored), untracked (in
    .ltgen/base.json but not a file ltgen generates: left alone).

    regen never reads or writes through a symbolic link nor replaces a read-only file (it refuses,
    naming the path), and one regen at a time runs in a project.

    Exit status: 0 done, 1 conflicts (the files are listed), 2 bad spec or refused (nothing written),
    or stopped half-way by an error it names (run regen again, once fixed, to finish).
    """
    _regen(path, restore=restore, dry_run=dry_run)


@app.command()
def diff(
    path: Annotated[Path, typer.Argument(metavar="DIR", help=PROJECT_HELP)] = Path("."),
    restore: Annotated[bool, typer.Option("--restore", help="Show regen --restore instead.")] = False,
) -> None:
    """Show what ltgen regen would do (each file's outcome and a unified diff); write nothing.

    The same as ltgen regen --dry-run. Exit status: what regen would return: 0, or 1 if it
    would leave conflicts; 2 bad spec or refused.
    """
    _regen(path, restore=restore, dry_run=True)


def _regen(project: Path, restore: bool, dry_run: bool) -> None:
    from ltgen import merge, place, render

    if not project.is_dir():
        fail(f"{project} is not a folder; give the project folder (the one with {SPEC_FILE})")
    try:
        spec_path = place.safe_path(project, SPEC_FILE)
    except place.Refused as error:
        fail(str(error))
    text = read_spec(spec_path, hint=f"; is {project} a project made by ltgen new?")
    spec = validated(text, str(spec_path))
    warn(spec)
    try:
        report = place.regen(project, text, render.render(spec), restore=restore, dry_run=dry_run)
    except (place.Refused, place.Unfinished, merge.MergeError, ValueError, OSError) as error:
        fail(str(error))
    if dry_run:
        for plan in report.plans:
            if plan.changes:
                typer.echo(_unified_diff(plan), nl=False)
    for line in _summary(report, dry_run):
        typer.echo(line)
    if any(plan.outcome is merge.Outcome.CONFLICT for plan in report.plans):
        raise typer.Exit(1)


def _unified_diff(plan: merge.FilePlan) -> str:
    """disk -> result, git style; a missing file is /dev/null."""
    before, after = (text.splitlines(keepends=True) if text is not None else [] for text in (plan.disk, plan.result))
    old = f"a/{plan.path}" if plan.disk is not None else "/dev/null"
    new = f"b/{plan.path}" if plan.result is not None else "/dev/null"
    lines = difflib.unified_diff(before, after, old, new)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _summary(report: place.Report, dry_run: bool) -> list[str]:
    """One line per file that changes or needs attention, a count of the rest, then the next step."""
    from ltgen import merge, place

    notes = {
        merge.Outcome.KEPT: " (no longer generated, but you edited it: kept, and no longer tracked by ltgen)",
        merge.Outcome.SKIPPED: " (you deleted it, so it stays deleted; --restore brings it back)",
        merge.Outcome.UNTRACKED: f" (listed in {place.BASE_FILE}, but not a file ltgen generates: left alone, untracked)",
    }
    lines = []
    if report.base_version != __version__:
        lines.append(f"Last generated by ltgen {report.base_version}: its template changes arrive like spec changes.")
    if report.finished:
        who = "ltgen regen finishes" if dry_run else "finished"
        lines.append(f"An interrupted regen left {report.finished} file(s) to write; {who} that first.")
    unchanged = 0
    for plan in report.plans:
        if plan.outcome is merge.Outcome.UNCHANGED:
            unchanged += 1
            continue
        note = notes.get(plan.outcome, "")
        if plan.conflicts:
            note = f" ({plan.conflicts} conflict{'s' if plan.conflicts > 1 else ''})"
        lines.append(f"  {plan.outcome.value:<9} {plan.path}{note}")
    lines.append(f"  {unchanged} file{'s' if unchanged != 1 else ''} unchanged")
    conflicted = [plan.path for plan in report.plans if plan.outcome is merge.Outcome.CONFLICT]
    if conflicted:
        where = "There would be conflicts in" if dry_run else "Conflicts in"
        lines += [
            f"{where} {', '.join(conflicted)}: your edits and the spec change touch the same lines.",
            f"Each block holds your version (from '{merge.CONFLICT_START}'), what ltgen generated",
            "last time (from '|||||||') and the regenerated version (from '=======' to '>>>>>>>').",
            "Keep what you want and delete the marker lines; until then, ltgen regen refuses to run.",
        ]
    elif not any(plan.changes for plan in report.plans):
        lines.append(f"Nothing {'would change' if dry_run else 'changed'}: the project is up to date with {SPEC_FILE}.")
    elif not dry_run:
        lines.append("Done. Review the changes (git diff, in a git repository), then: python train.py --fast-dev-run")
    if dry_run:
        lines.append("Dry run: nothing was written.")
    return lines
