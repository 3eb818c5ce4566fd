"""[export] enabled: export.py writes the trained model as a torch.export program (model.pt2) and an ONNX file
(model.onnx) with a dynamic batch size, and checks both against the model. Every model kind of the goldens is
trained two steps, exported, and its files checked again here, independently: ONNX Runtime and the loaded program
give the model's outputs at batch sizes other than export.py's. An operation an exporter cannot handle ends with
its name and a hint, not a traceback; EMA weights are what gets exported; ONNX's packages are dependencies only
of projects that export."""

from __future__ import annotations

import re
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import torch

from conftest import make_project, rendered, run_python, spec_text
from ltgen.spec import parse

onnxruntime = pytest.importorskip("onnxruntime")

ENV = {"OMP_NUM_THREADS": "1"}  # several tiny runs at once share the CPU
COMMON = {
    "export.enabled": True,
    "data.synthetic_samples": 200,
    "data.batch_size": 16,
    "logging.tensorboard": False,
    "logging.progress_bar": False,
}
# The model kinds of golden/*/ltgen.toml, tiny. mnist's and minimal's mlp is cluster's, distributed here and with EMA
# weights; the GPT of textlm is fsdp's, whose checkpoints are folders of shards.
KINDS: dict[str, dict[str, Any]] = {
    "mlp": {
        "data.dataset": "mnist",
        "model.hidden_sizes": [16],
        "cluster.gpus": 8,
        "cluster.nodes": 2,
        "trainer.ema_decay": 0.9,
    },
    "cnn": {"data.dataset": "synthetic", "model.arch": "cnn", "model.channels": [4, 8]},
    "resnet": {"data.dataset": "cifar10", "model.arch": "resnet", "model.depth": 10, "model.width": 8},
    "gan": {
        "data.dataset": "mnist",
        "model.arch": "gan",
        "trainer.manual_optimization": True,
        "checkpoint.save_top_k": 0,
        "optim.scheduler": "none",
        "model.latent_dim": 8,
        "model.generator_width": 8,
        "model.discriminator_width": 8,
    },
    "tabular": {"data.dataset": "csv", "data.task": "regression", "model.hidden_sizes": [16]},
    "gpt": {
        "data.dataset": "text",
        "model.arch": "gpt",
        "model.n_layer": 1,
        "model.n_head": 2,
        "model.n_embd": 16,
        "data.block_size": 8,
        "cluster.gpus": 2,
        "cluster.strategy": "fsdp",
    },
}
CUSTOM = {"data.dataset": "custom", "model.arch": "custom", "data.input_shape": [3, 4], "data.num_classes": 3}
TRAIN = ("train.py", "--device", "cpu", "--dataset", "synthetic", "--max-steps", "2", "--num-sanity-val-steps", "0")
TRAIN_LIMITS = ("--limit-val-batches", "1", "--limit-test-batches", "1")
# A custom op torch.export cannot trace (no fake implementation), and one it can but ONNX has no translation for.
OPS = """
@torch.library.custom_op("exporttest::untraceable", mutates_args=())
def untraceable(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@torch.library.custom_op("exporttest::no_onnx", mutates_args=())
def no_onnx(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


no_onnx.register_fake(lambda x: torch.empty_like(x))
"""
FORWARDS = {  # what torch.export stops at, and then what only ONNX's exporter does
    "op torch.export cannot trace": "self.layers(untraceable(inputs))",
    "branch on values": "self.layers(inputs if inputs.sum() > 0 else -inputs)",
    "op ONNX cannot translate": "self.layers(no_onnx(inputs))",
}


def train(project: Path) -> None:
    result = run_python(project, *TRAIN, *TRAIN_LIMITS, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]


def export(project: Path, *args: str) -> CompletedProcess:
    return run_python(project, "export.py", *args, env=ENV)


def use_forward(project: Path, forward: str) -> None:
    """Make the custom model's forward `return FORWARD`."""
    model = project / "model.py"
    text = model.read_text()
    if OPS not in text:
        text = text.replace("from torch import nn\n", "from torch import nn\n" + OPS, 1)
    model.write_text(re.sub(r"(not one nn.Sequential.\n\s*)return .*", rf"\1return {forward}", text))


def custom_failures(project: Path) -> list[CompletedProcess]:
    """Train the custom stub, then export it with each of FORWARDS, and with --no-onnx."""
    train(project)
    results = [use_forward(project, forward) or export(project) for forward in FORWARDS.values()]
    return [*results, export(project, "--no-onnx", "--output", "pt2only")]  # model.pt2 of the last forward


def give_ema_weights(project: Path) -> None:
    """Give each checkpoint EMA weights unlike its raw ones (two steps move an average too little to tell)."""
    for path in (project / "outputs").glob("*/checkpoints/*.pt"):
        state = torch.load(path, weights_only=True)
        state["ema"] = {
            name: value / 2 if value.is_floating_point() else value for name, value in state["model"].items()
        }
        torch.save(state, path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every project made, trained and exported: four at a time, as each is mostly a Python start-up."""
    root = tmp_path_factory.mktemp("export")
    projects = {kind: make_project(root / kind, {**COMMON, **spec}) for kind, spec in KINDS.items()}
    custom = make_project(root / "custom", {**COMMON, **CUSTOM})

    def job(kind: str) -> Any:
        if kind == "custom":
            return custom_failures(custom)
        train(projects[kind])
        if kind == "mlp":
            give_ema_weights(projects[kind])
        return export(projects[kind])

    with ThreadPoolExecutor(4) as pool:
        names = [*KINDS, "custom"]
        results = dict(zip(names, pool.map(job, names)))
    return {"projects": {**projects, "custom": custom}, **results}


def reference(project: Path, checkpoint: Path, kind: str) -> tuple[torch.nn.Module, dict]:
    """The project's model with the checkpoint's weights (its EMA weights where it has them), built here from
    model.py (the generator, for a GAN); and the checkpoint."""
    sys.path.insert(0, str(project))
    try:
        sys.modules.pop("model", None)
        import model as model_py

        if checkpoint.is_dir():  # FSDP's folder of shards: torch.distributed.checkpoint joins them
            from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

            dcp_to_torch_save(checkpoint, project / "joined.pt")
            state = {
                **torch.load(checkpoint / "train_state.pt", weights_only=True),
                **torch.load(project / "joined.pt"),
            }
        else:
            state = torch.load(checkpoint, weights_only=True)
        model = model_py.build_model(state["data_info"], torch.device("cpu"))
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("model", None)
    model.load_state_dict(state.get("ema", state["model"]))
    model.eval()
    return (model["generator"] if kind == "gan" else model), state


def inputs_for(session: Any, batch_size: int, vocab_size: int) -> torch.Tensor:
    """A random batch of what the ONNX file's input takes: its shape, the batch size left open, and its type."""
    described = session.get_inputs()[0]
    assert isinstance(described.shape[0], str), "the batch dimension is dynamic"
    shape = (batch_size, *described.shape[1:])
    if described.type == "tensor(int64)":
        return torch.randint(vocab_size, shape)
    assert described.type == "tensor(float)"
    return torch.randn(shape)


def assert_exports_agree(project: Path, result: CompletedProcess, kind: str) -> None:
    """export.py's own check passed, and here ONNX Runtime and the loaded program give the model's outputs."""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    checked = re.findall(r"(model\.\w+) at batch size (\d): max abs difference ([\d.e+-]+)", result.stdout)
    assert [(name, size) for name, size, _ in checked] == [(n, s) for n in ("model.pt2", "model.onnx") for s in "25"]
    assert all(float(difference) <= 1e-4 for _, _, difference in checked)
    checkpoint = project / re.search(r"Exporting (.+) \(step", result.stderr)[1]
    run = checkpoint.parent.parent  # the files go beside checkpoints/, in the run folder
    model, state = reference(project, checkpoint, kind)
    session = onnxruntime.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(run / "model.pt2").module()
    for batch_size in (3, 7):
        inputs = inputs_for(session, batch_size, state["data_info"]["num_outputs"])
        with torch.no_grad():
            expected = model(inputs)
            from_program = program(inputs)
        (from_onnx,) = session.run(None, {"input": inputs.numpy()})
        assert from_program.shape == expected.shape and expected.shape[0] == batch_size
        torch.testing.assert_close(from_program, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.from_numpy(from_onnx), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_export_writes_a_program_and_an_onnx_file_that_compute_what_the_model_does(
    runs: dict[str, Any], kind: str
) -> None:
    assert_exports_agree(runs["projects"][kind], runs[kind], kind)


def test_the_ema_weights_are_exported_when_the_checkpoint_holds_them(runs: dict[str, Any]) -> None:
    project, result = runs["projects"]["mlp"], runs["mlp"]
    checkpoint = project / re.search(r"Exporting (.+) \(step", result.stderr)[1]
    model, state = reference(project, checkpoint, "mlp")
    program = torch.export.load(checkpoint.parent.parent / "model.pt2").module()
    inputs = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        model.load_state_dict(state["ema"])
        torch.testing.assert_close(program(inputs), model(inputs), atol=1e-4, rtol=1e-4)
        model.load_state_dict(state["model"])
        assert not torch.allclose(program(inputs), model(inputs), atol=1e-3), "not the raw weights"


def test_an_op_an_exporter_cannot_handle_is_named_without_a_traceback(runs: dict[str, Any]) -> None:
    untraceable, branch, no_onnx, pt2_only = runs["custom"]
    for result in (untraceable, branch, no_onnx):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.stderr.startswith("Exporting ") and len(result.stderr.splitlines()) <= 7, "a few lines, not pages"
    assert "torch.export cannot handle exporttest::untraceable\n" in untraceable.stderr
    assert "register a fake (meta) implementation" in untraceable.stderr
    assert re.search(r'torch.export failed \(\w+\) at File ".*model.py", line \d+, in forward: return', branch.stderr)
    assert "inputs.sum() > 0" in branch.stderr and "torch.where or torch.cond" in branch.stderr
    assert "The ONNX exporter cannot handle exporttest.no_onnx.default\n" in no_onnx.stderr
    assert "or skip ONNX with --no-onnx" in no_onnx.stderr
    # model.pt2 alone does not need ONNX's translation
    assert pt2_only.returncode == 0, pt2_only.stderr[-3000:]
    assert sorted(path.name for path in (runs["projects"]["custom"] / "pt2only").iterdir()) == ["model.pt2"]
    assert "model.onnx" not in pt2_only.stdout and "model.pt2 at batch size 5" in pt2_only.stdout


def test_onnx_packages_are_dependencies_only_of_projects_that_export() -> None:
    exporting, plain = (rendered(spec_text("deps", {"export.enabled": on})) for on in (True, False))
    assert "export.py" in exporting and "export.py" not in plain
    dependencies = tomllib.loads(exporting["pyproject.toml"])["project"]["dependencies"]
    assert {"onnx>=1.17", "onnxscript>=0.2", "onnxruntime>=1.20"} <= set(dependencies)
    assert "onnx" not in plain["pyproject.toml"]


def test_export_without_checkpoints_is_warned_about_and_emits_nothing() -> None:
    """minimal's spec saves no checkpoint: there is nothing for export.py to export."""
    overrides = {"export.enabled": True, "checkpoint.save_last": False, "checkpoint.save_top_k": 0}
    warnings = [str(warning) for warning in parse(spec_text("minimal", overrides)).warnings]
    assert any("[export] enabled = true has no effect" in warning for warning in warnings), warnings
    tree = rendered(spec_text("minimal", overrides))
    assert "export.py" not in tree and "onnx" not in tree["pyproject.toml"]
