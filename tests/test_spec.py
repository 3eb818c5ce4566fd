"""The spec: defaults, validation (every problem at once, one line each), and edits that keep comments."""

import pytest

from ltgen.spec import SCHEMA, SpecError, default_text, parse, with_values


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse(text, file="ltgen.toml")
    return [str(p) for p in caught.value.problems]


def test_default_spec_is_complete_and_valid() -> None:
    text = default_text("mnist")
    spec = parse(text)
    assert spec["project"]["name"] == "mnist"
    for section, schema in SCHEMA.items():
        assert set(spec[section]) == set(schema.keys)
        assert f"[{section}]" in text


def test_missing_keys_take_their_defaults() -> None:
    spec = parse('[project]\nname = "x"\n[trainer]\nmax_epochs = 3\n')
    assert spec["trainer"]["max_epochs"] == 3
    assert spec["trainer"]["precision"] == "32"
    assert spec["cluster.slurm"]["time"] == "04:00:00"


def test_every_problem_is_reported_at_once_with_file_line_key_and_expectation() -> None:
    text = """[trainer]
max_epoch = 3
precision = "fp16"
limit_train_batches = 1.5
[cluster]
gpus = -1
[modle]
arch = "mlp"
"""
    assert problems(text) == [
        'ltgen.toml:2: trainer.max_epoch: unknown key (did you mean "max_epochs"?)',
        'ltgen.toml:3: trainer.precision: expected one of "32", "16-mixed", "bf16-mixed", got "fp16"',
        (
            "ltgen.toml:4: trainer.limit_train_batches: expected a fraction in (0.0, 1.0] (write 1.0, not 1, for all "
            "batches) or a positive integer count of batches, got 1.5"
        ),
        "ltgen.toml:6: cluster.gpus: expected an integer >= 0, got -1",
        (
            'ltgen.toml:7: modle: unknown section (did you mean "model"?); sections: project, model, data, optim, '
            "trainer, early_stopping, checkpoint, logging, cluster, sweep, hooks, debug, tune, export"
        ),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('[project]\nname = "my project"', "project.name: expected a name of letters"),
        ("[model]\nhidden_sizes = [128, 0]", "model.hidden_sizes: expected a list of 0 to 8 integers >= 1"),
        ("[model]\nchannels = [8, 8, 8, 8, 8]", "model.channels: expected a list of 1 to 4 integers >= 1"),
        ("[model]\ndropout = 1.0", "model.dropout: expected a number >= 0.0 and < 1.0, got 1.0"),
        ('[data]\nbatch_size = "64"', 'data.batch_size: expected an integer >= 1, got "64"'),
        ("[optim]\nlr = true", "optim.lr: expected a number > 0.0 and <= 10000.0, got true"),
        (
            '[optim]\nscheduler = "cosin"',
            'optim.scheduler: expected one of "none", "cosine", "step", "plateau", got "cosin" (did you mean "cosine"?)',
        ),
        (
            "[trainer]\nprecision = 32",
            'trainer.precision: expected one of "32", "16-mixed", "bf16-mixed", got 32 (write it as a string: "32")',
        ),
        ("[trainer]\nmax_epochs = 0", "trainer.max_epochs: expected an integer >= 1 (or -1), got 0"),
        ("[trainer]\nlimit_val_batches = -1", "trainer.limit_val_batches: expected a fraction in [0.0, 1.0]"),
        (
            '[early_stopping]\nmonitor = "val_loss\\"); import os; ("',
            "early_stopping.monitor: expected a validation metric name",
        ),
        (
            '[early_stopping]\nmode = "minimum"',
            'early_stopping.mode: expected one of "min", "max", got "minimum" (did you mean "min"?)',
        ),
        ('[cluster.slurm]\ntime = "4 hours"', 'cluster.slurm.time: expected a SLURM time limit such as "04:00:00"'),
        (
            '[cluster.slurm]\nsbatch_options = ["--mem=1G\\n#SBATCH --x"]',
            "cluster.slurm.sbatch_options: expected a list of sbatch options",
        ),
        (
            '[hooks]\nemit = ["on_train_epoch_ends"]',
            'got ["on_train_epoch_ends"] ("on_train_epoch_ends" is not one; did you mean "on_train_epoch_end"?)',
        ),
        ('[hooks]\nemit = ["on_fit_start", "on_fit_start"]', "hooks.emit: expected each hook listed once"),
        ("trainer = 3", "trainer: expected a table [trainer], got 3"),
    ],
)
def test_bad_values_name_the_key_and_what_was_expected(line: str, message: str) -> None:
    found = problems(line)
    assert len(found) == 1, found
    assert message in found[0]


def test_problems_across_keys() -> None:
    assert problems("[trainer]\nmax_epochs = -1\nmax_steps = -1\n") == [
        "ltgen.toml:2: trainer.max_epochs: training would never end: set max_epochs or max_steps"
    ]
    found = problems("[trainer]\nlimit_val_batches = 0\n[early_stopping]\nenabled = true\n")
    assert found == [
        "ltgen.toml:4: early_stopping.enabled: needs validation, but trainer.limit_val_batches = 0 turns it off",
        "ltgen.toml: checkpoint.save_top_k: needs validation, but trainer.limit_val_batches = 0 turns it off",
    ]
    assert problems('[optim]\nscheduler = "plateau"\nwarmup_steps = 10\n') == [
        'ltgen.toml:3: optim.warmup_steps: expected 0 with scheduler = "plateau" (warm-up works with none, cosine and step)'
    ]
    assert problems("[checkpoint]\nsave_last = false\nevery_n_steps = 10\n") == [
        "ltgen.toml:3: checkpoint.every_n_steps: writes last.pt, so it needs save_last = true"
    ]
    # SLURM's requeued job resumes from last.pt: without it, train.py would read a --resume flag it never defines
    assert problems("[checkpoint]\nsave_last = false\n[cluster.slurm]\nenabled = true\n") == [
        "ltgen.toml:4: cluster.slurm.enabled: requeues the job to resume from last.pt: needs checkpoint.save_last = true"
    ]
    assert problems('[checkpoint]\nsave_last = false\nsave_top_k = 0\n[hooks]\nemit = ["on_save_checkpoint"]\n') == [
        "ltgen.toml:5: hooks.emit: on_save_checkpoint is never called without checkpoints (save_last or save_top_k)"
    ]


def test_invalid_toml_is_one_problem_with_its_line() -> None:
    assert problems("[trainer]\nmax_epochs = \n") == [
        "ltgen.toml:2: not valid TOML: Invalid value (at line 2, column 14)"
    ]


def test_limits_follow_lightning_float_fraction_int_count() -> None:
    assert parse("[trainer]\nlimit_train_batches = 20\n")["trainer"]["limit_train_batches"] == 20
    assert parse("[trainer]\nlimit_train_batches = 0.25\n")["trainer"]["limit_train_batches"] == 0.25
    assert (
        parse("[trainer]\nlimit_val_batches = 0\n[checkpoint]\nsave_top_k = 0\n")["trainer"]["limit_val_batches"] == 0
    )


def test_with_values_keeps_comments_and_layout() -> None:
    text = "# my experiment\n[trainer]\nmax_epochs = 3  # short run\n\n[cluster]\ngpus = 1\n"
    edited = with_values(text, {"cluster.gpus": 8, "trainer.precision": "bf16-mixed", "cluster.slurm.enabled": True})
    assert edited.startswith("# my experiment\n[trainer]\nmax_epochs = 3  # short run\n")
    assert "gpus = 8" in edited
    spec = parse(edited)
    assert spec["trainer"]["precision"] == "bf16-mixed"
    assert spec["cluster.slurm"]["enabled"] is True


@pytest.mark.parametrize(
    ("dataset", "arch", "valid"),
    [
        ("mnist", "gpt", '"mlp" or "cnn" or "resnet" or "timm" or "gan"'),
        ("cifar10", "custom", '"mlp" or "cnn" or "resnet" or "timm" or "gan"'),
        ("image_folder", "gan", '"mlp" or "cnn" or "resnet" or "timm"'),
        ("csv", "resnet", '"mlp"'),
        ("text", "mlp", '"gpt"'),
        ("custom", "cnn", '"custom" or "mlp"'),
    ],
)
def test_a_model_that_does_not_fit_the_dataset_names_the_ones_that_do(dataset: str, arch: str, valid: str) -> None:
    found = problems(f'[model]\narch = "{arch}"\n[data]\ndataset = "{dataset}"\n')
    assert found == [f'ltgen.toml:2: model.arch: "{arch}" does not fit data.dataset = "{dataset}": choose {valid}']


def test_keys_of_other_tasks_are_accepted_and_ignored() -> None:
    """Switching a project between tasks is a one-line edit: the other tasks' keys stay in the file."""
    text = with_values(default_text("x"), {"data.dataset": "text", "model.arch": "gpt", "model.hidden_sizes": [7]})
    spec = parse(text)
    assert (spec["data"]["dataset"], spec["model"]["arch"], spec["data"]["block_size"]) == ("text", "gpt", 256)
    back = with_values(text, {"data.dataset": "mnist", "model.arch": "mlp"})
    assert parse(back)["model"]["hidden_sizes"] == [7]


def test_task_keys_are_checked() -> None:
    assert problems('[model]\narch = "gpt"\nn_head = 5\n[data]\ndataset = "text"\n') == [
        "ltgen.toml: model.n_embd: expected a multiple of n_head (5), got 384"
    ]
    assert problems("[model]\ndepth = 50\n") == ["ltgen.toml:2: model.depth: expected one of 10, 18, 34, got 50"]
    for bad in ('"/etc/passwd"', '"../up.txt"', '""', '"C:data.csv"'):
        assert "a file name relative to --data-dir" in problems(f"[data]\ntext_file = {bad}\n")[0]
    assert problems('[data]\ntask = "ranking"\n') == [
        'ltgen.toml:2: data.task: expected one of "classification", "regression", got "ranking"'
    ]
    small = '[data]\ndataset = "image_folder"\nimage_size = 8\n[model]\narch = "cnn"\nchannels = [8, 8, 8, 8]\n'
    assert problems(small) == [
        "ltgen.toml:3: data.image_size: expected at least 16: each of the 4 conv blocks halves it"
    ]


GAN = '[model]\narch = "gan"\n'


def test_a_gan_ranks_checkpoints_only_by_a_metric_its_validation_returns() -> None:
    gan = GAN + '[trainer]\nmanual_optimization = true\n[optim]\nscheduler = "none"\n'
    found = problems(gan + "[checkpoint]\nsave_top_k = 2\n")  # the default monitor, val_loss, is not one
    metrics = '"val_loss_d", "val_loss_g", "val_d_real", "val_d_fake"'
    assert found == [f"ltgen.toml: checkpoint.monitor: expected one of the GAN's validation metrics, {metrics}"]
    spec = parse(gan + '[checkpoint]\nsave_top_k = 2\nmonitor = "val_d_fake"\nmode = "max"\n')
    assert spec["checkpoint"]["monitor"] == "val_d_fake"


def test_a_gan_needs_manual_optimization_and_a_constant_learning_rate() -> None:
    found = problems(GAN)
    assert any("trainer.manual_optimization: expected true" in p for p in found)
    assert any('optim.scheduler: expected "none"' in p for p in found)
    spec = parse(
        GAN + '[trainer]\nmanual_optimization = true\n[optim]\nscheduler = "none"\n[checkpoint]\nsave_top_k = 0\n'
    )
    assert spec["model"]["latent_dim"] == 100  # its betas: DCGAN's [0.5, 0.999], which `ltgen new --model gan` writes


@pytest.mark.parametrize(
    ("trainer", "extra", "key"),
    [
        ("", '[optim]\nscheduler = "plateau"', "optim.scheduler"),
        ("", '[optim]\nscheduler_interval = "epoch"', "optim.scheduler"),
        ('nonfinite_loss = "skip"', "", "trainer.nonfinite_loss"),
        ("", "[debug]\nlog_grad_norm = true", "debug.log_grad_norm"),
        ("", '[hooks]\nemit = ["on_before_optimizer_step"]', "hooks.emit"),
    ],
)
def test_manual_optimization_refuses_what_training_step_does_itself(trainer: str, extra: str, key: str) -> None:
    found = problems(f"[trainer]\nmanual_optimization = true\n{trainer}\n{extra}\n")
    assert any(f": {key}: " in p for p in found), found


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('[cluster]\nstrategy = "fsdp"', "cluster.strategy", "gpus > 1"),
        ('[model]\narch = "gan"\n[cluster]\ngpus = 2\nstrategy = "fsdp"', "cluster.strategy", "gan"),
        ('[cluster]\ngpus = 2\nstrategy = "fsdp"\n[trainer]\ncompile = true', "trainer.compile", "fsdp"),
        ("[cluster]\ngpus = 2\nfsdp_cpu_offload = true", "cluster.fsdp_cpu_offload", "fsdp"),
        ('[cluster]\nstrategy = "zero3"', "cluster.strategy", '"ddp", "fsdp"'),
    ],
)
def test_fsdp_settings_that_cannot_work_are_refused(text: str, key: str, fragment: str) -> None:
    found = problems(text + "\n")
    assert any(f": {key}: " in p and fragment in p for p in found), found


def test_fsdp_on_several_gpus_is_valid() -> None:
    spec = parse('[cluster]\ngpus = 2\nstrategy = "fsdp"\nfsdp_cpu_offload = true\n')
    assert (spec["cluster"]["strategy"], spec["cluster"]["fsdp_cpu_offload"]) == ("fsdp", True)


GPT2_SMALL = '[data]\ndataset = "text"\n[model]\narch = "gpt"\ninit_from = "gpt2"\n'
GPT2_SHAPE = "n_layer = 12\nn_head = 12\nn_embd = 768\nbias = true\n"


def test_gpt2_from_the_hub_fixes_the_architecture_and_the_block_size() -> None:
    assert problems(GPT2_SMALL + "n_layer = 6\n") == [
        'ltgen.toml:6: model.n_layer: expected 12, the value of init_from = "gpt2"\'s weights',
        'ltgen.toml: model.n_head: expected 12, the value of init_from = "gpt2"\'s weights',
        'ltgen.toml: model.n_embd: expected 768, the value of init_from = "gpt2"\'s weights',
        'ltgen.toml: model.bias: expected true: init_from = "gpt2"\'s weights have biases',
    ]
    parse(GPT2_SMALL + GPT2_SHAPE)  # GPT-2's own shape: valid
    too_long = (GPT2_SMALL + GPT2_SHAPE).replace('dataset = "text"\n', 'dataset = "text"\nblock_size = 2048\n')
    assert problems(too_long) == [
        "ltgen.toml:3: data.block_size: expected at most 1024: GPT-2's weights have 1024 positions"
    ]


def test_a_misspelt_gpt2_name_is_told_apart_from_a_path() -> None:
    found = problems(GPT2_SMALL.replace('"gpt2"', '"gtp2"') + GPT2_SHAPE)
    assert found == ['ltgen.toml:5: model.init_from: "gtp2" is no GPT-2 on the hub and no path: did you mean "gpt2"?']
    parse(GPT2_SMALL.replace('"gpt2"', '"weights/gpt2-small"'))  # a path: its config is checked when train.py runs


def test_gpt2_weights_bring_gpt2s_tokenizer() -> None:
    spec = GPT2_SMALL.replace('"gpt2"', '"w/gpt2"').replace(
        'dataset = "text"\n', 'dataset = "text"\ntokenizer = "bpe"\n'
    )
    assert [str(w) for w in parse(spec, file="ltgen.toml").warnings] == [
        (
            'ltgen.toml line 3: [data] tokenizer = "bpe" has no effect with [model] init_from "w/gpt2" (it applies '
            'to init_from = "scratch"); remove it or set it back to "char"'
        )
    ]


def test_the_cosine_ends_below_the_learning_rate() -> None:
    found = problems("[optim]\nlr = 0.001\nmin_lr = 0.001\n")
    assert found == ["ltgen.toml:3: optim.min_lr: expected less than lr (0.001): the cosine decays from lr to min_lr"]
    warnings = parse('[optim]\nscheduler = "step"\nmin_lr = 0.1\n', file="ltgen.toml").warnings
    assert str(warnings[0]).startswith('ltgen.toml line 3: [optim] min_lr = 0.1 has no effect with scheduler "step"')


def test_timm_backbones_fit_image_datasets_and_ddp_only() -> None:
    parse('[model]\narch = "timm"\ntimm_model = "convnext_tiny.fb_in22k"\n')
    assert problems('[model]\narch = "timm"\n[data]\ndataset = "csv"\n')[0].endswith('choose "mlp"')
    assert "a timm model name" in problems('[model]\narch = "timm"\ntimm_model = "timm/resnet50"\n')[0]
    fsdp = '[model]\narch = "timm"\n[cluster]\ngpus = 2\nstrategy = "fsdp"\n'
    assert any('"fsdp" does not support arch = "timm"' in p for p in problems(fsdp))
