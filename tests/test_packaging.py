"""What a newcomer meets first: the README's commands and spec reference, CI running the README's test command,
and `pip install .` giving a working `ltgen` whose templates travel inside the wheel."""

import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import GOLDEN, ROOT
from ltgen.spec import default_text, with_values

README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_install_and_test_commands_and_ci_runs_the_latter() -> None:
    first_commands = [line.strip() for line in README.splitlines()[1:6] if line.startswith("    ")]
    assert first_commands[0].startswith("pip install . && ltgen new mnist --gpus 4")
    assert first_commands[1].endswith("# the whole test suite (installs torch, torchvision and SLURM first)")
    assert "python -m pytest" in first_commands[1]
    assert "# the whole test suite" in (ROOT / ".ci/run").read_text()


def test_readme_shows_the_spec_ltgen_new_writes() -> None:
    block = re.search(r"```toml\n(.*?)```", README, flags=re.DOTALL).group(1)
    assert block == with_values(default_text("mnist"), {"cluster.gpus": 4})
    assert block == (GOLDEN / "mnist/ltgen.toml").read_text(), "golden/mnist is `ltgen new mnist --gpus 4`"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        str(ROOT),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return next(out.glob("ltgen-*.whl"))


def test_the_wheel_carries_the_templates(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "templates").rglob("*") if p.is_file())
    assert templates and all(f"ltgen/{t}" in names for t in templates)
    assert any(name.endswith("entry_points.txt") for name in names)


def test_pip_install_then_ltgen_new_works_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    """A fresh virtual environment (its dependencies from this one), the wheel installed, run from elsewhere."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin/python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    # copier, typer, black, tomlkit and pip from this environment, after the new one's own packages
    (Path(purelib.stdout.strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [env_dir / "bin/ltgen", "new", "mnist", "--gpus", "4"], cwd=work, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    where = subprocess.run(
        [python, "-c", "from ltgen import render; print(render.templates_dir())"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(env_dir)), "templates must come from the installed package"
    generated = {
        p.relative_to(work / "mnist").as_posix(): p.read_bytes() for p in (work / "mnist").rglob("*") if p.is_file()
    }
    golden = {
        p.relative_to(GOLDEN / "mnist").as_posix(): p.read_bytes() for p in (GOLDEN / "mnist").rglob("*") if p.is_file()
    }
    assert generated == golden
