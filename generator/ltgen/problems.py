"""What a spec's validation reports: a `Problem` per mistake, all of them in one `SpecError`; and a `NoEffect`
per key set where it does nothing (a warning: the spec is still valid)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One mistake in a spec: where it is and what was expected."""

    file: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


@dataclass(frozen=True)
class NoEffect:
    """A key set away from its default where it has no effect (another dataset's, model's or setting's key)."""

    file: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class SpecError(Exception):
    """A spec with one or more problems."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems
