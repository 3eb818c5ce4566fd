"""What keeps ltgen quick: copier and black are imported only to render, and black's output and Jinja's compiled
templates are cached on disk. The caches never change a byte of the output, and never fail a render."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import spec_text
from ltgen import render, spec

TEXT = spec_text("cache", {"cluster.gpus": 4, "data.dataset": "cifar10", "model.arch": "resnet"})


def render_with_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("LTGEN_CACHE_DIR", str(cache))
    return render.render(spec.parse(TEXT))


def test_the_caches_change_no_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unusable = tmp_path / "a-file"
    unusable.write_text("not a folder")  # nothing can be cached under it: every file is formatted afresh
    uncached = render_with_cache(unusable, monkeypatch)
    cold = render_with_cache(tmp_path / "cache", monkeypatch)
    assert len(list((tmp_path / "cache/black").iterdir())) == sum(path.endswith(".py") for path in uncached)
    assert list((tmp_path / "cache/jinja").rglob("*.cache")), "compiled templates are kept"
    warm = render_with_cache(tmp_path / "cache", monkeypatch)
    assert uncached == cold == warm


def test_damaged_cache_entries_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = render_with_cache(tmp_path / "cache", monkeypatch)
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    for i, entry in enumerate(entries):  # cut short, emptied, or replaced by other bytes
        data = entry.read_bytes()
        entry.write_bytes([data[: len(data) // 2], b"", b"\x00garbage\n" + data[9:]][i % 3])
    assert render_with_cache(tmp_path / "cache", monkeypatch) == expected


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only or full cache folder: every write into it fails (simulated: this suite may run as root, which
    writes into read-only folders)."""
    expected = render_with_cache(tmp_path / "warm", monkeypatch)
    cache = tmp_path / "readonly"
    real_replace = os.replace

    def refuse_in_cache(source: str | Path, destination: str | Path) -> None:
        if str(cache) in str(destination):
            raise PermissionError(13, "Permission denied", str(destination))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", refuse_in_cache)
    assert render_with_cache(cache, monkeypatch) == expected
    assert not [p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".")], "nothing was published"
    assert not [p for p in (cache / "black").glob(".*")], "no temporary file is left behind"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["check", "PROJECT"], ["new", "--help"]])
def test_commands_that_render_nothing_import_neither_copier_nor_black(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "ltgen.toml").write_text(TEXT)
    args = [str(tmp_path) if arg == "PROJECT" else arg for arg in args]
    probe = (
        "import sys\n"
        "from ltgen.cli import app\n"
        f"sys.argv = ['ltgen', *{args!r}]\n"
        "try:\n"
        "    app()\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(sorted(m for m in ('copier', 'black', 'jinja2', 'tomlkit') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
