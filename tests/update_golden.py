"""Rewrite the golden trees on purpose, each from its own spec: `python tests/update_golden.py [NAME ...]`.

golden/NAME/ is exactly what `ltgen new NAME --spec golden/NAME/ltgen.toml` writes. Read the diff
(git diff golden/) before committing it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from ltgen.cli import app

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def generate(name: str, parent: Path) -> Path:
    """Run `ltgen new NAME --spec golden/NAME/ltgen.toml` into parent; return the new project."""
    spec_copy = parent / f"{name}.toml"
    shutil.copyfile(GOLDEN / name / "ltgen.toml", spec_copy)
    result = CliRunner().invoke(app, ["new", name, "--dir", str(parent), "--spec", str(spec_copy)])
    if result.exit_code != 0:
        raise SystemExit(f"ltgen new {name} failed:\n{result.output}")
    return parent / name


def main(names: list[str]) -> None:
    for name in names or sorted(p.name for p in GOLDEN.iterdir() if (p / "ltgen.toml").is_file()):
        with tempfile.TemporaryDirectory() as scratch:
            fresh = generate(name, Path(scratch))
            shutil.rmtree(GOLDEN / name)
            shutil.copytree(fresh, GOLDEN / name, symlinks=False)
        print(f"rewrote golden/{name}/")


if __name__ == "__main__":
    main(sys.argv[1:])
