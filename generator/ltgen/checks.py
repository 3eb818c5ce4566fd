"""Value checks for the spec's keys, and the `Key` that pairs one with a default and a doc.

Each check returns None when a value is fine, else what was expected (and, after a "|", a hint such as a
did-you-mean). The text helpers here also write the values and names that messages show.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
METRIC_PATTERN = re.compile(r"val_[A-Za-z0-9_]{1,64}")
SLURM_TIME_PATTERN = re.compile(r"([0-9]+-)?[0-9]{1,3}(:[0-9]{2}){0,2}")  # ASCII digits: \d matches any script's
SLURM_WORD_PATTERN = re.compile(r"[A-Za-z0-9_.,:=+-]{1,128}")

# The bound of an integer key that has no tighter one: beyond any real run, and small enough for every
# integer the emitted code hands to torch (int64), to the shell or to SLURM.
MAX_COUNT = 10**9
SHOWN_LENGTH = 60  # values and keys in messages are cut short after this many characters

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Applies:
    """Where a key has an effect: while `when` holds of the values of the keys `on` ("section.key", in order).
    Elsewhere the key does nothing, and a value other than its default is warned about, with `where` (what
    follows "it applies"): '[data] augment = true has no effect with dataset "text" (it applies to image datasets)'.
    """

    on: tuple[str, ...]
    when: Callable[..., bool]
    where: str


def only_with(on: str, *values: Any, where: str) -> Applies:
    """A key that has an effect only while the key `on` is one of `values`."""
    return Applies((on,), lambda value: value in values, where)


@dataclass(frozen=True)
class Key:
    """One key of the schema: its check, default and one-line doc (written into new specs), and where it has an
    effect (every condition in `applies` must hold; none: everywhere)."""

    check: Check
    default: Any
    doc: str = ""
    applies: tuple[Applies, ...] = ()


def did_you_mean(word: str, options: Any) -> str:
    """A hint naming the option closest to `word`, or "" when none is close."""
    if len(word) > SHOWN_LENGTH:  # too long to be a typo, and difflib is slow on long words
        return ""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else ""


def as_toml(value: Any, budget: int = SHOWN_LENGTH) -> str:
    """A value as it would be written in TOML (what the user wrote, near enough), cut short when long."""
    if isinstance(value, dict):
        return "a table" if value else "{}"
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            used = sum(len(part) + 2 for part in parts)
            if used >= budget:
                parts.append("...")
                break
            parts.append(as_toml(item, budget - used))
        return "[" + ", ".join(parts) + "]"
    if isinstance(value, str) and len(value) > budget:
        return toml_value(value[:budget]) + "..."
    return toml_value(value)


def toml_value(value: Any) -> str:
    """A value in TOML syntax."""
    import tomlkit  # only here and in authoring.with_values: reading a spec needs tomllib alone

    return tomlkit.item(value).as_string()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(lo: int, hi: int = MAX_COUNT, also: tuple[int, ...] = ()) -> Check:
    """An integer from lo to hi, or one of `also`; the message names the bound a value breaks."""

    def check(value: Any) -> str | None:
        if _is_int(value) and (value in also or lo <= value <= hi):
            return None
        too_big = _is_int(value) and value > hi
        return f"an integer >= {lo}" + (f" and <= {hi}" if too_big else "") + "".join(f" (or {a})" for a in also)

    return check


def number(lo: float, hi: float | None = None, hi_open: bool = False, lo_open: bool = False) -> Check:
    """A finite number from lo to hi (either end excluded with lo_open, hi_open)."""

    def check(value: Any) -> str | None:
        finite = _is_number(value) and math.isfinite(value)
        above = finite and (value > lo or (value == lo and not lo_open))
        if above and (hi is None or value < hi or (value == hi and not hi_open)):
            return None
        upper = "" if hi is None else f" and {'<' if hi_open else '<='} {hi}"
        kind = "a finite number" if _is_number(value) and not finite else "a number"
        return f"{kind} {'>' if lo_open else '>='} {lo}{upper}"

    return check


def boolean(value: Any) -> str | None:
    """true or false."""
    return None if isinstance(value, bool) else "true or false"


def choice(*options: str) -> Check:
    """One of the strings `options`."""

    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in options:
            return None
        hint = f'write it as a string: "{value}"' if str(value) in options else did_you_mean(str(value), options)
        return "one of " + ", ".join(f'"{o}"' for o in options) + f"|{hint}"

    return check


def choice_int(*options: int) -> Check:
    """One of the integers `options`."""

    def check(value: Any) -> str | None:
        return None if _is_int(value) and value in options else "one of " + ", ".join(map(str, options))

    return check


def text(pattern: re.Pattern[str], what: str, empty_ok: bool = False) -> Check:
    """A string that matches `pattern` (or is empty, with empty_ok); `what` says what was expected."""

    def check(value: Any) -> str | None:
        if isinstance(value, str) and ((empty_ok and value == "") or pattern.fullmatch(value)):
            return None
        return what

    return check


def int_list(lo: int, min_len: int, max_len: int, hi: int = MAX_COUNT) -> Check:
    """A list of min_len to max_len integers from lo to hi."""

    def check(value: Any) -> str | None:
        if (
            isinstance(value, list)
            and min_len <= len(value) <= max_len
            and all(_is_int(v) and lo <= v <= hi for v in value)
        ):
            return None
        return f"a list of {min_len} to {max_len} integers >= {lo}" + (
            f" and <= {hi}" if isinstance(value, list) and any(_is_int(v) and v > hi for v in value) else ""
        )

    return check


def batch_limit(zero_ok: bool = False) -> Check:
    """Lightning's limit: a float is a fraction of the batches, an int a count."""

    def check(value: Any) -> str | None:
        if _is_int(value) and (0 if zero_ok else 1) <= value <= MAX_COUNT:
            return None
        if isinstance(value, float) and (0.0 <= value if zero_ok else 0.0 < value) and value <= 1.0:
            return None
        low = "[0.0, 1.0]" if zero_ok else "(0.0, 1.0]"
        count = "an integer >= 0" if zero_ok else "a positive integer"
        at_most = f" (at most {MAX_COUNT})" if _is_int(value) and value > MAX_COUNT else ""
        return f"a fraction in {low} (write 1.0, not 1, for all batches) or {count} count of batches{at_most}"

    return check


def betas(value: Any) -> str | None:
    """Adam's two betas."""
    if isinstance(value, list) and len(value) == 2 and all(_is_number(b) and 0 <= b < 1 for b in value):
        return None
    return "two numbers in [0, 1), such as [0.5, 0.999]"


def off_or_number(value: Any) -> str | None:
    """A threshold: false (off) or a finite number."""
    if value is False or (_is_number(value) and math.isfinite(value)):
        return None
    return "false (off) or a finite number"


def word_list(value: Any) -> str | None:
    """A list of sbatch options."""
    if isinstance(value, list) and all(isinstance(v, str) and SLURM_WORD_PATTERN.fullmatch(v) for v in value):
        return None
    return 'a list of sbatch options such as "--mem=64G" (letters, digits and _.,:=+- only)'


def file_name(value: Any) -> str | None:
    """A file name relative to --data-dir: no absolute path, no "..", no control characters."""
    if (
        isinstance(value, str)
        and 0 < len(value) <= 255
        and value.isprintable()
        and not value.startswith(("/", "\\", "~"))
        and ".." not in re.split(r"[/\\]", value)
        and not re.match(r"[A-Za-z]:", value)
    ):
        return None
    return 'a file name relative to --data-dir, such as "input.txt" (no absolute path, no "..")'


def column_name(value: Any) -> str | None:
    """The name of a CSV column."""
    if isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable():
        return None
    return "the name of a column of the CSV header (printable, at most 255 characters)"


METRIC = text(METRIC_PATTERN, 'a validation metric name such as "val_loss" or "val_acc"')
MODE = choice("min", "max")
