"""Apple GPUs (MPS): `--device mps` in train.py, predict.py and sample.py, and `--device auto` taking MPS when there
is no CUDA device. What MPS cannot do is refused in one line before any work: `--device mps` without an Apple GPU,
16-mixed precision (float16 loss scaling is CUDA's here), and several processes under torchrun (torch.distributed
has no MPS backend). Resume stays exact: checkpoints keep the MPS generator's state. This machine has no Apple GPU,
so MPS being there is faked by patching torch.backends.mps.is_available (and torch.mps's random state)."""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import pytest
import torch

from conftest import import_module, make_project, run_python

NO_MPS = "--device mps, but no Apple GPU (MPS) is available"
TINY = {"logging.progress_bar": False}
TEXT = {"data.dataset": "text", "model.arch": "gpt"}
HALF = {**TINY, "trainer.precision": "16-mixed"}


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An image project (the default), a text one, a DDP one and a 16-mixed one."""
    root = tmp_path_factory.mktemp("mps")
    overrides = {"image": TINY, "text": {**TINY, **TEXT}, "ddp": {**TINY, "cluster.gpus": 2}, "half": HALF}
    return {name: make_project(root / name, spec) for name, spec in overrides.items()}


def run_with(project: Path, mps: bool, *args: str):
    """Run train.py with MPS faked present (or absent) and CUDA absent, whatever this machine has."""
    wrapper = project / "with_devices.py"
    wrapper.write_text(
        "import functools, runpy, sys, torch\n"
        f"torch.backends.mps.is_available = functools.cache(lambda: {mps})  # cached like torch's own, for dynamo\n"
        "torch.cuda.is_available = lambda: False\n"
        "sys.argv = ['train.py'] + sys.argv[1:]\n"
        "sys.path.insert(0, '.')\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    return run_python(project, wrapper.name, *args)


@pytest.mark.parametrize(
    ("name", "script"),
    [("image", "train.py"), ("image", "predict.py"), ("text", "train.py"), ("text", "sample.py"), ("ddp", "train.py")],
)
def test_device_mps_without_an_apple_gpu_is_a_one_line_error(projects: dict[str, Path], name: str, script: str) -> None:
    if torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    args = ("some.png",) if script == "predict.py" else ()
    result = run_python(projects[name], script, *args, "--device", "mps")
    assert result.returncode == 1
    assert result.stderr.strip() == NO_MPS


def test_auto_takes_mps_without_cuda_where_16_mixed_is_refused_before_any_work(projects: dict[str, Path]) -> None:
    """The 16-mixed project's first words tell which device --device auto took: a refusal on MPS, a warning on the
    CPU."""
    out = projects["half"] / "outputs"
    result = run_with(projects["half"], True, "--device", "auto", "--out-dir", str(out))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "16-mixed precision (float16 with loss scaling) needs a CUDA GPU, not an Apple GPU (MPS): set [trainer] "
        'precision = "bf16-mixed" or "32" in ltgen.toml and run ltgen regen, or pass --device cpu'
    )
    assert not out.exists(), "refused before the run folder, the data and the model"

    result = run_with(projects["half"], False, "--device", "auto", "--fast-dev-run", "--dataset", "synthetic")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16-mixed precision needs a GPU; on the CPU this runs as bf16-mixed" in result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_several_processes_refuse_mps_and_auto_leaves_it_to_a_single_one(
    projects: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    distributed = import_module(projects["ddp"], "distributed")
    monkeypatch.setattr(torch.backends.mps, "is_available", functools.cache(lambda: True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.setup("auto") == (0, 1, torch.device("mps"))  # plain `python train.py`: one process

    # As torchrun starts a rank: a group of one process.
    env = {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as refused:
        distributed.setup("mps")
    assert str(refused.value) == (
        "--device mps runs a single process (torch.distributed cannot use an Apple GPU): "
        "run `python train.py --device mps`, or torchrun with --device cpu"
    )
    assert not torch.distributed.is_initialized()
    try:
        assert distributed.setup("auto") == (0, 1, torch.device("cpu"))  # gloo on the CPU, as without a GPU
    finally:
        torch.distributed.destroy_process_group()


def test_checkpoints_keep_the_apple_gpus_random_state(
    projects: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = import_module(projects["image"], "checkpoint")
    generator = {"state": torch.arange(8, dtype=torch.uint8)}
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda device="mps": generator["state"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda state, device="mps": generator.update(state=state))
    mps = torch.device("mps")

    saved = checkpoint.gather_rng_states(mps)
    assert torch.equal(saved[0]["mps"], torch.arange(8, dtype=torch.uint8))
    generator["state"] = torch.zeros(8, dtype=torch.uint8)  # training draws on
    checkpoint.restore_rng_state(saved, mps)
    assert torch.equal(generator["state"], torch.arange(8, dtype=torch.uint8))

    on_the_cpu = checkpoint.gather_rng_states(torch.device("cpu"))
    assert "mps" not in on_the_cpu[0]
    checkpoint.restore_rng_state(on_the_cpu, mps)  # a run saved on the CPU resumes on MPS with a fresh MPS stream
    assert torch.equal(generator["state"], torch.arange(8, dtype=torch.uint8))
