"""The test pass after training."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, batch_limit
from ltgen.unit import LIMIT, Field

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {"limit_test_batches": Key(batch_limit(zero_ok=True), 1.0, "0: no test pass")}
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"test": values["trainer"]["limit_test_batches"] != 0}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"test": f["test"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["from steps import test_step"] if f["test"] else []


def fields(f: dict[str, Any]) -> list[Field]:
    expected = "a fraction in (0, 1] or a count >= 1 (turn the test off in ltgen.toml)"
    limit = Field("limit_test_batches", "trainer.limit_test_batches", "int | float", LIMIT, expected, "1")
    return [limit] if f["test"] else []
