"""The [sweep] section and its [sweep.space] table: what `ltgen new` writes, the context flags sweep.py's templates
read, and every mistake `ltgen check` refuses (file, line, key and a fix), checked against the project's own Config
fields.

    pytest tests/test_spec_sweep.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ltgen import context
from ltgen.cli import app
from ltgen.spec import SpecError, default_text, parse, with_values

ON = {"sweep.enabled": True}
GAN = {"model.arch": "gan", "trainer.manual_optimization": True, "optim.scheduler": "none", "checkpoint.save_top_k": 0}
SWEEP_FLAGS = (
    "sweep",
    "sweep_name",
    "sweep_method",
    "sweep_trials",
    "sweep_parallel",
    "sweep_monitor",
    "sweep_mode",
    "sweep_seed",
    "sweep_prune",
    "sweep_space",
)


def sweep_spec(space: str = "", overrides: dict[str, Any] | None = None) -> str:
    """The default spec with dotted keys set and, when given, a [sweep.space] table (its lines as TOML) at the end."""
    text = with_values(default_text("demo"), overrides or {})
    return text + (f"\n[sweep.space]\n{space}\n" if space else "")


def line_of(text: str, fragment: str) -> int:
    """The number of the last line that starts with `fragment` (the space's entries are at the end)."""
    return max(n for n, line in enumerate(text.splitlines(), start=1) if line.startswith(fragment))


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse(text)
    return [str(problem) for problem in caught.value.problems]


def sweep_flags(text: str) -> dict[str, Any]:
    built = context.build(parse(text))
    return {name: built[name] for name in SWEEP_FLAGS}


def test_a_new_spec_has_the_sweep_off_and_a_commented_space_that_is_valid_uncommented() -> None:
    text = default_text("demo")
    spec = parse(text)
    assert spec["sweep"] == {
        "enabled": False,
        "name": "1",
        "method": "grid",
        "trials": 8,
        "parallel": 1,
        "monitor": "",
        "mode": "",
        "seed": 0,
        "prune": False,
        "space": {},
    }
    assert line_of(text, "[sweep]") < line_of(text, "# [sweep.space]") < line_of(text, "[hooks]")
    uncommented = text.replace("# [sweep.space]", "[sweep.space]").replace("# lr = ", "lr = ")
    uncommented = uncommented.replace("# batch_size = ", "batch_size = ")
    spec = parse(with_values(uncommented, ON))
    assert spec["sweep"]["space"] == {"lr": [0.001, 0.0003, 0.0001], "batch_size": [32, 64]}
    assert spec.warnings == ()


def test_with_the_sweep_off_the_flags_hold_the_defaults_whatever_its_keys_say() -> None:
    off = {
        "sweep": False,
        "sweep_name": "1",
        "sweep_method": "grid",
        "sweep_trials": 0,
        "sweep_parallel": 1,
        "sweep_monitor": "val_loss",  # the checkpoint's
        "sweep_mode": "min",
        "sweep_seed": 0,
        "sweep_prune": False,
        "sweep_space": [],
    }
    assert sweep_flags(sweep_spec()) == off
    changed = {"sweep.name": "lr-search", "sweep.trials": 20, "sweep.parallel": 4, "sweep.seed": 7}
    assert sweep_flags(sweep_spec("lr = [0.1, 0.01]", changed)) == off


def test_keys_set_with_the_sweep_off_warn_that_they_have_no_effect() -> None:
    text = sweep_spec("lr = [0.1, 0.01]", {"sweep.trials": 20, "sweep.method": "random"})
    assert [str(warning) for warning in parse(text).warnings] == [
        (
            f"ltgen.toml line {line_of(text, 'method =')}: [sweep] method = \"random\" has no effect with enabled "
            'false (it applies when a sweep is enabled); remove it or set it back to "grid"'
        ),
        (
            f"ltgen.toml line {line_of(text, 'trials =')}: [sweep] trials = 20 has no effect with enabled false "
            "(it applies when a sweep is enabled); remove it or set it back to 8"
        ),
        (
            f"ltgen.toml line {line_of(text, '[sweep.space]')}: [sweep] space = a table has no effect with enabled "
            "false (it applies when a sweep is enabled); remove it or set it back to {}"
        ),
    ]


def test_trials_warn_that_a_grid_runs_every_combination_instead() -> None:
    text = sweep_spec("lr = [0.1, 0.01]", {**ON, "sweep.trials": 20})
    assert [str(warning) for warning in parse(text).warnings] == [
        (
            f'ltgen.toml line {line_of(text, "trials =")}: [sweep] trials = 20 has no effect with method "grid" (it '
            'applies to methods "random" and "optuna" (a grid runs every combination)); remove it or set it back to 8'
        )
    ]


def test_a_grid_counts_its_combinations_and_lists_its_space_in_the_tables_order() -> None:
    text = sweep_spec('batch_size = [32, 64, 128]\nlr = [0.1, 0.01]\ndataset = ["synthetic"]', ON)
    flags = sweep_flags(text)
    assert flags["sweep"] is True and flags["sweep_method"] == "grid" and flags["sweep_trials"] == 6
    assert flags["sweep_space"] == [
        {"name": "batch_size", "value": "[32, 64, 128]", "comment": "one of 3 values"},
        {"name": "lr", "value": "[0.1, 0.01]", "comment": "one of 2 values"},
        {"name": "dataset", "value": "['synthetic']", "comment": "one value"},
    ]


def test_random_and_optuna_search_draw_ranges_and_run_their_trials() -> None:
    settings = {
        **ON,
        "sweep.method": "optuna",
        "sweep.trials": 30,
        "sweep.parallel": 4,
        "sweep.name": "wide-lr",
        "sweep.monitor": "val_acc",
        "sweep.mode": "max",
        "sweep.seed": 3,
        "sweep.prune": True,
    }
    space = "lr = { low = 1e-4, high = 0.1, log = true }\nmax_epochs = { low = 1, high = 5, int = true }"
    assert sweep_flags(sweep_spec(space, settings)) == {
        "sweep": True,
        "sweep_name": "wide-lr",
        "sweep_method": "optuna",
        "sweep_trials": 30,
        "sweep_parallel": 4,
        "sweep_monitor": "val_acc",
        "sweep_mode": "max",
        "sweep_seed": 3,
        "sweep_prune": True,
        "sweep_space": [
            {
                "name": "lr",
                "value": '{"low": 0.0001, "high": 0.1, "log": True, "int": False}',
                "comment": "log-uniform from 0.0001 to 0.1",
            },
            {
                "name": "max_epochs",
                "value": '{"low": 1, "high": 5, "log": False, "int": True}',
                "comment": "uniform integers from 1 to 5",
            },
        ],
    }


def test_an_empty_monitor_and_mode_are_the_checkpoints() -> None:
    checkpoint = {**ON, "checkpoint.monitor": "val_acc", "checkpoint.mode": "max"}
    flags = sweep_flags(sweep_spec("lr = [0.1, 0.01]", checkpoint))
    assert (flags["sweep_monitor"], flags["sweep_mode"]) == ("val_acc", "max")


# Each bad [sweep.space] entry (with the sweep on): the entry's line, and the message after its key.
BAD_ENTRIES = [
    ("lrr = [0.1]", "lrr", 'not a Config field of train.py (did you mean "lr"?); its fields: dataset, data_dir, '),
    ("dropout = [0.1]", "dropout", "not a Config field of train.py; its fields: dataset, data_dir, batch_size, lr"),
    ('out_dir = ["a", "b"]', "out_dir", "cannot be swept: sweep.py sets --out-dir for every trial"),
    ("batch_size = []", "batch_size", "expected at least one value, got an empty list"),
    (
        "batch_size = [32, 0]",
        "batch_size",
        "expected each value to be an integer >= 1 (as [data] batch_size), got 0",
    ),
    ("lr = [0.1, -0.1]", "lr", "expected each value to be a number > 0.0 and <= 10000.0 (as [optim] lr), got -0.1"),
    ('lr = ["0.1"]', "lr", 'expected each value to be a number > 0.0 and <= 10000.0 (as [optim] lr), got "0.1"'),
    ("dataset = [1]", "dataset", "expected each value to be a string (the type of Config's dataset), got 1"),
    ("progress_bar = [true, 1]", "progress_bar", "expected each value to be true or false (as [logging] progress_bar)"),
    ("lr = 0.1", "lr", "expected a list of values such as [0.1] or a range { low, high }, got 0.1"),
    (
        "lr = { low = 0.0, high = 0.1 }",
        "lr",
        "expected low to be a number > 0.0 and <= 10000.0 (as [optim] lr), got 0.0",
    ),
    (
        "lr = { low = 0.1, high = 1e5 }",
        "lr",
        "expected high to be a number > 0.0 and <= 10000.0 (as [optim] lr), got 100000.0",
    ),
    (
        "max_steps = { low = -1, high = 100, int = true }",
        "max_steps",
        (
            "the range from -1 to 100 takes 0, which is not an integer >= 1 (or -1) (as [trainer] max_steps): "
            "list the values instead"
        ),
    ),
    (
        "lr = { low = 0.1, high = 0.01 }",
        "lr",
        "expected low < high, got low = 0.1 and high = 0.01",
    ),
    ("lr = { low = 0.1, high = 0.1 }", "lr", "expected low < high, got low = 0.1 and high = 0.1"),
    (
        "limit_train_batches = { low = 0.0, high = 1.0, log = true }",
        "limit_train_batches",
        "log = true draws on a log scale: expected low > 0, got 0.0",
    ),
    (
        "lr = { low = 1, high = 3, int = true }",
        "lr",
        "int = true draws integers, but lr is a float field: remove it",
    ),
    (
        "log_every_n_steps = { low = 1.5, high = 20, int = true }",
        "log_every_n_steps",
        "expected integer bounds (an integer range), got 1.5 and 20",
    ),
    (
        "batch_size = { low = 16, high = 256 }",
        "batch_size",
        "batch_size is an integer field: add int = true to draw integers",
    ),
    (
        "lr = { lo = 0.001, high = 0.1 }",
        "lr",
        'unknown key "lo" in the range (did you mean "low"?): a range is { low, high, log = false, int = false }',
    ),
    ("lr = { high = 0.1 }", "lr", "a range needs low and high: { low = 0.0001, high = 0.1 }"),
    (
        'lr = { low = "0.001", high = 0.1 }',
        "lr",
        'expected low and high to be finite numbers, got "0.001" and 0.1',
    ),
    ("lr = { low = 0.001, high = 0.1, log = 1 }", "lr", "expected log to be true or false, got 1"),
    (
        "progress_bar = { low = 0, high = 1 }",
        "progress_bar",
        "progress_bar is a bool field: give a list of values, such as [true, false], not a range",
    ),
]


@pytest.mark.parametrize(("entry", "key", "message"), BAD_ENTRIES, ids=[entry for entry, _, _ in BAD_ENTRIES])
def test_a_bad_space_entry_is_refused_at_its_line_with_what_to_write(entry: str, key: str, message: str) -> None:
    text = sweep_spec(entry, {**ON, "sweep.method": "random"})
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(f"ltgen.toml:{line_of(text, entry)}: sweep.space.{key}: {message}"), found


def test_the_space_is_checked_against_the_fields_this_project_has() -> None:
    # A GAN has two learning rates, and no single lr.
    text = sweep_spec("lr = [0.1]", {**ON, **GAN, "sweep.monitor": "val_loss_g", "sweep.mode": "min"})
    assert problems(text) == [
        (
            f"ltgen.toml:{line_of(text, 'lr =')}: sweep.space.lr: not a Config field of train.py "
            '(did you mean "lr_g"?); its fields: dataset, data_dir, batch_size, lr_g, lr_d, max_epochs, max_steps, '
            "limit_train_batches, limit_val_batches, limit_test_batches, num_sanity_val_steps, seed, ckpt_every_n_steps, "
            "ckpt_every_n_minutes, log_every_n_steps, progress_bar"
        )
    ]
    assert parse(
        sweep_spec("lr_g = [0.0002, 0.0001]", {**ON, **GAN, "sweep.monitor": "val_loss_g", "sweep.mode": "min"})
    )


def test_a_mistake_in_the_space_is_refused_with_the_sweep_off_too() -> None:
    text = sweep_spec("batch_size = [0]")
    assert problems(text) == [
        (
            f"ltgen.toml:{line_of(text, 'batch_size = [0]')}: sweep.space.batch_size: expected each value to be an "
            "integer >= 1 (as [data] batch_size), got 0"
        )
    ]


def test_a_grid_needs_lists_and_says_so_for_each_range() -> None:
    text = sweep_spec("lr = { low = 0.001, high = 0.1 }\nbatch_size = [32, 64]", ON)
    assert problems(text) == [
        (
            f"ltgen.toml:{line_of(text, 'lr =')}: sweep.space.lr: a grid takes lists of values: list them, "
            'or set method = "random" or "optuna" for a range'
        )
    ]


def test_a_sweep_needs_a_space() -> None:
    text = sweep_spec("", ON)
    assert problems(text) == [
        (
            f"ltgen.toml:{line_of(text, 'enabled = true')}: sweep.enabled: the search space is empty: add [sweep.space] "
            "entries, such as lr = [0.001, 0.0001]"
        )
    ]


def test_a_grid_of_more_than_ten_thousand_combinations_is_refused() -> None:
    hundred = "[" + ", ".join(str(n) for n in range(1, 101)) + "]"
    text = sweep_spec(f"batch_size = {hundred}\nlog_every_n_steps = {hundred}\nseed = [1, 2]", ON)
    assert problems(text) == [
        (
            f"ltgen.toml:{line_of(text, 'method =')}: sweep.method: a grid of 20000 combinations is more than 10000: use fewer values, "
            'or method = "random" or "optuna" with trials'
        )
    ]
    assert parse(sweep_spec(f"batch_size = {hundred}\nlog_every_n_steps = {hundred}", ON))


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"sweep.prune": True}, "sweep.prune", 'prunes through Optuna: needs method = "optuna"'),
        (
            {"logging.csv": False},
            "sweep.enabled",
            "the report ranks trials by their metrics.csv: needs [logging] csv = true",
        ),
        (
            {"checkpoint.save_last": False},
            "sweep.enabled",
            "interrupted trials resume from last.pt: needs [checkpoint] save_last = true",
        ),
        ({"cluster.nodes": 2}, "sweep.enabled", "a trial runs on one node: needs [cluster] nodes = 1"),
        (
            {"trainer.limit_val_batches": 0, "checkpoint.save_top_k": 0},
            "sweep.enabled",
            "needs validation, but trainer.limit_val_batches = 0 turns it off",
        ),
        (
            {"sweep.monitor": "val_acc"},
            "sweep.mode",
            'expected "min" or "max" for monitor "val_acc": the checkpoint\'s mode "min" is for its monitor "val_loss"',
        ),
        (
            GAN,
            "sweep.monitor",
            (
                'expected one of the GAN\'s validation metrics, "val_loss_d", "val_loss_g", "val_d_real", "val_d_fake" '
                '(empty takes [checkpoint] monitor "val_loss")'
            ),
        ),
        ({"sweep.method": "grd"}, "sweep.method", 'expected one of "grid", "random", "optuna", got "grd"'),
        ({"sweep.name": "my sweep"}, "sweep.name", "expected a name of letters, digits, '_' and '-' (at most 64)"),
        ({"sweep.monitor": "loss"}, "sweep.monitor", 'expected a validation metric name such as "val_loss"'),
        ({"sweep.trials": 0}, "sweep.trials", "expected an integer >= 1, got 0"),
        ({"sweep.parallel": 1001}, "sweep.parallel", "expected an integer >= 1 and <= 1000, got 1001"),
    ],
)
def test_an_enabled_sweep_refuses_settings_it_cannot_run_with(
    overrides: dict[str, Any], key: str, message: str
) -> None:
    text = sweep_spec("batch_size = [32, 64]", {**ON, **overrides})
    found = problems(text)
    assert len(found) == 1 and f": {key}: {message}" in found[0], found


def test_a_problem_names_the_line_of_the_setting_to_change() -> None:
    text = sweep_spec("batch_size = [32, 64]", {**ON, "logging.csv": False})
    assert problems(text)[0].startswith(f"ltgen.toml:{line_of(text, 'enabled = true')}: sweep.enabled: ")


def test_ltgen_check_exits_2_naming_the_entry_and_new_writes_the_space(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text(sweep_spec("lr = [0.1, 0]", ON))
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:{line_of(bad.read_text(), 'lr =')}: sweep.space.lr: expected each value to be" in result.output
    good = tmp_path / "good.toml"
    good.write_text(
        sweep_spec(
            "lr = [0.1, 0.01]\nbatch_size = { low = 16, high = 64, int = true }", {**ON, "sweep.method": "random"}
        )
    )
    result = runner.invoke(app, ["new", "demo", "--spec", str(good), "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = parse((tmp_path / "demo/ltgen.toml").read_text())
    assert written["sweep"]["enabled"] is True
    assert written["sweep"]["space"] == {"lr": [0.1, 0.01], "batch_size": {"low": 16, "high": 64, "int": True}}
