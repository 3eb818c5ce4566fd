"""Keys set where they have no effect: `ltgen check`, `new` and `regen` warn about each one and go on (exit 0).

The ltgen.toml that `ltgen new` writes lists every key at its default, so only a value changed from its default
is one the user meant something by, and only that is warned about. Where a key has an effect is declared beside
it (`Key.applies`, in the feature that owns it); the renders below prove each warning true (where a key does not
apply, changing it changes no emitted byte) and a sample of the keys that do apply to change the render.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import make_project, rendered, spec_text
from ltgen.checks import Key, boolean, only_with
from ltgen.cli import app
from ltgen.rules import no_effect
from ltgen.schema import SchemaError, assemble
from ltgen.spec import DATASETS, SCHEMA, VALID_ARCHS, dataset_seeds, default_text, model_seeds, parse, with_values

runner = CliRunner()

TEXT = {"data.dataset": "text", "model.arch": "gpt"}
GAN = {"data.dataset": "cifar10", "model.arch": "gan", **model_seeds("gan")}


def ltgen(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def line_of(text: str, start: str) -> int:
    """The number of the spec line that starts with `start`."""
    return next(number for number, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def warned(overrides: dict[str, Any]) -> list[str]:
    """The warnings of the default spec with `overrides`, as printed."""
    return [str(warning) for warning in parse(spec_text("demo", overrides)).warnings]


# --- the commands -------------------------------------------------------------------------------------------


def test_check_warns_about_augment_on_text_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "ltgen.toml"
    path.write_text(spec_text("demo", {**TEXT, "data.augment": True}))
    result = ltgen("check", path)
    assert result.exit_code == 0
    n = line_of(path.read_text(), "augment = true")
    assert result.stderr.splitlines()[-1] == (
        f'{path} line {n}: [data] augment = true has no effect with dataset "text" (it applies to image datasets); '
        "remove it or set it back to false"
    )
    assert f"{path}: ok (demo: gpt on text" in result.stdout
    assert "Traceback" not in result.output
    # a spec with problems reports them alone, as before: warnings are for specs that work
    path.write_text(with_values(path.read_text(), {"cluster.nodes": 0}))
    result = ltgen("check", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}:{line_of(path.read_text(), 'nodes = 0')}: cluster.nodes: expected an integer >= 1, got 0",
        f"1 problem in {path}; nothing was written.",
    ]


def test_new_from_a_spec_warns_and_writes_the_project(tmp_path: Path) -> None:
    spec_file = tmp_path / "csv.toml"
    spec_file.write_text(spec_text("csv", {"data.dataset": "csv", "data.image_size": 128}))
    result = ltgen("new", "tab", "--dir", tmp_path, "--spec", spec_file)
    assert result.exit_code == 0
    n = line_of(spec_file.read_text(), "image_size = 128")
    assert result.stderr.splitlines()[-1] == (
        f'{spec_file} line {n}: [data] image_size = 128 has no effect with dataset "csv" '
        '(it applies to dataset "image_folder"); remove it or set it back to 64'
    )
    assert (tmp_path / "tab/train.py").is_file()
    assert parse((tmp_path / "tab/ltgen.toml").read_text())["data"]["image_size"] == 128, "the spec is kept as written"


def test_regen_warns_and_changes_nothing_for_a_key_of_another_model(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")  # an MLP on MNIST
    code = [path for path in project.rglob("*") if path.is_file() and path.suffix in (".py", ".md", ".sh")]
    before = {path: path.read_bytes() for path in code}
    spec_path = project / "ltgen.toml"
    spec_path.write_text(with_values(spec_path.read_text(), {"model.n_layer": 12}))
    result = ltgen("regen", project)
    assert result.exit_code == 0
    n = line_of(spec_path.read_text(), "n_layer = 12")
    assert result.stderr.splitlines()[-1] == (
        f'{spec_path} line {n}: [model] n_layer = 12 has no effect with arch "mlp" (it applies to arch "gpt"); '
        "remove it or set it back to 6"
    )
    assert "Nothing changed" in result.stdout
    assert {path: path.read_bytes() for path in before} == before


# --- what is warned about -----------------------------------------------------------------------------------


def test_no_spec_that_ltgen_new_writes_is_warned_about() -> None:
    """Every key at its default, for every --dataset and --model that fit (their seeds included)."""
    for dataset in DATASETS:
        for arch in VALID_ARCHS[dataset]:
            seeds = model_seeds(arch) | dataset_seeds(dataset) | {"data.dataset": dataset, "model.arch": arch}
            assert parse(with_values(default_text("x"), seeds)).warnings == (), (dataset, arch)


def test_a_key_written_at_its_default_is_not_warned_about() -> None:
    assert warned({**TEXT, "data.augment": False, "model.hidden_sizes": [128]}) == []


def test_zero_is_not_the_default_false() -> None:
    """0 == False in Python, but a threshold of 0 is a threshold: early stopping is off, so it does nothing."""
    n = line_of(default_text("demo"), "stopping_threshold =")
    assert warned({"early_stopping.stopping_threshold": 0}) == [
        (
            f"ltgen.toml line {n}: [early_stopping] stopping_threshold = 0 has no effect with enabled false "
            "(it applies when early stopping is enabled); remove it or set it back to false"
        )
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {**GAN, "optim.lr": 0.01},
            (
                '[optim] lr = 0.01 has no effect with [model] arch "gan" (it applies to every arch but "gan"); '
                "remove it or set it back to 0.001"
            ),
        ),
        (
            {"data.val_size": 500, "data.val_fraction": 0.2},
            (
                "[data] val_fraction = 0.2 has no effect with val_size 500 (it applies when val_size = 0); "
                "remove it or set it back to 0.1"
            ),
        ),
        (
            {"optim.scheduler": "none", "optim.scheduler_interval": "epoch"},
            (
                '[optim] scheduler_interval = "epoch" has no effect with scheduler "none" and warmup_steps 0 '
                '(it applies to a schedule: a scheduler, or a warm-up); remove it or set it back to "step"'
            ),
        ),
        (
            {"logging.tensorboard": False, "logging.csv": False, "debug.log_grad_norm": True},
            (
                "[debug] log_grad_norm = true has no effect with [logging] tensorboard false and [logging] csv false "
                "and [logging] wandb false and [logging] mlflow false (it applies where a logger is on: "
                "tensorboard, csv, wandb or mlflow); remove it or set it back to false"
            ),
        ),
        (
            {"cluster.slurm.sbatch_options": ["--mem=64G"]},
            (
                '[cluster.slurm] sbatch_options = ["--mem=64G"] has no effect with enabled false '
                "(it applies when the SLURM launcher is enabled); remove it or set it back to []"
            ),
        ),
    ],
)
def test_each_warning_names_the_setting_that_makes_it_inert_and_the_way_back(
    overrides: dict[str, Any], message: str
) -> None:
    assert [warning.split(": ", 1)[1] for warning in warned(overrides)] == [message]


# --- each warning is true: where a key does not apply, changing it changes no emitted byte ------------------

# A value other than the default for every key that declares where it applies: one that changes the emitted
# code where the key does apply.
CHANGED: dict[str, Any] = {
    "model.hidden_sizes": [64, 32],
    "model.channels": [16, 32, 64],
    "model.dropout": 0.3,
    "model.depth": 10,
    "model.width": 32,
    "model.n_layer": 2,
    "model.n_head": 4,
    "model.n_embd": 128,
    "model.bias": True,
    "model.init_from": "weights/gpt2",
    "model.timm_model": "resnet18",
    "model.pretrained": False,
    "model.pretrained_file": "weights.pth",
    "model.freeze_backbone": True,
    "model.activation_checkpointing": True,
    "model.latent_dim": 16,
    "model.generator_width": 32,
    "model.discriminator_width": 32,
    "data.val_fraction": 0.2,
    "data.val_size": 100,
    "data.synthetic_samples": 600,
    "data.image_size": 32,
    "data.augment": True,
    "data.in_memory": False,
    "data.text_file": "other.txt",
    "data.tokenizer": "bpe",
    "data.vocab_size": 4096,
    "data.block_size": 64,
    "data.samples_per_epoch": 1000,
    "data.csv_file": "other.csv",
    "data.target": "label",
    "data.task": "regression",
    "checkpoint.monitor": "val_acc",
    "checkpoint.mode": "max",
    "data.input_shape": [5],
    "data.num_classes": 3,
    "optim.optimizer": "sgd",
    "optim.lr": 0.05,
    "optim.weight_decay": 0.0,
    "optim.momentum": 0.5,
    "optim.scheduler_interval": "epoch",
    "optim.step_size": 7,
    "optim.gamma": 0.5,
    "optim.plateau_patience": 5,
    "optim.monitor": "val_acc",
    "optim.mode": "max",
    "optim.lr_g": 1e-4,
    "optim.lr_d": 1e-4,
    "optim.betas": [0.8, 0.99],
    "optim.backbone_lr_scale": 0.1,
    "optim.min_lr": 1e-5,
    "trainer.min_epochs": 1,
    "trainer.min_steps": 5,
    "trainer.val_check_interval": 0.5,
    "trainer.check_val_every_n_epoch": 2,
    "trainer.num_sanity_val_steps": 0,
    "trainer.ema_every_n_steps": 4,
    "trainer.ema_start_step": 100,
    "early_stopping.monitor": "val_acc",
    "early_stopping.mode": "max",
    "early_stopping.patience": 5,
    "early_stopping.min_delta": 0.1,
    "early_stopping.stopping_threshold": 0.01,
    "early_stopping.divergence_threshold": 10.0,
    "cluster.slurm.partition": "gpu",
    "cluster.slurm.time": "01:00:00",
    "cluster.slurm.cpus_per_task": 4,
    "cluster.slurm.requeue_signal": "USR1",
    "cluster.slurm.signal_seconds": 60,
    "cluster.slurm.sbatch_options": ["--mem=8G"],
    "debug.log_grad_norm": True,
    "debug.nan_grad_report": True,
    "export.enabled": True,
    "logging.wandb_project": "elsewhere",
    "logging.wandb_entity": "lab",
    "logging.mlflow_tracking_uri": "http://localhost:5000",
    "logging.log_gpu_memory": False,
    "sweep.name": "lr-search",
    "sweep.method": "random",
    "sweep.trials": 20,
    "sweep.parallel": 4,
    "sweep.monitor": "val_loss",
    "sweep.mode": "max",
    "sweep.seed": 7,
    "sweep.prune": True,
    "sweep.space": {"batch_size": [32, 64]},
}
# Specs that between them leave every declared key somewhere without effect: each dataset (with a model that
# fits it), each scheduler, and each setting some key depends on.
CONTEXTS: dict[str, dict[str, Any]] = {
    "mnist": {},
    "cifar10-gan": GAN,
    "text": TEXT,
    "csv": {"data.dataset": "csv", "model.arch": "mlp"},
    "custom": {"data.dataset": "custom", "model.arch": "custom"},
    "image_folder-cnn": {"data.dataset": "image_folder", "model.arch": "cnn"},
    "synthetic-resnet": {"data.dataset": "synthetic", "model.arch": "resnet"},
    "scheduler-plateau": {"optim.scheduler": "plateau"},
    "sgd": {"optim.optimizer": "sgd"},
    "val_size": {"data.val_size": 100},
    "no-validation": {"trainer.limit_val_batches": 0, "checkpoint.save_top_k": 0},
    "no-checkpoints": {"checkpoint.save_last": False, "checkpoint.save_top_k": 0},
    "no-tensorboard": {"logging.tensorboard": False},
    "no-loggers": {"logging.tensorboard": False, "logging.csv": False},
    "wandb-mlflow": {"logging.wandb": True, "logging.mlflow": True},
}
DECLARED = [f"{name}.{key}" for name, section in SCHEMA.items() for key, k in section.keys.items() if k.applies]


def inert_changes(context: dict[str, Any]) -> dict[str, Any]:
    """CHANGED's value for each declared key that does not apply in `context` (by its declaration)."""
    values = parse(spec_text("demo", context)).values
    inert = {}
    for key in DECLARED:
        section, _, name = key.rpartition(".")
        if key not in context and key in dict(no_effect({**values, section: {**values[section], name: CHANGED[key]}})):
            inert[key] = CHANGED[key]
    return inert


def test_an_applies_that_names_no_key_is_a_schema_error() -> None:
    feature = ModuleType("ltgen.features.example")
    feature.KEYS = {"data": {"shuffle": Key(boolean, True, "", (only_with("data.sampler", "random", where=""),))}}
    with pytest.raises(SchemaError, match=r"data\.shuffle \(on data\.sampler\)"):
        assemble([feature], {"data": ("shuffle",)})


def test_every_declared_key_has_a_changed_value_and_is_inert_somewhere() -> None:
    assert sorted(CHANGED) == sorted(DECLARED)
    inert_somewhere = {key for context in CONTEXTS.values() for key in inert_changes(context)}
    assert sorted(inert_somewhere) == sorted(DECLARED)


@pytest.mark.parametrize("name", list(CONTEXTS))
def test_where_keys_do_not_apply_changing_them_changes_no_emitted_byte(name: str) -> None:
    base = spec_text("demo", CONTEXTS[name])
    assert parse(base).warnings == ()
    inert = inert_changes(CONTEXTS[name])
    changed = with_values(base, inert)
    assert sorted(warning.key for warning in parse(changed).warnings) == sorted(inert)
    before, after = rendered(base), rendered(changed)
    assert [path for path in before if before[path] != after.get(path)] == [] and after.keys() == before.keys()


# A sample of keys in specs where they do apply: no warning, and the emitted code changes.
APPLIES: list[tuple[str, dict[str, Any]]] = [
    ("data.augment", {}),
    ("data.augment", GAN),
    ("data.image_size", {"data.dataset": "image_folder", "model.arch": "resnet"}),
    ("model.hidden_sizes", {"data.dataset": "custom", "model.arch": "mlp"}),
    ("data.input_shape", {"data.dataset": "custom", "model.arch": "mlp"}),
    ("model.dropout", {"data.dataset": "custom", "model.arch": "custom"}),
    ("data.synthetic_samples", {"data.dataset": "csv", "model.arch": "mlp"}),
    ("data.val_fraction", {"data.dataset": "custom", "model.arch": "custom"}),
    ("optim.momentum", {"optim.optimizer": "sgd"}),
    ("optim.betas", GAN),
    ("optim.betas", {}),
    ("optim.min_lr", {}),
    ("optim.scheduler_interval", {"optim.scheduler": "none", "optim.warmup_steps": 10}),
    ("optim.gamma", {"optim.scheduler": "plateau"}),
    ("trainer.min_steps", {"early_stopping.enabled": True}),
    ("trainer.num_sanity_val_steps", {}),
    ("debug.log_grad_norm", {}),
    ("debug.nan_grad_report", {}),
    ("trainer.ema_every_n_steps", {"trainer.ema_decay": 0.999}),
    ("trainer.ema_start_step", {"trainer.ema_decay": 0.999}),
    ("logging.log_gpu_memory", {}),
    ("cluster.slurm.requeue_signal", {"cluster.slurm.enabled": True}),
]


@pytest.mark.parametrize(("key", "context"), APPLIES, ids=[f"{key}-{i}" for i, (key, _) in enumerate(APPLIES)])
def test_where_a_key_applies_it_is_not_warned_about_and_changes_the_code(key: str, context: dict[str, Any]) -> None:
    base = spec_text("demo", context)
    changed = spec_text("demo", {**context, key: CHANGED[key]})
    assert parse(changed).warnings == ()
    assert rendered(changed) != rendered(base)
