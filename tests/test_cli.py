"""The command line (SPEC §6): ``portable-softmax train`` / ``backends``, exit codes, messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from files import fake_dataset, idx_bytes, members_of, write, write_npz
from portable_softmax import SoftmaxRegression
from portable_softmax.checkpoint import load_checkpoint
from portable_softmax.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("portable-softmax: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_train_prints_the_test_accuracy(capsys):
    code, out, err = run(capsys, "train", "--steps", "30")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "embedded MNIST: 60000 training and 10000 test images of 28x28 pixels, 10 classes"
    )
    assert lines[1].startswith("numpy on cpu: 30 steps in ")
    assert lines[-1].startswith("test accuracy: 0.")
    assert float(lines[-1].split()[-1]) > 0.8


def test_train_json(capsys):
    code, out, _ = run(capsys, "train", "--steps", "20", "--batch-size", "50", "--lr", "0.3",
                       "--momentum", "0.5", "--seed", "4", "--json")  # fmt: skip
    assert code == 0
    summary = json.loads(out)
    assert summary["backend"] == "numpy" and summary["device"] == "cpu"
    assert summary["steps"] == 20 and summary["batch_size"] == 50 and summary["seed"] == 4
    assert summary["lr"] == 0.3 and summary["momentum"] == 0.5
    assert summary["seconds"] > 0
    assert 0 < summary["final_loss"] < 2.3
    assert 0.5 < summary["test_accuracy"] <= 1
    assert summary["data"] == "embedded MNIST"


@pytest.mark.parametrize("backend", ["torch", "jax", "array_api_strict", "array-api-strict"])
def test_train_other_backends(capsys, backend):
    pytest.importorskip(backend.replace("-", "_"))
    code, out, err = run(capsys, "train", "--backend", backend, "--steps", "20", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["backend"] == backend.replace("-", "_") and summary["steps"] == 20
    assert "cpu" in summary["device"]


def test_train_device_and_dtype(capsys):
    pytest.importorskip("torch")
    code, out, err = run(capsys, "train", "--backend", "torch", "--device", "cpu",
                         "--dtype", "float64", "--steps", "5", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["dtype"] == "float64"


def test_array_api_strict_on_another_device(capsys, tmp_path):
    pytest.importorskip("array_api_strict")
    checkpoint = str(tmp_path / "c.npz")
    code, out, err = run(capsys, "train", "--backend", "array_api_strict", "--device", "device1",
                         "--steps", "5", "--checkpoint", checkpoint, "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["device"] == "device1"


def test_checkpoint_and_resume(capsys, tmp_path):
    path = tmp_path / "run.npz"
    code, _, err = run(capsys, "train", "--steps", "20", "--checkpoint", str(path),
                       "--checkpoint-every", "10", "--json")  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "train", "--steps", "40", "--checkpoint", str(path),
                         "--resume", "--json")  # fmt: skip
    assert code == 0, err
    resumed = json.loads(out)
    assert load_checkpoint(path, SoftmaxRegression(784, 10))["step"] == 40
    code, out, _ = run(capsys, "train", "--steps", "40", "--json")
    whole = json.loads(out)
    assert resumed["steps"] == whole["steps"] == 40
    assert resumed["final_loss"] == whole["final_loss"]
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    code, out, err = run(capsys, "train", "--steps", "15", "--eval-every", "5",
                         "--plot", str(png), "--json")  # fmt: skip
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out)["plot"] == str(png)


def test_data_dir(capsys, tmp_path):
    fake_dataset(tmp_path, n_train=20, n_test=6)
    code, out, err = run(capsys, "train", "--data-dir", str(tmp_path), "--steps", "3",
                         "--batch-size", "5", "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["data"] == str(tmp_path) and summary["steps"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--backend", "tensorflow"], "unknown backend 'tensorflow'; choose one of numpy"),
        (["train", "--device", "cuda"], "device 'cuda' is not available to numpy; available: cpu"),
        (["train", "--steps", "-1"], "argument --steps: must be at least 0, got -1"),
        (["train", "--steps", "ten"], "argument --steps: expected an integer, got 'ten'"),
        (["train", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["train", "--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["train", "--lr", "nan"], "argument --lr: must be a finite number >= 0"),
        (["train", "--lr", "-0.5"], "argument --lr: must be a finite number >= 0"),
        (["train", "--dtype", "int8"], "argument --dtype: invalid choice"),
        (["train", "--resume"], "--resume needs --checkpoint PATH"),
        (["train", "--checkpoint-every", "5"], "--checkpoint-every needs --checkpoint PATH"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["fly"], "invalid choice: 'fly'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_usage_errors(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in one_line_error(err)


def test_missing_backend(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy now raises ImportError
    code, _, err = run(capsys, "train", "--backend", "cupy")
    assert code == 2
    assert "backend 'cupy' is not installed" in one_line_error(err)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing-dir", "MNIST data directory not found"),
        ("missing-file", "IDX file not found: .*t10k-images-idx3-ubyte.gz"),
        ("truncated", "train-images-idx3-ubyte.gz: truncated gzip stream"),
        ("too-big-batch", "batch_size 100 exceeds the 20 training samples"),
    ],
)
def test_runtime_errors(capsys, tmp_path, setup, message):
    data = tmp_path / "data"
    if setup != "missing-dir":
        data.mkdir()
        fake_dataset(data, n_train=20, n_test=6)
    if setup == "missing-file":
        (data / "t10k-images-idx3-ubyte.gz").unlink()
    if setup == "truncated":
        images = data / "train-images-idx3-ubyte.gz"
        images.write_bytes(images.read_bytes()[:30])
    code, out, err = run(capsys, "train", "--data-dir", str(data))
    assert code == 1 and "accuracy" not in out
    assert re.search(message, one_line_error(err))


def test_resume_without_checkpoint_file(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--checkpoint", str(tmp_path / "no.npz"), "--resume")
    assert code == 1
    assert "checkpoint not found" in one_line_error(err)


def test_interrupted(capsys, monkeypatch):
    import portable_softmax.training as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    code, _, err = run(capsys, "train", "--steps", "5")
    assert code == 130 and err.strip() == "portable-softmax: interrupted"


def test_backends(capsys):
    code, out, _ = run(capsys, "backends")
    assert code == 0
    table, _, note = out.partition("\n\n")
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert set(rows) == {"numpy", "torch", "jax", "cupy", "dask", "array_api_strict"}
    assert rows["numpy"].split()[1] == np.__version__ and rows["numpy"].endswith("cpu")


def test_backends_json(capsys):
    code, out, _ = run(capsys, "backends", "--json")
    assert code == 0
    rows = {row["backend"]: row for row in json.loads(out)}
    assert rows["numpy"]["installed"] and rows["numpy"]["devices"] == ["cpu"]
    assert rows["array_api_strict"]["devices"][0] == "cpu"


def test_python_dash_m():
    """The module entry point and the exit code, in a fresh interpreter."""
    ok = subprocess.run(
        [sys.executable, "-m", "portable_softmax", "train", "--steps", "5", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["steps"] == 5
    bad = subprocess.run(
        [sys.executable, "-m", "portable_softmax", "train", "--backend", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- robustness (issue 15)


@pytest.fixture
def no_training(monkeypatch):
    """Make any call of train() fail the test: the error must come before it."""
    import portable_softmax.training as training

    def trained(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(training, "train", trained)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "{d}/missing/run.npz"], "--checkpoint {d}/missing/run.npz: directory"),
        (["--checkpoint", "{d}/file.txt/run.npz"], "{d}/file.txt is a file, not a directory"),
        (["--checkpoint", ""], "--checkpoint: the path is empty"),
        (["--checkpoint", "{d}"], "--checkpoint {d}: is a directory"),
        (["--plot", "{d}/missing/curves.png"], "--plot {d}/missing/curves.png: directory"),
        (["--plot", "{d}/curves.xyz"], "matplotlib cannot write .xyz files; use one of"),
        (["--plot", "{d}/curves"], "matplotlib cannot write a file without an extension"),
        (["--plot", ""], "--plot: the path is empty"),
        (["--checkpoint", "{d}/run.png", "--plot", "{d}/run.png"],
         "--checkpoint and --plot name the same file ({d}/run.png)"),
        (["--checkpoint", "{d}/./run.png", "--plot", "{d}/run.png"], "name the same file"),
    ],
    ids=["ckpt-missing-dir", "ckpt-under-file", "ckpt-empty", "ckpt-dir", "plot-missing-dir",
         "plot-extension", "plot-no-extension", "plot-empty", "same-file", "same-file-spelled"],
)  # fmt: skip
def test_output_paths_are_checked_before_training(capsys, tmp_path, no_training, argv, message):
    pytest.importorskip("matplotlib")
    (tmp_path / "file.txt").write_text("keep me")
    argv = [a.format(d=tmp_path) for a in argv]
    code, out, err = run(capsys, "train", "--steps", "20000", *argv)
    assert code == 2 and out == ""
    assert message.format(d=tmp_path) in one_line_error(err)
    assert ".tmp" not in err
    assert (tmp_path / "file.txt").read_text() == "keep me"


def test_checkpoint_never_overwrites_the_data(capsys, tmp_path, no_training):
    fake_dataset(tmp_path, n_train=20, n_test=6)
    data = tmp_path / "train-images-idx3-ubyte.gz"
    before = data.read_bytes()
    spelled = tmp_path / "." / data.name
    code, _, err = run(capsys, "train", "--data-dir", str(tmp_path), "--checkpoint", str(spelled))
    assert code == 2
    assert f"--checkpoint {spelled} is the data file" in one_line_error(err)
    assert data.read_bytes() == before


def tiny_data(root, *, train_labels=None, test_labels=None, test_shape=(2, 3), n_test=6):
    """An IDX directory of 20 training images (2x3) and ``n_test`` test images."""
    rng = np.random.default_rng(2)
    train_labels = np.arange(20) % 10 if train_labels is None else np.asarray(train_labels)
    test_labels = np.arange(n_test) % 10 if test_labels is None else np.asarray(test_labels)
    for prefix, labels, shape in (
        ("train", train_labels, (2, 3)),
        ("t10k", test_labels, test_shape),
    ):
        images = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
        write(root / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images), compress=True)
        labels = labels.astype(np.uint8)
        write(root / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labels), compress=True)
    return root


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_labels": [200] + [0] * 19},
         "train-labels-idx1-ubyte.gz: label 200 is outside the 10 classes 0..9; pass --classes"),
        ({"test_labels": [11, 0, 1, 2, 3, 4]},
         "t10k-labels-idx1-ubyte.gz: label 11 is outside the 10 classes 0..9"),
        ({"n_test": 0, "test_labels": []}, "t10k-images-idx3-ubyte.gz: no images: the test split"),
        ({"test_shape": (3, 3)},
         "t10k-images-idx3-ubyte.gz: images of 3x3 pixels, but the training images"),
    ],
    ids=["train-label-200", "test-label-11", "empty-test-split", "other-image-size"],
)  # fmt: skip
def test_datasets_are_checked_before_training(capsys, tmp_path, no_training, kwargs, message):
    tiny_data(tmp_path, **kwargs)
    code, out, err = run(capsys, "train", "--data-dir", str(tmp_path), "--batch-size", "5")
    assert code == 1 and "accuracy" not in out
    assert message in one_line_error(err)


def test_classes_option_and_the_class_count_is_printed(capsys, tmp_path):
    tiny_data(tmp_path, train_labels=[11] + list(range(10)) * 1 + [0] * 9)
    code, out, err = run(capsys, "train", "--data-dir", str(tmp_path), "--batch-size", "5",
                         "--steps", "3", "--classes", "12")  # fmt: skip
    assert code == 0, err
    assert "20 training and 6 test images of 2x3 pixels, 12 classes" in out.splitlines()[0]
    code, out, _ = run(capsys, "train", "--steps", "2", "--json")
    assert json.loads(out)["classes"] == 10


def bad_checkpoint(capsys, path, kind):
    """A checkpoint of a 1-step CLI run, then damaged in one way."""
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros((784, 10)))
        return path
    code, _, err = run(capsys, "train", "--steps", "1", "--checkpoint", str(path), "--json")
    assert code == 0, err
    members = members_of(path)
    meta = json.loads(members["meta"].tobytes())
    history = dict(meta["history"], loss="abc")
    optimizer = dict(meta["optimizer"], lr=float("nan"))
    edits = {
        "meta-list": ("meta", np.asarray("[]")),
        "meta-int": ("meta", np.asarray("42")),
        "missing-key": ("meta", np.asarray(json.dumps({k: meta[k] for k in meta if k != "step"}))),
        "loss-abc": ("meta", np.asarray(json.dumps(dict(meta, history=history)))),
        "nan-lr": ("meta", np.asarray(json.dumps(dict(meta, optimizer=optimizer)))),
        "string-weights": ("W", np.full((784, 10), "w")),
        "huge-member": ("W", np.zeros((784 * 1000, 10))),
    }
    name, value = edits[kind]
    members[name] = value
    return write_npz(path, members, compression=True)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("meta-list", "meta is a JSON list, not an object"),
        ("meta-int", "meta is a JSON int, not an object"),
        ("missing-key", "not a checkpoint of ps.train (no 'step' in its state)"),
        ("loss-abc", "damaged checkpoint: history.loss is not 1 finite numbers"),
        ("npy", "not a portable_softmax checkpoint (not an .npz archive"),
        ("string-weights", "W holds <U1 values"),
        ("nan-lr", "lr must be a finite number >= 0, got nan"),
        ("huge-member", "W declares"),
    ],
)
def test_bad_checkpoint_files_are_one_line(capsys, tmp_path, kind, message):
    path = bad_checkpoint(capsys, tmp_path / "bad.npz", kind)
    code, out, err = run(capsys, "train", "--checkpoint", str(path), "--resume")
    assert code == 1 and "accuracy" not in out
    line = one_line_error(err)
    assert str(path) in line and message in line


def test_memory_error_is_one_line(capsys, monkeypatch):
    import portable_softmax.datasets as datasets

    def no_memory(*args, **kwargs):
        raise MemoryError("train-images-idx3-ubyte.gz: need 47040000 bytes")

    monkeypatch.setattr(datasets, "load_mnist", no_memory)
    code, _, err = run(capsys, "train")
    assert code == 1
    assert "out of memory: train-images-idx3-ubyte.gz" in one_line_error(err)


@pytest.fixture
def saved_run(capsys, tmp_path):
    """A 20-step run with lr 0.3 and momentum 0.5, checkpointed."""
    path = tmp_path / "run.npz"
    code, _, err = run(capsys, "train", "--steps", "20", "--lr", "0.3", "--momentum", "0.5",
                       "--checkpoint", str(path), "--json")  # fmt: skip
    assert code == 0, err
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "0.01", "--momentum", "0.9"],
         "these options differ: --lr 0.01 (it has 0.3), --momentum 0.9 (it has 0.5); leave"),
        (["--weight-decay", "0.1"], "--weight-decay 0.1 (it has 0)"),
        (["--dtype", "float64"], "--dtype float64 (it has float32)"),
        (["--seed", "3", "--batch-size", "50"], "--batch-size 50 (it has 100), --seed 3 (it"),
        (["--steps", "10"], "--steps 10 is below the 20 steps"),
    ],
)  # fmt: skip
def test_resume_refuses_options_that_differ(capsys, saved_run, no_training, argv, message):
    code, out, err = run(capsys, "train", "--checkpoint", str(saved_run), "--resume", *argv)
    assert code == 2 and out == ""
    assert message in one_line_error(err)


def test_resume_takes_the_checkpoints_settings_and_says_so(capsys, saved_run):
    code, out, err = run(capsys, "train", "--steps", "30", "--checkpoint", str(saved_run),
                         "--resume", "--lr", "0.3")  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == f"resumed from step 20 of {saved_run}"
    assert lines[2].startswith("numpy on cpu: 10 steps (steps 21 to 30) in ")
    code, out, err = run(capsys, "train", "--steps", "40", "--checkpoint", str(saved_run),
                         "--resume", "--json")  # fmt: skip
    summary = json.loads(out)
    assert summary["lr"] == 0.3 and summary["momentum"] == 0.5  # the checkpoint's, as used
    assert summary["steps"] == 40 and summary["steps_run"] == 10 and summary["resumed_from"] == 30


def test_resume_refuses_another_dataset_of_the_same_size(capsys, tmp_path):
    path = tmp_path / "run.npz"
    one, other = tmp_path / "one", tmp_path / "other"
    one.mkdir(), other.mkdir()
    tiny_data(one)
    tiny_data(other, train_labels=(np.arange(20) + 1) % 10)
    common = ["--batch-size", "5", "--checkpoint", str(path), "--json"]
    code, _, err = run(capsys, "train", "--data-dir", str(one), "--steps", "3", *common)
    assert code == 0, err
    code, _, err = run(capsys, "train", "--data-dir", str(other), "--steps", "6", "--resume",
                       *common)  # fmt: skip
    assert code == 1
    assert "these differ: the training data" in one_line_error(err)


def test_help_says_what_resume_does(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "options left out" in text and "options given must equal its values" in text


def test_divergence_is_an_error(capsys, tmp_path):
    import warnings

    path = tmp_path / "run.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run(capsys, "train", "--lr", "1e308", "--steps", "50",
                             "--checkpoint", str(path), "--checkpoint-every", "1")  # fmt: skip
    assert code == 1 and "accuracy" not in out
    assert one_line_error(err).endswith(
        "training diverged at step 2 (loss nan); lower the learning rate"
    )
    assert not path.exists()  # step 1's weights were already not finite: nothing saved
    code, out, err = run(capsys, "train", "--momentum", "2", "--steps", "400",
                         "--checkpoint", str(path), "--checkpoint-every", "10")  # fmt: skip
    assert code == 1 and "training diverged at step" in one_line_error(err)
    step = load_checkpoint(path, SoftmaxRegression(784, 10))["step"]
    assert 0 < step < int(err.split("step ")[1].split()[0])


def test_json_numbers_read_right(capsys):
    """float32 losses with float32's digits, the accuracy an exact fraction (issue 14.3)."""
    code, out, _ = run(capsys, "train", "--steps", "30", "--json")
    assert code == 0
    summary = json.loads(out)
    loss, accuracy = summary["final_loss"], summary["test_accuracy"]
    assert repr(loss) == str(np.float32(loss))
    assert round(accuracy * 10000) / 10000 == accuracy
    assert len(repr(accuracy)) <= 6  # 0.xxxx


def test_backends_explains_the_pretend_devices(capsys):
    pytest.importorskip("array_api_strict")
    code, out, _ = run(capsys, "backends")
    assert code == 0
    assert "array_api_strict's devices other than cpu are pretend ones" in out
    assert "no_float64: a device without float64" in out
    code, out, _ = run(capsys, "backends", "--json")
    rows = {row["backend"]: row for row in json.loads(out)}
    assert rows["array_api_strict"]["pretend_devices"]["no_x64"] == "a device without 64-bit types"


SIGINT_STEPS = 1500


@pytest.fixture(scope="module")
def uninterrupted():
    """The in-process NumPy run that an interrupted and resumed CLI run must equal."""
    import portable_softmax as ps

    (X, y), test = ps.datasets.load_mnist("train"), ps.datasets.load_mnist("test")
    whole = ps.SoftmaxRegression(784, 10)
    full = ps.train(whole, X, y, optimizer=ps.SGD(0.1, momentum=0.5), steps=SIGINT_STEPS,
                    eval_data=test)  # fmt: skip
    return whole, full


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.2])
def test_sigint_to_the_cli_then_resume_is_exact(tmp_path, uninterrupted, delay):
    """A real Ctrl-C (SIGINT) to a CLI run, then --resume: the uninterrupted run, bit for bit."""
    import signal
    import time

    from portable_softmax.checkpoint import read_checkpoint_state

    path = tmp_path / "run.npz"
    argv = [sys.executable, "-m", "portable_softmax", "train", "--steps", str(SIGINT_STEPS),
            "--momentum", "0.5", "--lr", "0.1", "--checkpoint", str(path),
            "--no-progress"]  # fmt: skip
    child = subprocess.Popen(argv + ["--checkpoint-every", "25"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    stopped = read_checkpoint_state(path)["step"]
    assert 0 < stopped < SIGINT_STEPS, stopped
    assert err.strip() == (
        f"portable-softmax: interrupted; {path} holds step {stopped}: add --resume to continue"
    )
    rest = subprocess.run(argv + ["--resume"], capture_output=True, text=True, check=False)
    assert rest.returncode == 0, rest.stderr
    assert f"resumed from step {stopped} of {path}" in rest.stdout

    whole, full = uninterrupted
    resumed = SoftmaxRegression(784, 10)
    state = load_checkpoint(path, resumed)
    np.testing.assert_array_equal(resumed.W, whole.W)
    np.testing.assert_array_equal(resumed.b, whole.b)
    assert state["history"]["loss"] == full.loss
    assert state["history"]["eval_step"] == full.eval_step
    assert state["history"]["eval_accuracy"] == full.eval_accuracy
