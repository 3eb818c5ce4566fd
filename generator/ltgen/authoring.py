"""Writing specs: the commented default spec of `ltgen new`, its seeds, and edits that keep the user's layout."""

from __future__ import annotations

from typing import Any

from ltgen.checks import toml_value
from ltgen.features.sweep import SPACE_EXAMPLE
from ltgen.features.task import DATASET_SEEDS, MODEL_SEEDS, PAIR_SEEDS
from ltgen.parsing import SPEC_FILE
from ltgen.schema import SCHEMA

# What the new spec shows of each key that is a table of its own: its keys are the user's (Config field names).
TABLE_EXAMPLES = {"sweep.space": SPACE_EXAMPLE}


def dataset_seeds(dataset: str) -> dict[str, Any]:
    """The dotted keys `ltgen new --dataset D` sets besides data.dataset."""
    return dict(DATASET_SEEDS.get(dataset, {}))


def model_seeds(arch: str) -> dict[str, Any]:
    """The dotted keys `ltgen new --model M` sets besides model.arch."""
    return dict(MODEL_SEEDS.get(arch, {}))


def pair_seeds(dataset: str, arch: str) -> dict[str, Any]:
    """The dotted keys `ltgen new --dataset D --model M` sets for that pair."""
    return dict(PAIR_SEEDS.get((dataset, arch), {}))


def default_text(name: str) -> str:
    """A complete, commented spec with every key at its default, for `ltgen new`."""
    lines = [
        f"# {SPEC_FILE}: the spec of this project. Edit it, then run `ltgen regen` to bring the",
        "# change into the code (your own edits to the code are kept).",
    ]
    for section_name, section in SCHEMA.items():
        lines += ["", f"[{section_name}]"]
        for key, spec_key in section.keys.items():
            if isinstance(spec_key.default, dict):  # a table of its own ([sweep.space]): an example to uncomment
                example = TABLE_EXAMPLES[f"{section_name}.{key}"]
                lines += ["", f"# [{section_name}.{key}]  # {spec_key.doc}", *(f"# {line}" for line in example)]
                continue
            value = name if (section_name, key) == ("project", "name") else spec_key.default
            rendered = f"{key} = {toml_value(value)}"
            lines.append(f"{rendered}  # {spec_key.doc}" if spec_key.doc else rendered)
    return "\n".join(lines) + "\n"


def with_values(text: str, updates: dict[str, Any]) -> str:
    """Set dotted keys (`cluster.gpus`) in spec text, keeping its comments and layout (and inline tables).

    ValueError when the text is not TOML, or holds something else where a key's table should be.
    """
    import tomlkit  # only here and in checks.toml_value: reading a spec needs tomllib alone

    try:
        document = tomlkit.parse(text)
        for dotted, value in updates.items():
            *sections, key = dotted.split(".")
            table: Any = document
            for part in sections:
                if part not in table:
                    inline = isinstance(table, tomlkit.items.InlineTable)
                    table[part] = tomlkit.inline_table() if inline else tomlkit.table()
                table = table[part]
            table[key] = value
        return tomlkit.dumps(document)
    except (ValueError, TypeError, KeyError) as error:  # tomlkit's ParseError is a ValueError
        raise ValueError(str(error)) from None
