"""The command line (SPEC §6): ``portable-softmax train`` / ``backends``, exit codes, messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

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
    assert lines[0].startswith("numpy on cpu: 30 steps in ")
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
    from test_datasets import fake_dataset

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
    from test_datasets import fake_dataset

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
    assert code == 1 and out == ""
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
    rows = {line.split()[0]: line for line in out.splitlines()}
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
