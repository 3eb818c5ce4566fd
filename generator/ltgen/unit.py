"""What a feature declares besides its spec keys: the Config fields it adds and the checkpoint state it keeps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """A field of train.py's Config, and so a flag: its value and comment come from the spec key `source`."""

    name: str
    source: str  # "section.key", or a Python literal (a quoted word) that `comment` explains
    type: str
    check: str = ""  # the condition on {v} that train.py checks before any work; "" for none
    expected: str = ""  # what a value that fails the check should have been
    fast_dev_run: str = ""  # its value under --fast-dev-run; "" keeps it
    comment: str = ""  # for a literal source
    position: str = ""  # the spec key it is listed at in Config, when not its source

    def __post_init__(self) -> None:
        if self.source.startswith('"') and not (self.position and self.comment):
            raise ValueError(f"Config field {self.name}: a literal value needs a comment and a position (a spec key)")


@dataclass(frozen=True)
class Entry:
    """Checkpoint state: the keys save_checkpoint writes, and the code that restores them on resume, as one pair
    (so an entry can never be saved under one condition and restored under another)."""

    saved: tuple[tuple[str, str], ...]  # (key, the expression saved under it)
    restore: str | None  # the statements that restore them from `state`; None: read before the model is built


def whole(key: str, obj: str) -> Entry:
    """The state_dict of one object (the model, its optimizer, scheduler or loss scaler)."""
    return Entry(((key, f"{obj}.state_dict()"),), f'{obj}.load_state_dict(state["{key}"])')


def by_name(key: str, collection: str, item: str) -> Entry:
    """The state_dicts of a {name: object} dict (manual optimization's optimizers, schedulers, scalers)."""
    saved = f"{{name: {item}.state_dict() for name, {item} in {collection}.items()}}"
    restore = f'for name, {item} in {collection}.items():\n    {item}.load_state_dict(state["{key}"][name])'
    return Entry(((key, saved),), restore)


def plain(restore: str | None, *keys: str) -> Entry:
    """Variables saved as they are, under their own names."""
    return Entry(tuple((key, key) for key in keys), restore)


LIMIT = "is_limit({v})"  # flags.py's check of a Lightning batch limit: a fraction in (0, 1] or a count >= 1
