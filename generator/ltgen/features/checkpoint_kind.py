"""What a checkpoint of this project is: the kind of model it holds, which checkpoint.save writes into every
checkpoint, and the data_info fields (with their types) that build_model, predict.py and sample.py read.
checkpoint.py refuses a checkpoint of another kind with them, in one line, before any field is read."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key

KEYS: dict[str, dict[str, Key]] = {}  # none: everything here follows from the task

# The data_info each task family's data.py returns (templates/tasks/FAMILY/data.py.jinja): field -> its type.
IMAGE = {"input_shape": "list", "num_outputs": "int", "classes": "list"}
TEXT = {"tokenizer": "dict", "block_size": "int", "input_shape": "list", "num_outputs": "int"}
TABLE = {
    "input_shape": "list",
    "features": "list",
    "mean": "list",
    "std": "list",
    "target": "str",
    "num_outputs": "int",
}
CUSTOM = {"input_shape": "list", "num_outputs": "int"}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    if f["task"] == "image":
        kind, fields = ("an image GAN" if f["several_models"] else "an image classifier"), IMAGE
    elif f["task"] == "text":
        kind, fields = "a language model", TEXT
    elif f["task"] == "tabular" and f["regression"]:
        kind, fields = "a CSV regression model", {**TABLE, "target_mean": "float", "target_std": "float"}
    elif f["task"] == "tabular":
        kind, fields = "a CSV classifier", {**TABLE, "classes": "list"}
    else:
        kind, fields = "a classifier of your own data", CUSTOM
    return {
        "checkpoint_kind": repr(kind),
        "data_info_fields": "{" + ", ".join(f"{name!r}: {type_}" for name, type_ in fields.items()) + "}",
    }
