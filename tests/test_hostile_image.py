"""The image readers and predict.py given careless and hostile input (issue 18): a named pipe among the images,
16-bit PNGs, hidden, empty, single and nested class folders, CIFAR-10 batches that are wrong in kind or that
declare more than they hold, file names that would break predict.py's records, and a split that holds out
nothing. Each input is made here; each run must end in a correct result or in one line that says what is wrong
and how to fix it, and leave the data as it was."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import numpy
import pytest
from PIL import Image

from conftest import make_project, run_python
from test_emitted import fake_mnist
from test_task_image import CIFAR, CIFAR_NAMES, COLORS, OFFLINE, TINY, cifar_batch

CPU = ("--device", "cpu", "--no-progress-bar")
FOLDER = {"data.dataset": "image_folder", "data.image_size": 16, "data.batch_size": 16, **TINY}
TIMEOUT = 90  # seconds: a reader that blocks on a named pipe fails the test instead of hanging it


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("hostile") / "folder", FOLDER)


@pytest.fixture(scope="module")
def lazy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = {**FOLDER, "data.in_memory": False, "data.num_workers": 1}
    return make_project(tmp_path_factory.mktemp("hostile") / "lazy", spec)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("hostile") / "cifar", CIFAR)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("hostile") / "mnist", {"data.batch_size": 16})


def write_images(folder: Path, counts: dict[str, int]) -> Path:
    """folder/CLASS/i.png: counts[CLASS] noisy 16 x 16 images of the class's colour (COLORS)."""
    rng = numpy.random.default_rng(0)
    for name, count in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = numpy.clip(numpy.array(COLORS[name]) + rng.normal(0, 30, (16, 16, 3)), 0, 255)
            Image.fromarray(pixels.astype(numpy.uint8)).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def trained(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The out-dir of one epoch on cat and dog, for predict.py."""
    data, out = tmp_path_factory.mktemp("trained"), tmp_path_factory.mktemp("trained_out")
    write_images(data / "train", {"cat": 6, "dog": 6})
    result = run_python(folder, "train.py", *CPU, "--data-dir", str(data), "--out-dir", str(out), "--max-epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: a regular file's bytes, else its kind; to show that a run left the data as it was."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = path.read_bytes() if path.is_file() else "folder" if path.is_dir() else "other"
    return found


def refused(result: subprocess.CompletedProcess, status: int, last_line: str) -> None:
    """The run exited with `status`, no traceback, and stderr's last line is `last_line`."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == status, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == last_line, result.stderr[-3000:]


def fast_run(project: Path, data: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """train.py --fast-dev-run on --data-dir `data`, its outputs beside it."""
    out = data.with_name(f"{data.name}_out")
    args = ("--fast-dev-run", "--data-dir", str(data), "--out-dir", str(out))
    return run_python(project, "train.py", *CPU, *args, timeout=TIMEOUT, env=env)


# --- 1. Files that are not regular files: open() would wait on a named pipe forever ------------------------


@pytest.mark.parametrize("mode", ["in memory", "by workers"])
def test_a_named_pipe_among_the_images_is_skipped_with_a_warning(
    folder: Path, lazy: Path, tmp_path: Path, mode: str
) -> None:
    data = tmp_path / "data"
    write_images(data / "train", {"cat": 5, "dog": 5})
    os.mkfifo(data / "train/cat/pipe.png")
    before = snapshot(data)
    result = fast_run(folder if mode == "in memory" else lazy, data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"warning: skipping {data / 'train/cat/pipe.png'}: not a regular file" in result.stderr.splitlines()
    assert f"{data / 'train'}: 10 images in 2 classes" in result.stdout
    assert snapshot(data) == before


def test_predict_skips_a_named_pipe_whether_named_or_found_in_a_folder(
    folder: Path, trained: Path, tmp_path: Path
) -> None:
    write_images(tmp_path / "images", {"cat": 2})
    pipe = tmp_path / "images/cat/pipe.png"
    os.mkfifo(pipe)
    for paths, images in (([pipe, tmp_path / "images/cat/0.png"], 1), ([tmp_path / "images"], 2)):
        result = run_python(folder, "predict.py", *map(str, paths), "--out-dir", str(trained), timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"warning: skipping {pipe}: not a regular file" in result.stderr.splitlines()
        assert len(result.stdout.splitlines()) == images and "pipe.png" not in result.stdout


def test_a_named_pipe_for_an_mnist_file_or_the_cifar_archive_is_refused_without_opening_it(
    mnist: Path, cifar: Path, tmp_path: Path
) -> None:
    mnist_data, cifar_data = tmp_path / "mnist", tmp_path / "cifar"
    mnist_data.mkdir()
    for name, payload in fake_mnist().items():
        (mnist_data / name).write_bytes(payload)
    (mnist_data / "train-images-idx3-ubyte").unlink()
    os.mkfifo(mnist_data / "train-images-idx3-ubyte")
    # A damaged data file ends with SystemExit's message and status 1, as every damaged-file error of these readers.
    pipe = mnist_data / "train-images-idx3-ubyte"
    expected = f"{pipe} is damaged: it is not a regular file. Delete it and run again to download it afresh."
    refused(fast_run(mnist, mnist_data, env=OFFLINE), 1, expected)

    cifar_data.mkdir()
    os.mkfifo(cifar_data / "cifar-10-python.tar.gz")
    archive = cifar_data / "cifar-10-python.tar.gz"
    expected = f"{archive} is not a regular file: delete it, and run again to download the archive."
    refused(fast_run(cifar, cifar_data, env=OFFLINE), 1, expected)


# --- 2. 16-bit images: convert("RGB") clips levels above 255 ------------------------------------------------

# Black to white in 16 bits, off the multiples of 257 (65535 / 255) so that rounding shows.
RAMP = (numpy.linspace(0, 65535, 256) + numpy.tile([0, 100, -100, 50], 64)).clip(0, 65535).astype(numpy.uint16)
RAMP = RAMP.reshape(16, 16)
EXPECTED = numpy.round(RAMP / 257).astype(numpy.uint8)  # value * 255 / 65535, rounded


TRAINING_PIXELS = """
import json, sys
from pathlib import Path
import numpy
from PIL import Image
import data
read = data.read_image_folder(Path(sys.argv[1]), ["cat", "ramp"])
ramp = numpy.array(json.loads(sys.argv[2]))
modes = {"I;16B": ramp.astype(">u2"), "I": ramp.astype(numpy.int32), "F": (ramp / 65535).astype(numpy.float32)}
images = {mode: Image.fromarray(levels) for mode, levels in modes.items()}
assert [image.mode for image in images.values()] == list(modes)
pixels = {mode: numpy.asarray(data.eight_bit(image)).tolist() for mode, image in images.items()}
print(json.dumps({"read by training": read.images[read.labels == 1][0].tolist(), **pixels}))
"""
PREDICT_PIXELS = """
import json, sys
from pathlib import Path
from predict import decode
print(json.dumps(decode(Path(sys.argv[1]), [int(sys.argv[2]), 16, 16]).tolist()))
"""


def test_16_bit_images_are_scaled_to_8_bits_alike_by_training_and_by_predict(
    folder: Path, mnist: Path, tmp_path: Path
) -> None:
    ramp = tmp_path / "train/ramp/ramp.png"
    ramp.parent.mkdir(parents=True)
    Image.fromarray(RAMP).save(ramp)
    assert Image.open(ramp).mode == "I;16"
    write_images(tmp_path / "train", {"cat": 1})

    # The training reader, and Pillow's other modes deeper than 8 bits (I;16B; I, 32-bit; F, floating point 0-1).
    training = run_python(folder, "-c", TRAINING_PIXELS, str(tmp_path / "train"), json.dumps(RAMP.tolist()))
    assert training.returncode == 0, training.stderr[-3000:]
    read = json.loads(training.stdout.splitlines()[-1])
    assert numpy.array_equal(read.pop("read by training"), [EXPECTED] * 3)
    for mode, pixels in read.items():
        assert numpy.array_equal(pixels, EXPECTED), f"mode {mode}"

    for project, channels in ((folder, 3), (mnist, 1)):  # predict.py of a 3-channel and of a 1-channel model
        predicted = run_python(project, "-c", PREDICT_PIXELS, str(ramp), str(channels))
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        assert numpy.array_equal(json.loads(predicted.stdout), [EXPECTED] * channels), f"{project.name}'s predict.py"


# --- 3. The image folder's layout: what training reads, predict.py reads ------------------------------------


def test_hidden_files_and_folders_are_ignored_in_one_line(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_images(data / "train", {"cat": 5, "dog": 5})
    write_images(data / "val", {"cat": 2, "dog": 2})
    for split in ("train", "val"):  # Jupyter's copies, and macOS's folder metadata
        write_images(data / split / ".ipynb_checkpoints", {"cat": 1})
        (data / split / "cat/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    before = snapshot(data)
    result = fast_run(folder, data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{data / 'train'}: 10 images in 2 classes" in result.stdout, "no class named .ipynb_checkpoints"
    for split in ("train", "val"):
        said = [line for line in result.stderr.splitlines() if line.startswith(f"{data / split}/: ignoring hidden")]
        expected = f"{data / split}/: ignoring hidden files and folders (names that start with a dot): "
        assert said == [expected + ".ipynb_checkpoints, cat/.DS_Store"], result.stderr
    assert snapshot(data) == before


def test_an_empty_class_folder_is_refused_with_the_fix(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_images(data / "train", {"cat": 5, "dog": 5})
    (data / "train/bird").mkdir()
    (data / "train/frog").mkdir()
    (data / "train/frog/notes.txt").write_text("not an image")
    before = snapshot(data)
    expected = (
        f"{data / 'train'}/ has class folders without a readable image: bird/, frog/; add images to them or remove them"
    )
    refused(fast_run(folder, data), 2, expected)
    assert snapshot(data) == before


def test_a_single_class_is_refused(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_images(data / "train", {"cat": 10})
    train = data / "train"
    expected = f"{train}/ has only cat/: a classifier needs two classes or more, the images of each in {train}/CLASS/"
    refused(fast_run(folder, data), 2, expected)


def test_nested_images_are_of_their_top_folders_class_in_training_and_in_predict(
    folder: Path, trained: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_images(data / "train", {"cat": 3, "dog": 3})
    write_images(data / "train/cat/indoor", {"cat": 4})
    write_images(data / "train/dog/a/b", {"dog": 4})
    Image.new("RGB", (16, 16)).save(data / "train/stray.png")  # in no class folder
    (data / "train/dog/a/up").symlink_to(data / "train", target_is_directory=True)  # a loop: not followed
    (data / "outside").mkdir()
    write_images(data / "outside", {"cat": 2})
    (data / "train/cat/linked").symlink_to(data / "outside/cat", target_is_directory=True)  # followed
    result = fast_run(folder, data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{data / 'train'}: 16 images in 2 classes" in result.stdout, "3 + 4 + 2 cats, 3 + 4 dogs"
    assert f"warning: {data / 'train'}/: ignoring images outside the class folders: stray.png" in result.stderr

    classes = (str(data / "train/cat"), str(data / "train/dog"))
    predicted = run_python(folder, "predict.py", *classes, "--out-dir", str(trained))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len(predicted.stdout.splitlines()) == 16, "predict.py reads the images training reads"


# --- 4. CIFAR-10 batches wrong in kind, or declaring more than they hold ------------------------------------


def cifar_folder(root: Path, first_batch: bytes) -> Path:
    """root/cifar-10-batches-py/ with small good batches, data_batch_1 replaced by `first_batch`."""
    rng = numpy.random.default_rng(0)
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name in CIFAR_NAMES:
        (root / "cifar-10-batches-py" / name).write_bytes(
            first_batch if name == "data_batch_1" else cifar_batch(rng, 8)
        )
    return root


def float_labels() -> bytes:
    """A batch whose fourth label is 2.7 (it would train as 2)."""
    data = numpy.random.default_rng(1).integers(0, 256, (8, 3072), dtype=numpy.uint8)
    return pickle.dumps({b"labels": [0, 1, 2, 2.7, 4, 5, 6, 7], b"data": data}, protocol=3)


HUGE = 2**44
# _reconstruct(ndarray, (2**44,), b"b") in pickle's opcodes: numpy's own pickles start from the shape (0,).
HUGE_ARRAY = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x06%s\x85C\x01b\x87R."
    % HUGE.to_bytes(6, "little")
)
DECLARED = {  # a batch that declares more than it holds: (its bytes, the reason in the message)
    "a 2**44-byte string": (
        b"\x80\x04\x8e" + struct.pack("<Q", HUGE) + b"only this",
        f"not a CIFAR-10 batch (expected {HUGE} bytes in a bytes8, but only 9 remain)",
    ),
    "an array of 2**44 bytes": (
        HUGE_ARRAY,
        f"not a CIFAR-10 batch (it makes an array of shape ({HUGE},): numpy's pickles make an empty one and fill it)",
    ),
    "float labels": (float_labels(), "label 3 is 2.7, where CIFAR-10's labels are whole numbers 0 to 9"),
}


@pytest.mark.parametrize("case", DECLARED)
def test_a_cifar_batch_with_float_labels_or_huge_declared_sizes_is_refused_in_one_line(
    cifar: Path, tmp_path: Path, case: str
) -> None:
    payload, reason = DECLARED[case]
    data = cifar_folder(tmp_path / "data", payload)
    before = snapshot(data)
    batch = data / "cifar-10-batches-py/data_batch_1"
    expected = f"{batch} is damaged: {reason}. Delete it and run again to download it afresh."
    refused(fast_run(cifar, data, env=OFFLINE), 1, expected)
    assert snapshot(data) == before


def cifar_tar(batches: dict[str, bytes]) -> bytes:
    """A tar archive (not yet gzipped) holding cifar-10-batches-py/NAME for each of `batches`."""
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        for name, payload in batches.items():
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    return packed.getvalue()


def gzip_with_a_bad_block(payload: bytes) -> bytes:
    """payload gzipped, the deflate block that starts its second half given type 3, which no block has."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflate.compress(payload[: len(payload) // 2]) + deflate.flush(zlib.Z_FULL_FLUSH)  # ends on a byte boundary
    tail = bytearray(deflate.compress(payload[len(payload) // 2 :]) + deflate.flush())
    tail[0] |= 0b110  # the block type's two bits, after the bit that marks the last block
    return b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + head + tail + struct.pack("<2I", zlib.crc32(payload), len(payload))


def test_a_cifar_tarball_with_a_corrupt_gzip_block_is_refused_in_one_line(cifar: Path, tmp_path: Path) -> None:
    rng = numpy.random.default_rng(0)
    archive = tmp_path / "data/cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(gzip_with_a_bad_block(cifar_tar({name: cifar_batch(rng, 8) for name in CIFAR_NAMES})))
    with pytest.raises(zlib.error, match="invalid block type"):  # the damage this test means
        gzip.decompress(archive.read_bytes())
    before = archive.read_bytes()
    expected = (
        f"{archive} is damaged: not the whole CIFAR-10 archive (Error -3 while decompressing data: invalid block "
        "type). Delete it and run again to download it afresh."
    )
    refused(fast_run(cifar, archive.parent, env=OFFLINE), 1, expected)
    assert archive.read_bytes() == before, "the archive is left for the user to delete"


def test_a_cifar_batch_larger_than_any_is_refused_before_it_is_read(cifar: Path, tmp_path: Path) -> None:
    # data_batch_1 is 65 MB of zeros: a damaged size, or a decompression bomb (this one packs into 64 kB).
    rng = numpy.random.default_rng(0)
    batches = {name: cifar_batch(rng, 8) for name in CIFAR_NAMES} | {"data_batch_1": bytes(65 << 20)}
    archive = tmp_path / "data/cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(gzip.compress(cifar_tar(batches), 1))
    expected = (
        f"{archive}: data_batch_1 is damaged: it holds {65 << 20} bytes, where a CIFAR-10 batch holds about 31 MB. "
        "Delete it and run again to download it afresh."
    )
    refused(fast_run(cifar, archive.parent, env=OFFLINE), 1, expected)


def test_an_mnist_file_that_decompresses_past_any_mnist_size_is_refused(mnist: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name, payload in fake_mnist().items():
        (data / name).write_bytes(payload)
    bomb = data / "train-images-idx3-ubyte.gz"
    (data / "train-images-idx3-ubyte").unlink()
    bomb.write_bytes(gzip.compress(struct.pack(">4B3I", 0, 0, 8, 3, 90_000, 28, 28) + bytes(90_000 * 784), 1))
    expected = (
        f"{bomb} is damaged: it holds more than {1 << 26} bytes once decompressed, where MNIST's largest file holds "
        "47 MB. Delete it and run again to download it afresh."
    )
    refused(fast_run(mnist, data, env=OFFLINE), 1, expected)


# --- 5. predict.py's records and options ------------------------------------------------------------------


def test_predict_escapes_file_names_that_would_break_its_records(folder: Path, trained: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    names = {"new\nline.png": "new\\nline.png", "tab\tbed.png": "tab\\tbed.png", "back\\slash.png": "back\\\\slash.png"}
    names[os.fsdecode(b"latin1-caf\xe9.png")] = "latin1-caf\\udce9.png"  # bytes that are not UTF-8
    for name in names:
        Image.new("RGB", (16, 16), (200, 30, 30)).save(images / name)
    result = run_python(folder, "predict.py", str(images), "--out-dir", str(trained), "--top", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 4 and all(len(row) == 5 for row in rows), result.stdout
    assert sorted(row[0] for row in rows) == sorted(str(images / escaped) for escaped in names.values())


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--batch-size", "18446744073709551617", "18446744073709551617 is out of range: expected 1 to 65536"),
        ("--top", "1.5", "'1.5' is not a whole number"),
    ],
)
def test_predict_takes_only_whole_numbers_in_bounds_for_its_integer_options(
    folder: Path, trained: Path, tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    result = run_python(folder, "predict.py", str(tmp_path / "x.png"), "--out-dir", str(trained), flag, value)
    refused(result, 2, f"predict.py: error: argument {flag}: {expected}")


# --- 6. A split that holds out nothing says why -------------------------------------------------------------


def test_too_few_images_to_hold_out_any_say_so_not_blame_a_flag(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_images(data / "train", {"cat": 3, "dog": 3})
    expected = (
        "[data] val_fraction = 0.1 of 6 images holds out none for validation: use more images, put validation "
        "images in DATA_DIR/val/CLASS/, or set [data] val_size or a larger val_fraction in ltgen.toml and run "
        "ltgen regen (or edit VAL_FRACTION in data.py)."
    )
    refused(fast_run(folder, data), 2, expected)
