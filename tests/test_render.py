"""Rendering: the template's contract with the context builder, features that are off emit no code, no spec
value can inject code, and every combination of features gives code that black, ruff and Python accept."""

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import make_project, rendered, run_python, spec_text
from ltgen import context, render
from ltgen.spec import HOOKS, SCHEMA, SpecError, parse

MINIMAL = {
    "data.dataset": "synthetic",
    "optim.optimizer": "sgd",
    "optim.scheduler": "none",
    "trainer.num_sanity_val_steps": 0,
    "trainer.nonfinite_loss": "off",
    "checkpoint.save_top_k": 0,
    "checkpoint.save_last": False,
    "logging.tensorboard": False,
    "logging.csv": False,
    "logging.progress_bar": False,
    "debug.param_summary": False,
    "model.dropout": 0.0,
}

# Feature combinations that together switch every block of the templates on at least once.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "minimal": MINIMAL,
    "cnn_bf16_everything": {
        "model.arch": "cnn",
        "data.dataset": "synthetic",
        "trainer.precision": "bf16-mixed",
        "trainer.accumulate_grad_batches": 3,
        "trainer.gradient_clip_val": 1.0,
        "trainer.val_check_interval": 0.5,
        "trainer.check_val_every_n_epoch": 1,
        "early_stopping.enabled": True,
        "early_stopping.mode": "max",
        "early_stopping.monitor": "val_acc",
        "optim.warmup_steps": 5,
        "debug.log_grad_norm": True,
        "hooks.emit": list(HOOKS),
    },
    "fp16_skip_step_workers": {
        "data.dataset": "synthetic",
        "trainer.precision": "16-mixed",
        "trainer.nonfinite_loss": "skip",
        "data.num_workers": 2,
        "optim.optimizer": "adam",
        "optim.scheduler": "step",
        "optim.step_size": 2,
        "checkpoint.mode": "max",
        "checkpoint.monitor": "val_acc",
        "checkpoint.save_top_k": -1,
    },
    "plateau_overfit_no_test": {
        "data.dataset": "synthetic",
        "optim.scheduler": "plateau",
        "debug.overfit_batches": 2,
        "trainer.limit_test_batches": 0,
        "trainer.check_val_every_n_epoch": 2,
        "logging.tensorboard": False,
        "debug.detect_anomaly": True,
    },
    "sweeps_and_every_logger": {
        "data.dataset": "synthetic",
        "logging.wandb": True,
        "logging.mlflow": True,
        "cluster.slurm.enabled": True,
        "sweep.enabled": True,
        "sweep.method": "optuna",
        "sweep.prune": True,
        "sweep.space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [32, 64]},
    },
    "grid_sweep_on_4_gpus": {
        "cluster.gpus": 4,
        "sweep.enabled": True,
        "sweep.space": {"seed": [1, 2, 3], "limit_train_batches": [0.5, 1.0]},
    },
    "no_validation": {
        "data.dataset": "synthetic",
        "trainer.limit_val_batches": 0,
        "checkpoint.save_top_k": 0,
        "optim.warmup_steps": 3,
        "optim.scheduler": "none",
        "logging.progress_bar": False,
    },
    "ddp_accumulate_amp": {
        "data.dataset": "synthetic",
        "cluster.gpus": 2,
        "trainer.accumulate_grad_batches": 2,
        "trainer.precision": "bf16-mixed",
        "trainer.gradient_clip_val": 0.5,
        "early_stopping.enabled": True,
        "data.num_workers": 1,
        "hooks.emit": ["on_train_epoch_end", "on_save_checkpoint"],
    },
    "timm_frozen_checkpointed": {
        "data.dataset": "synthetic",
        "model.arch": "timm",
        "model.timm_model": "test_resnet",
        "model.pretrained": False,
        "model.freeze_backbone": True,
        "model.activation_checkpointing": True,
        "optim.backbone_lr_scale": 0.1,
    },
    "text_bpe_checkpointed": {
        "data.dataset": "text",
        "model.arch": "gpt",
        "model.n_layer": 2,
        "model.n_head": 2,
        "model.n_embd": 32,
        "data.block_size": 32,
        "data.tokenizer": "bpe",
        "data.vocab_size": 512,
        "model.activation_checkpointing": True,
        "optim.min_lr": 1e-4,
        "optim.warmup_steps": 10,
    },
    "slurm_nodes_compile": {
        "cluster.gpus": 4,
        "cluster.nodes": 2,
        "cluster.slurm.enabled": True,
        "trainer.compile": True,
        "checkpoint.save_top_k": 0,
        "debug.overfit_batches": 1,
    },
}


def code_of(overrides: dict[str, Any]) -> dict[str, str]:
    return rendered(spec_text("demo", overrides))


def test_copier_yml_lists_exactly_the_context_keys_and_declares_no_questions() -> None:
    """The values reach copier as data; copier.yml documents each one (as a comment, `#   name (type): what`)."""
    text = (render.templates_dir() / "copier.yml").read_text()
    assert all(key.startswith("_") for key in yaml.safe_load(text)), "a question would be cast and rendered again"
    documented = set(re.findall(r"^#   (\w+) \((?:str|int|bool|yaml)\): ", text, flags=re.MULTILINE))
    for overrides in VARIANTS.values():
        assert set(context.build(parse(spec_text("demo", overrides)))) == documented


@pytest.mark.parametrize(
    ("overrides", "absent"),
    [
        (
            {},
            [
                "autocast",
                "GradScaler",
                "scaler",
                "patience",
                "best_score",
                "no_sync",
                "accumulate",
                "clip_grad",
                "DistributedDataParallel",
                "torch.distributed",
                "compile",
                "detect_anomaly",
                "overfit",
                "num_workers",
                "get_worker_info",
                "SLURM",
                "subprocess",
                "grad_norm",
            ],
        ),
        ({"trainer.precision": "bf16-mixed"}, ["GradScaler", "scaler", "torch.float16"]),
        (
            MINIMAL,
            [
                "checkpoint",
                "resume",
                "signal",
                "SummaryWriter",
                "writer",
                "tqdm",
                "summary",
                "isfinite",
                "scheduler",
                "Dropout",
                "dropout",
                "out_dir",
                "data_dir",
                "sanity",
                "hook",
                "batch_in_epoch",
            ],
        ),
        (
            {"trainer.limit_val_batches": 0, "trainer.limit_test_batches": 0, "checkpoint.save_top_k": 0},
            ["evaluate", "validation_step", "test_step", "val_", "itertools"],
        ),
        ({"cluster.gpus": 4}, ["SLURM", "scontrol", "SIGUSR", "no_sync"]),
    ],
)
def test_features_that_are_off_emit_no_code(overrides: dict[str, Any], absent: list[str]) -> None:
    code = code_of(overrides)
    python = "\n".join(code[path] for path in ("train.py", "steps.py", "model.py", "checkpoint.py") if path in code)
    present = [word for word in absent if word in python]
    assert not present, f"emitted although off: {present}"


def test_features_that_are_off_emit_no_files() -> None:
    assert "checkpoint.py" not in code_of(MINIMAL)
    assert not [path for path in code_of({}) if path.startswith("launch/")]
    assert "launch/torchrun.sh" in code_of({"cluster.gpus": 2})


def test_only_the_hooks_asked_for_are_emitted_and_called() -> None:
    code = code_of({"hooks.emit": ["on_train_epoch_end", "on_fit_start"]})
    stubs = [
        node.name
        for node in ast.parse(code["steps.py"]).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("on_")
    ]
    assert stubs == ["on_fit_start", "on_train_epoch_end"]
    assert "on_train_epoch_end(model, epoch)" in code["train.py"]
    assert "on_fit_start(model)" in code["train.py"]
    assert "on_fit_end" not in code["train.py"]
    # as Lightning's Trainer: on_fit_start, then the sanity check, then the first training step
    train = code["train.py"]
    assert train.index("on_fit_start(model)") < train.index("sanity_batches =") < train.index("training_step(model")


@pytest.mark.parametrize(
    ("section", "key"),
    [
        (section, key)
        for section, schema in SCHEMA.items()
        for key, k in schema.keys.items()
        if isinstance(k.default, str)
    ],
)
def test_no_string_value_can_reach_the_code_unchecked(section: str, key: str) -> None:
    payload = 'x"\nimport os; os.system("echo owned")  # '
    with pytest.raises(SpecError) as caught:
        parse(spec_text("demo", {f"{section}.{key}": payload}))
    assert [p.key for p in caught.value.problems] == [f"{section}.{key}"]


def test_minimal_spec_reads_like_a_small_hand_written_loop() -> None:
    code = code_of(MINIMAL)
    assert len(code["train.py"].splitlines()) <= 140
    assert set(code) == {
        ".gitignore",
        "README.md",
        "data.py",
        "flags.py",
        "model.py",
        "pyproject.toml",
        "steps.py",
        "tests/test_smoke.py",
        "train.py",
    }


def test_default_train_py_stays_short() -> None:
    assert len(rendered(spec_text("mnist", {"cluster.gpus": 4}))["train.py"].splitlines()) <= 300


@pytest.fixture(scope="module")
def variant_projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    return {name: make_project(root / name, overrides) for name, overrides in VARIANTS.items()}


@pytest.mark.parametrize("tool", [["black", "--check", "."], ["ruff", "check", "."]])
def test_every_variant_passes_black_and_ruff(variant_projects: dict[str, Path], tool: list[str]) -> None:
    for name, project in variant_projects.items():  # each with its own pyproject.toml
        result = subprocess.run([sys.executable, "-m", *tool], cwd=project, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_runs_a_fast_dev_run(variant_projects: dict[str, Path], name: str) -> None:
    result = run_python(
        variant_projects[name], "train.py", "--fast-dev-run", "--device", "cpu", "--dataset", "synthetic"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (variant_projects[name] / "outputs").exists()


OTHER_TASKS_KEYS = {
    "data.image_size": 96,
    "data.in_memory": False,
    "data.text_file": "other.txt",
    "data.block_size": 64,
    "data.samples_per_epoch": 5,
    "data.csv_file": "other.csv",
    "data.target": "label",
    "data.task": "regression",
    "data.input_shape": [7],
    "data.num_classes": 3,
    "model.depth": 34,
    "model.width": 16,
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 32,
    "model.bias": True,
    "model.channels": [4],
}


@pytest.mark.parametrize(
    ("task", "own"),
    [
        ({"data.dataset": "mnist", "model.arch": "mlp"}, []),
        ({"data.dataset": "cifar10", "model.arch": "resnet"}, ["model.depth", "model.width"]),
        (
            {"data.dataset": "text", "model.arch": "gpt"},
            [
                "data.text_file",
                "data.block_size",
                "data.samples_per_epoch",
                "model.n_layer",
                "model.n_head",
                "model.n_embd",
            ]
            + ["model.bias"],
        ),
        ({"data.dataset": "csv", "model.arch": "mlp"}, ["data.csv_file", "data.target", "data.task"]),
        ({"data.dataset": "custom", "model.arch": "custom"}, ["data.input_shape", "data.num_classes"]),
    ],
)
def test_keys_of_other_tasks_emit_no_code(task: dict[str, Any], own: list[str]) -> None:
    """Switching tasks is a one-line edit: the keys of the tasks not selected stay in ltgen.toml, and change nothing."""
    others = {key: value for key, value in OTHER_TASKS_KEYS.items() if key not in own}
    assert rendered(spec_text("p", task)) == rendered(spec_text("p", {**task, **others}))
    if own:  # and the task's own keys do reach its code
        assert rendered(spec_text("p", task)) != rendered(spec_text("p", {**task, **OTHER_TASKS_KEYS}))
