"""`ltgen new` and `ltgen check`, as a user calls them."""

import json
import os
import shlex
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltgen import __version__
from ltgen.cli import app
from ltgen.spec import parse

runner = CliRunner()


def ltgen(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def tree_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_new_writes_a_project_and_says_what_to_run_next(tmp_path: Path) -> None:
    result = ltgen("new", "mnist", "--gpus", "4", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    project = tmp_path / "mnist"
    files = set(tree_of(project))
    assert {"train.py", "steps.py", "model.py", "data.py", "checkpoint.py", "README.md", "pyproject.toml"} <= files
    assert {"tests/test_smoke.py", "launch/torchrun.sh", "ltgen.toml", ".ltgen/base.json", ".gitignore"} <= files
    assert os.access(project / "launch/torchrun.sh", os.X_OK)
    assert "cd " in result.output and "python train.py --fast-dev-run --dataset synthetic" in result.output
    # a fresh machine has no torch: the first command after cd installs what the project's pyproject.toml lists
    steps = [line.strip() for line in result.output.splitlines() if line.startswith("  ")]
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    assert steps[1].startswith("pip install " + shlex.join(dependencies)) and "torch" in steps[1]
    assert steps[2].startswith("python train.py --fast-dev-run")
    spec = parse((project / "ltgen.toml").read_text())
    assert spec["project"]["name"] == "mnist"
    assert spec["cluster"]["gpus"] == 4
    base = json.loads((project / ".ltgen/base.json").read_text())
    assert base["ltgen_version"] == __version__
    assert base["spec"] == (project / "ltgen.toml").read_text()
    assert base["files"]["train.py"] == (project / "train.py").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name != "mnist"], "no staging folder left behind"


def test_new_flags_seed_the_spec(tmp_path: Path) -> None:
    args = ["--nodes", "2", "--precision", "bf16-mixed", "--dataset", "synthetic", "--model", "cnn", "--slurm"]
    assert ltgen("new", "demo", "--dir", str(tmp_path), *args).exit_code == 0
    spec = parse((tmp_path / "demo/ltgen.toml").read_text())
    assert spec["cluster"]["nodes"] == 2
    assert spec["trainer"]["precision"] == "bf16-mixed"
    assert spec["data"]["dataset"] == "synthetic"
    assert spec["model"]["arch"] == "cnn"
    assert spec["cluster.slurm"]["enabled"] is True


@pytest.mark.parametrize(
    ("args", "arch", "augment", "extra"),
    [
        (["--dataset", "cifar10"], "resnet", True, ["numpy>=1.24", "pillow>=10"]),
        (["--dataset", "image_folder", "--model", "cnn"], "cnn", True, ["pillow>=10"]),
        (["--dataset", "text"], "gpt", False, ["numpy>=1.24"]),  # the token files' memory maps
        (["--dataset", "csv"], "mlp", False, ["numpy>=1.24", "pyarrow>=16"]),
        (["--dataset", "custom"], "custom", False, []),
    ],
)
def test_new_dataset_seeds_its_usual_model_and_dependencies(
    tmp_path: Path, args: list[str], arch: str, augment: bool, extra: list[str]
) -> None:
    result = ltgen("new", "p", "--dir", str(tmp_path), *args)
    assert result.exit_code == 0, result.output
    spec = parse((tmp_path / "p/ltgen.toml").read_text())
    assert (spec["data"]["dataset"], spec["model"]["arch"], spec["data"]["augment"]) == (args[1], arch, augment)
    dependencies = tomllib.loads((tmp_path / "p/pyproject.toml").read_text())["project"]["dependencies"]
    assert dependencies == ["torch>=2.9", "tensorboard>=2.14", "tqdm>=4.64", *extra]
    assert f"pip install {shlex.join(dependencies)}" in result.output


def test_new_gan_turns_on_manual_optimization_and_keeps_only_last(tmp_path: Path) -> None:
    result = ltgen("new", "g", "--dir", str(tmp_path), "--dataset", "mnist", "--model", "gan")
    assert result.exit_code == 0, result.output
    spec = parse((tmp_path / "g/ltgen.toml").read_text())
    assert spec["model"]["arch"] == "gan" and spec["trainer"]["manual_optimization"] is True
    assert (spec["optim"]["scheduler"], spec["checkpoint"]["save_top_k"]) == ("none", 0)
    assert spec["optim"]["betas"] == [0.5, 0.999]  # DCGAN's (other models: Adam's default, [0.9, 0.999])
    assert (tmp_path / "g/manual.py").is_file() and "def sample_images" in (tmp_path / "g/steps.py").read_text()


def test_new_text_takes_nanogpts_optimizer_settings(tmp_path: Path) -> None:
    result = ltgen("new", "lm", "--dir", str(tmp_path), "--dataset", "text")
    assert result.exit_code == 0, result.output
    spec = parse((tmp_path / "lm/ltgen.toml").read_text())
    optim = spec["optim"]
    assert (optim["betas"], optim["weight_decay"], optim["min_lr"], optim["warmup_steps"]) == (
        [0.9, 0.99],
        0.1,
        1e-4,
        100,
    )
    assert spec["trainer"]["gradient_clip_val"] == 1.0
    steps = (tmp_path / "lm/steps.py").read_text()
    assert "betas=(0.9, 0.99)" in steps and 'if p.dim() >= 2], "weight_decay": 0.1' in steps


def test_new_timm_on_an_image_folder_reads_images_at_the_backbones_size(tmp_path: Path) -> None:
    result = ltgen("new", "x", "--dir", str(tmp_path), "--dataset", "image_folder", "--model", "timm")
    assert result.exit_code == 0, result.output
    spec = parse((tmp_path / "x/ltgen.toml").read_text())
    assert (spec["model"]["arch"], spec["data"]["image_size"]) == ("timm", 224)  # ImageNet's, not upsampled from 64
    assert "timm>=1.0" in tomllib.loads((tmp_path / "x/pyproject.toml").read_text())["project"]["dependencies"]
    on_mnist = ltgen("new", "m", "--dir", str(tmp_path), "--dataset", "mnist", "--model", "timm")
    assert on_mnist.exit_code == 0 and "no effect" not in on_mnist.output  # image_size is image_folder's alone


def test_new_with_strategy_fsdp_writes_the_sharding(tmp_path: Path) -> None:
    result = ltgen("new", "big", "--dir", str(tmp_path), "--dataset", "text", "--gpus", "2", "--strategy", "fsdp")
    assert result.exit_code == 0, result.output
    assert parse((tmp_path / "big/ltgen.toml").read_text())["cluster"]["strategy"] == "fsdp"
    assert "def shard(" in (tmp_path / "big/distributed.py").read_text()
    assert "def fsdp_blocks(" in (tmp_path / "big/model.py").read_text()
    assert "2 GPU(s) x 1 node(s), fsdp, precision 32" in ltgen("check", str(tmp_path / "big")).output
    single = ltgen("new", "one", "--dir", str(tmp_path), "--strategy", "fsdp")  # one GPU: nothing to shard across
    assert single.exit_code == 2 and "cluster.strategy" in single.output and not (tmp_path / "one").exists()


def test_new_with_a_model_that_does_not_fit_the_dataset(tmp_path: Path) -> None:
    result = ltgen("new", "p", "--dir", str(tmp_path), "--dataset", "text", "--model", "resnet")
    assert result.exit_code == 2
    assert 'model.arch: "resnet" does not fit data.dataset = "text": choose "gpt"' in result.output
    assert not (tmp_path / "p").exists()


def test_new_from_a_spec_file_keeps_its_comments(tmp_path: Path) -> None:
    source = tmp_path / "mine.toml"
    source.write_text("# my sweep\n[trainer]\nmax_epochs = 3  # quick\n")
    assert ltgen("new", "exp", "--dir", str(tmp_path), "--spec", str(source), "--gpus", "2").exit_code == 0
    text = (tmp_path / "exp/ltgen.toml").read_text()
    assert text.startswith("# my sweep\n[trainer]\nmax_epochs = 3  # quick\n")
    spec = parse(text)
    assert (spec["project"]["name"], spec["cluster"]["gpus"], spec["trainer"]["max_epochs"]) == ("exp", 2, 3)


def test_same_spec_gives_a_byte_identical_tree(tmp_path: Path) -> None:
    for parent in ("a", "b"):
        assert ltgen("new", "twin", "--dir", str(tmp_path / parent), "--precision", "16-mixed").exit_code == 0
    assert tree_of(tmp_path / "a/twin") == tree_of(tmp_path / "b/twin")


@pytest.mark.parametrize("name", ["my project", "1st", "_x", "a/b", "../up", "x" * 65, "naïve"])
def test_new_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    result = ltgen("new", name, "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert "project name" in result.output
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_a_non_empty_folder_and_force_keeps_other_files(tmp_path: Path) -> None:
    project = tmp_path / "mnist"
    (project / "data").mkdir(parents=True)
    (project / "data/train-images-idx3-ubyte").write_bytes(b"mine")
    result = ltgen("new", "mnist", "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert "not empty" in result.output and "--force" in result.output
    assert tree_of(project) == {"data/train-images-idx3-ubyte": b"mine"}

    assert ltgen("new", "mnist", "--dir", str(tmp_path), "--force").exit_code == 0
    assert (project / "data/train-images-idx3-ubyte").read_bytes() == b"mine"
    assert (project / "train.py").exists()


def test_new_into_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    assert ltgen("new", "mnist", "--dir", str(tmp_path)).exit_code == 0
    assert (tmp_path / "mnist/train.py").exists()


def test_new_with_a_bad_spec_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "bad.toml"
    source.write_text('[trainer]\nmax_epoch = 3\nprecision = "fp16"\n')
    result = ltgen("new", "exp", "--dir", str(tmp_path / "out"), "--spec", str(source))
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{source}:2: trainer.max_epoch: unknown key")
    assert lines[1].startswith(f"{source}:3: trainer.precision: expected one of")
    assert lines[2] == f"2 problems in {source}; nothing was written."
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_new_with_a_missing_or_broken_spec_file(tmp_path: Path) -> None:
    missing = ltgen("new", "exp", "--dir", str(tmp_path), "--spec", str(tmp_path / "nope.toml"))
    assert missing.exit_code == 2 and "cannot read --spec" in missing.output
    broken = tmp_path / "broken.toml"
    broken.write_text("[trainer\n")
    result = ltgen("new", "exp", "--dir", str(tmp_path), "--spec", str(broken))
    assert result.exit_code == 2 and "not valid TOML" in result.output
    assert not (tmp_path / "exp").exists()


def test_new_rejects_bad_flag_values(tmp_path: Path) -> None:
    assert ltgen("new", "x", "--dir", str(tmp_path), "--precision", "fp16").exit_code == 2
    assert ltgen("new", "x", "--dir", str(tmp_path), "--gpus", "-1").exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_check_accepts_a_folder_or_a_file_and_reports_problems(tmp_path: Path) -> None:
    assert ltgen("new", "mnist", "--dir", str(tmp_path)).exit_code == 0
    ok = ltgen("check", str(tmp_path / "mnist"))
    assert ok.exit_code == 0 and ": ok (mnist: mlp on mnist" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\ngpus = 1.5\nnodes = 0\n")
    result = ltgen("check", str(bad))
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{bad}:2: cluster.gpus: expected an integer >= 0, got 1.5",
        f"{bad}:3: cluster.nodes: expected an integer >= 1, got 0",
        f"2 problems in {bad}; nothing was written.",
    ]
    assert ltgen("check", str(tmp_path / "absent")).exit_code == 2


def test_version_and_help() -> None:
    assert ltgen("--version").output.strip() == f"ltgen {__version__}"
    help_text = ltgen("new", "--help").output
    assert "ltgen new mnist --gpus 4" in help_text
    for flag in (
        "--dir",
        "--gpus",
        "--nodes",
        "--precision",
        "--dataset",
        "--model",
        "--strategy",
        "--spec",
        "--force",
    ):
        assert flag in help_text
