"""The spec (`ltgen.toml`): its schema, parsing and validation, in one place to import from.

A spec is a TOML file of sections and keys. `parse` checks everything at once and returns a `Spec` (every key
present, defaults filled in, and a `NoEffect` warning per key set where it does nothing) or raises `SpecError`
with one `Problem` per mistake. The work is split by job:
checks (value checks), features (each loop feature's keys and rules), schema (the keys in order), rules (the
rules across keys), parsing (parse, read, load) and authoring (the spec `ltgen new` writes, and edits to it).
"""

from __future__ import annotations

from ltgen.authoring import dataset_seeds, default_text, model_seeds, pair_seeds, with_values
from ltgen.checks import MAX_COUNT, METRIC_PATTERN, NAME_PATTERN, Key
from ltgen.features.hooks import HOOKS
from ltgen.features.strategy import distributed
from ltgen.features.task import (
    ARCHS,
    DATASET_SEEDS,
    DATASETS,
    GAN_METRICS,
    MODEL_SEEDS,
    RESNET_STAGES,
    VALID_ARCHS,
)
from ltgen.parsing import SPEC_FILE, Spec, load, parse, read
from ltgen.problems import NoEffect, Problem, SpecError
from ltgen.schema import SCHEMA, Section

__all__ = [
    "ARCHS",
    "DATASETS",
    "DATASET_SEEDS",
    "GAN_METRICS",
    "HOOKS",
    "MAX_COUNT",
    "METRIC_PATTERN",
    "MODEL_SEEDS",
    "NAME_PATTERN",
    "RESNET_STAGES",
    "SCHEMA",
    "SPEC_FILE",
    "VALID_ARCHS",
    "Key",
    "NoEffect",
    "Problem",
    "Section",
    "Spec",
    "SpecError",
    "dataset_seeds",
    "default_text",
    "distributed",
    "load",
    "model_seeds",
    "pair_seeds",
    "parse",
    "read",
    "with_values",
]
