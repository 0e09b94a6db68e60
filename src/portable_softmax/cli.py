"""``portable-softmax``: train the MNIST model on any backend, list the backends.

``portable-softmax train`` runs the TensorFlow tutorial's softmax regression
(zeros, lr 0.5, batches of 100, 1000 steps, seed 0) on the embedded MNIST and
prints the test accuracy; ``portable-softmax backends`` lists the array
libraries that import here and their devices.  Every user error -- unknown
backend, missing device, bad number, an output path that cannot be written,
a missing, damaged or hostile file -- is one line on standard error naming
the file and the problem, and a non-zero exit status: 2 for bad arguments, 1
for failures while running (a diverged run included), 130 when interrupted.
Everything that can be checked is checked before the first step.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

__all__ = ["main"]

PROG = "portable-softmax"

# --backend name -> (module to import, what to install when it is missing)
BACKENDS = {
    "numpy": ("numpy", "numpy"),
    "torch": ("torch", "torch"),
    "jax": ("jax.numpy", "'jax[cpu]'"),
    "cupy": ("cupy", "cupy-cuda12x"),
    "dask": ("dask.array", "'dask[array]'"),
    "array_api_strict": ("array_api_strict", "array-api-strict"),
}


# The options that --resume takes from the checkpoint when they are not given,
# and their values for a new run.
DEFAULTS: dict[str, Any] = {
    "batch_size": 100,
    "lr": 0.5,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "seed": 0,
    "dtype": "float32",
}

DEFAULT_CLASSES = 10

RESUME_HELP = (
    "continue from --checkpoint, with the settings it was saved with: options "
    "left out (--lr, --momentum, --weight-decay, --batch-size, --seed, --dtype) "
    "are taken from it; options given must equal its values, else an error names "
    "each one that differs; the training data must be the same; --steps counts "
    "from the start and must be at least the saved step count"
)


class UsageError(Exception):
    """A bad command line: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the usage block first; one line is easier to read in a log.
        raise UsageError(message)


def _count(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _train_options(
        commands.add_parser(
            "train",
            help="train softmax regression on MNIST and print the test accuracy",
            description="Train softmax regression on MNIST (the TensorFlow tutorial's "
            "settings by default) and print the test accuracy.  --resume: " + RESUME_HELP + ".",
        )
    )
    backends = commands.add_parser(
        "backends", help="list the array libraries and devices found here"
    )
    backends.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--backend", default="numpy", help=f"one of {', '.join(BACKENDS)}")
    train.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the backend's)")
    train.add_argument("--steps", type=_count(0), default=1000, help="SGD steps in all (1000)")
    train.add_argument("--batch-size", type=_count(1), help="batch size (100)")
    train.add_argument("--lr", type=_rate, help="learning rate (0.5)")
    train.add_argument("--momentum", type=_rate, help="momentum (0)")
    train.add_argument("--weight-decay", type=_rate, help="L2 penalty (0)")
    train.add_argument("--seed", type=_count(0), help="shuffling seed (0)")
    train.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="of the model; the data are cast to it (float32)",
    )
    train.add_argument(
        "--data-dir",
        help="directory of the four MNIST-style IDX files (Fashion-MNIST, ...); "
        "default: the MNIST copy embedded in the package",
    )
    train.add_argument(
        "--data",
        metavar="PATH",
        help="train from on-disk arrays too large for memory: a directory of X.npy, y.npy, "
        "X_test.npy, y_test.npy (read by rows) or a Zarr group of arrays of those names, "
        "opened lazily with Dask and streamed by row blocks into the model",
    )
    train.add_argument(
        "--chunk-rows",
        type=_count(1),
        default=10000,
        metavar="N",
        help="rows per Dask block with --data (10000); memory holds a few blocks",
    )
    train.add_argument(
        "--classes",
        type=_count(1),
        default=DEFAULT_CLASSES,
        metavar="N",
        help="number of classes: every label must lie in 0..N-1 (10, as in MNIST, "
        "Fashion-MNIST and KMNIST)",
    )
    train.add_argument("--eval-every", type=_count(1), default=100, help="test every N steps")
    train.add_argument("--plot", metavar="FILE.png", help="draw loss and accuracy (matplotlib)")
    train.add_argument("--checkpoint", metavar="PATH", help="save the training state here")
    train.add_argument("--checkpoint-every", type=_count(1), metavar="N", help="also every N steps")
    train.add_argument("--resume", action="store_true", help=RESUME_HELP)
    train.add_argument("--json", action="store_true", help="print a JSON summary only")
    progress = train.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="progress bar (tqdm) even when standard error is not a terminal",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Examples
    --------
    >>> from portable_softmax.cli import main
    >>> main(["train", "--steps", "-1"])
    2
    """
    try:
        args = _parser().parse_args(argv)
        if args.command == "backends":
            return _backends(args)
        return _train(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError, ImportError, RuntimeError, ArithmeticError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        print(f"{PROG}: error: out of memory: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        note = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        print(f"{PROG}: interrupted{note}", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _import_backend(name: str) -> ModuleType:
    key = name.replace("-", "_")
    if key not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, package = BACKENDS[key]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"backend {key!r} is not installed ({_one_line(exc)}); pip install {package}"
        ) from None


def _devices(xp: ModuleType) -> list[tuple[str, Any]]:
    """(label, device) for every real device of a namespace: cpu, cuda:0, ..."""
    with warnings.catch_warnings():
        # torch warns while it probes for CUDA on a machine without it.
        warnings.simplefilter("ignore")
        found = xp.__array_namespace_info__().devices()
    labels = []
    for d in found:
        label = _device_label(d)
        if label is not None:
            labels.append((label, d))
    return labels


def _device_label(d: Any) -> str | None:
    module = type(d).__module__
    if module.startswith("cupy"):
        return f"cuda:{d.id}"
    if module.startswith("torch"):
        if d.type == "meta":
            return None
        return d.type if d.index is None else f"{d.type}:{d.index}"
    if module.startswith("jax"):
        return f"{'cuda' if d.platform == 'gpu' else d.platform}:{d.id}"
    if module.startswith("array_api_strict"):
        name = str(d).split("'")[1]
        return "cpu" if name == "CPU_DEVICE" else name
    text = str(d)
    return None if d is None or text == "DASK_DEVICE" else text


def _find_device(xp: ModuleType, backend: str, wanted: str) -> Any:
    key = wanted.strip().lower().replace("gpu", "cuda")
    devices = _devices(xp)
    for label, d in devices:
        if label == key or label.split(":")[0] == key:
            return d
    available = ", ".join(label for label, _ in devices) or "none"
    raise UsageError(f"device {wanted!r} is not available to {backend}; available: {available}")


# array_api_strict's devices other than the CPU: what each pretends to be.
PRETEND_DEVICES = {
    "device1": "a second device",
    "device2": "a third device",
    "no_float64": "a device without float64",
    "no_x64": "a device without 64-bit types",
}


def _backends(args: argparse.Namespace) -> int:
    rows = [_backend_row(name, module) for name, (module, _) in BACKENDS.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if not row["installed"]:
            status = "not installed"
        else:
            devices = ", ".join(row["devices"]) or row.get("error", "no devices")
            status = f"{row['version'] or '?':<10} {devices}"
        print(f"{row['backend']:<17} {status}")
    pretend = next((row["pretend_devices"] for row in rows if row.get("pretend_devices")), None)
    if pretend:
        listed = "; ".join(f"{name}: {what}" for name, what in pretend.items())
        print(
            f"\narray_api_strict's devices other than cpu are pretend ones, for testing how "
            f"code handles devices; all compute on the CPU ({listed})"
        )
    return 0


def _backend_row(name: str, module: str) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": name, "installed": False, "version": None, "devices": []}
    try:
        lib = importlib.import_module(module)
    except ImportError as exc:
        row["error"] = _one_line(exc)
        return row
    row["installed"] = True
    top = sys.modules[module.split(".")[0]]
    row["version"] = vars(top).get("__version__")
    try:
        row["devices"] = [label for label, _ in _devices(_namespace(lib))]
    except Exception as exc:  # noqa: BLE001 - a broken driver is a row, not a crash
        row["error"] = _one_line(exc)
    if name == "array_api_strict":
        found = [d for d in row["devices"] if d in PRETEND_DEVICES]
        row["pretend_devices"] = {d: PRETEND_DEVICES[d] for d in found}
    return row


def _namespace(lib: ModuleType) -> ModuleType:
    from portable_softmax._compat import xp_namespace

    return xp_namespace(lib)


@dataclass
class _Dataset:
    """The two splits as arrays of the chosen library, their files and class count."""

    files: tuple[Any, Any, Any, Any]  # train images, train labels, test images, test labels
    X: Any
    y: Any
    X_test: Any
    y_test: Any
    image_shape: tuple[int, ...]
    classes: int


def _train(args: argparse.Namespace) -> int:
    _check_train_args(args)
    backend = args.backend.replace("-", "_")
    xp = _namespace(_import_backend(args.backend))
    device = None if args.device is None else _find_device(xp, backend, args.device)
    files = _data_files(args.data_dir) if args.data is None else _store_files(args.data)
    _check_outputs(args, files)
    settings, saved = _settings(args)
    dtype = _dtype(xp, backend, settings["dtype"], args)
    data = _load_data(args, files, xp, device, dtype) if args.data is None else _open_store(args)
    if not args.json:
        _announce(args, data, saved)
    model, history = _fit(args, settings, data, xp, device, dtype)
    summary = _summary(args, backend, settings, data, model, history)
    if args.plot is not None:
        _plot(history, args.plot, summary)
        summary["plot"] = args.plot
    _report(summary, args.json)
    return 0


def _check_train_args(args: argparse.Namespace) -> None:
    """The options that depend on each other, and --plot's matplotlib."""
    if args.resume and args.checkpoint is None:
        raise UsageError("--resume needs --checkpoint PATH")
    if args.data is not None and args.data_dir is not None:
        raise UsageError("--data and --data-dir name two datasets; give one")
    if args.checkpoint_every and args.checkpoint is None:
        raise UsageError("--checkpoint-every needs --checkpoint PATH")
    if args.plot is not None:
        try:
            import matplotlib
        except ImportError:
            raise UsageError(
                "--plot needs matplotlib: pip install 'portable_softmax[plot]'"
            ) from None
        matplotlib.use("Agg")


def _data_files(data_dir: str | None) -> tuple[Any, Any, Any, Any]:
    from portable_softmax.datasets import mnist_files

    return (*mnist_files("train", data_dir), *mnist_files("test", data_dir))


def _store_files(path: str) -> tuple[Any, ...]:
    """The files of a --data store (the .npy files, or the Zarr directory)."""
    return tuple(Path(path).glob("*.npy")) or (path,)


def _open_store(args: argparse.Namespace) -> _Dataset:
    """The --data arrays, lazily (Dask), with a test split: the run reports its accuracy."""
    import portable_softmax.streaming as streaming

    arrays = streaming.open_arrays(args.data, args.chunk_rows)
    if "X_test" not in arrays:
        raise ValueError(f"{args.data}: no X_test and y_test, on which the test accuracy is taken")
    X = arrays["X"]
    files = _store_files(args.data)
    shape = tuple(X.shape[1:])
    return _Dataset(files, X, arrays["y"], arrays["X_test"], arrays["y_test"], shape, args.classes)


def _check_outputs(args: argparse.Namespace, inputs: tuple[Any, ...]) -> None:
    """Every output path writable, and none the same file as another or as an input."""
    from portable_softmax.checkpoint import check_output_path

    outputs = {}
    try:
        if args.checkpoint is not None:
            outputs["--checkpoint"] = check_output_path(args.checkpoint, "--checkpoint")
        if args.plot is not None:
            outputs["--plot"] = _check_plot_path(check_output_path(args.plot, "--plot"), args.plot)
    except (OSError, ValueError) as exc:
        raise UsageError(_one_line(exc)) from None
    if len(outputs) == 2 and _same_file(outputs["--checkpoint"], outputs["--plot"]):
        raise UsageError(
            f"--checkpoint and --plot name the same file ({args.plot}); give each its own"
        )
    for option, path in outputs.items():
        for data_file in inputs:
            if _same_file(path, data_file):
                raise UsageError(
                    f"{option} {path} is the data file {data_file}: it would be overwritten"
                )


def _check_plot_path(path: Path, text: str) -> Path:
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = sorted(FigureCanvasBase.get_supported_filetypes())
    ext = path.suffix.lower().lstrip(".")
    if ext not in kinds:
        what = f".{ext} files" if ext else "a file without an extension"
        choices = ", ".join(f".{k}" for k in kinds)
        raise UsageError(f"--plot {text}: matplotlib cannot write {what}; use one of {choices}")
    return path


def _same_file(a: Any, b: Any) -> bool:
    a, b = Path(os.fspath(a)), Path(str(b))
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's settings: as given, else the checkpoint's when resuming, else DEFAULTS.

    On --resume, a given option that differs from the checkpoint's value is an
    error naming each such option: the run continues as it was saved, or not
    at all.
    """
    options = vars(args)
    given = {name: options[name] for name in DEFAULTS if options.get(name) is not None}
    if not args.resume:
        return {**DEFAULTS, **given}, None
    from portable_softmax.checkpoint import read_checkpoint_state

    saved = read_checkpoint_state(args.checkpoint)
    theirs = _saved_settings(saved, args.checkpoint)
    differ = [
        f"--{name.replace('_', '-')} {_show(value)} (it has {_show(theirs[name])})"
        for name, value in given.items()
        if name in theirs and theirs[name] != value
    ]
    if differ:
        raise UsageError(
            f"--resume continues {args.checkpoint} with the settings it was saved with, and "
            f"these options differ: {', '.join(differ)}; leave them out, or start a new run "
            f"with another --checkpoint"
        )
    step = saved.get("step")
    if isinstance(step, int) and step > args.steps:
        raise UsageError(
            f"--steps {args.steps} is below the {step} steps {args.checkpoint} has done; "
            f"--steps counts from the start: ask for at least {step}"
        )
    return {**DEFAULTS, **theirs, **given}, saved


def _saved_settings(saved: dict[str, Any], path: str) -> dict[str, Any]:
    """The options of DEFAULTS that a checkpoint records, their types checked."""
    found = {**saved.get("optimizer", {}), **saved}
    theirs = {name: found[name] for name in DEFAULTS if name in found}
    for name, value in theirs.items():
        kind = type(DEFAULTS[name])
        ok = isinstance(value, (int, float) if kind is float else kind)
        if not ok or isinstance(value, bool):
            raise ValueError(f"{path}: damaged checkpoint: {name} is {value!r}")
    return theirs


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _dtype(xp: ModuleType, backend: str, name: str, args: argparse.Namespace) -> Any:
    dtype = vars(xp).get(name)
    if dtype is None:
        raise UsageError(f"{args.checkpoint} holds a {name} model, which {backend} does not have")
    return dtype


def _load_data(
    args: argparse.Namespace, files: tuple[Any, ...], xp: ModuleType, device: Any, dtype: Any
) -> _Dataset:
    """Both splits, checked against each other before anything trains."""
    from portable_softmax.datasets import load_mnist

    image_shape = _check_image_headers(files)
    where = {"xp": xp, "device": device, "dtype": dtype, "data_dir": args.data_dir}
    (X, y), (X_test, y_test) = load_mnist("train", **where), load_mnist("test", **where)
    classes = _classes(args.classes, y, y_test, files)
    return _Dataset(files, X, y, X_test, y_test, image_shape, classes)


def _check_image_headers(files: tuple[Any, ...]) -> tuple[int, ...]:
    """Both splits hold images, of one size (read from the headers only)."""
    from portable_softmax.datasets import read_idx_header

    train_images, _, test_images, _ = files
    shapes = [read_idx_header(f)[1] for f in (train_images, test_images)]
    if any(len(shape) != 3 for shape in shapes):
        return shapes[0][1:]  # not images: load_mnist names the file and what it holds
    for f, shape, split in zip(
        (train_images, test_images), shapes, ("training", "test"), strict=True
    ):
        if shape[0] == 0:
            raise ValueError(f"{f}: no images: the {split} split is empty")
    if shapes[0][1:] != shapes[1][1:]:
        raise ValueError(
            f"{test_images}: images of {_pixels(shapes[1])} pixels, but the training "
            f"images ({train_images}) have {_pixels(shapes[0])}"
        )
    return tuple(shapes[0][1:])


def _pixels(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape[1:])) or "1"


def _classes(count: int, y: Any, y_test: Any, files: tuple[Any, ...]) -> int:
    """``count`` (``--classes``), after checking that every label lies in ``0..count-1``."""
    from portable_softmax._compat import to_numpy

    _, train_labels, _, test_labels = files
    for labels, f in ((y, train_labels), (y_test, test_labels)):
        top = int(to_numpy(labels).max())
        if top >= count:
            more = "" if count != DEFAULT_CLASSES else "; pass --classes N for a dataset of more"
            raise ValueError(
                f"{f}: label {top} is outside the {count} classes 0..{count - 1}{more}"
            )
    return count


def _announce(args: argparse.Namespace, data: _Dataset, saved: dict[str, Any] | None) -> None:
    source = args.data or args.data_dir or "embedded MNIST"
    print(
        f"{source}: {data.X.shape[0]} training and {data.X_test.shape[0]} test images of "
        f"{'x'.join(map(str, data.image_shape))} pixels, {data.classes} classes",
        flush=True,
    )
    step = None if saved is None else saved.get("step")
    if isinstance(step, int):  # else train() names what is wrong with the file
        print(f"resumed from step {step} of {args.checkpoint}", flush=True)


def _fit(
    args: argparse.Namespace,
    settings: dict[str, Any],
    data: _Dataset,
    xp: ModuleType,
    device: Any,
    dtype: Any,
) -> tuple[Any, Any]:
    """Build the model and optimizer from the settings and train them."""
    import portable_softmax as ps
    from portable_softmax import training

    model = ps.SoftmaxRegression(data.X.shape[1], data.classes, xp=xp, device=device, dtype=dtype)
    optimizer = ps.SGD(
        settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"]
    )
    try:
        history = training.train(
            model,
            data.X,
            data.y,
            optimizer=optimizer,
            batch_size=settings["batch_size"],
            steps=args.steps,
            seed=settings["seed"],
            eval_data=(data.X_test, data.y_test),
            eval_every=args.eval_every,
            progress=args.progress,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_saved_note(args.checkpoint)) from None
    return model, history


def _saved_note(path: str | None) -> str:
    """``"; run.npz holds step 1234 ..."`` after an interrupt, or ``""``."""
    if path is None:
        return ""
    from portable_softmax.checkpoint import read_checkpoint_state

    try:
        step = read_checkpoint_state(path)["step"]
    except (OSError, ValueError, KeyError):
        return ""
    return f"; {path} holds step {step}: add --resume to continue"


def _summary(
    args: argparse.Namespace,
    backend: str,
    settings: dict[str, Any],
    data: _Dataset,
    model: Any,
    history: Any,
) -> dict[str, Any]:
    """What the run did, as --json prints it."""
    import portable_softmax.streaming as streaming

    summary: dict[str, Any] = {
        "backend": backend,
        "device": _device_label(model.device) or str(model.device),
        "data": args.data or args.data_dir or "embedded MNIST",
        "classes": data.classes,
        "steps": history.steps,
        "steps_run": history.steps_run,
        "resumed_from": history.resumed_from,
        **settings,
        "seconds": round(history.seconds, 3),
        "final_loss": _readable(history.loss[-1], settings["dtype"]) if history.loss else None,
        "test_accuracy": streaming.accuracy(model, data.X_test, data.y_test),
    }
    if args.checkpoint is not None:
        summary["checkpoint"] = args.checkpoint
    return summary


def _readable(value: float, dtype: str) -> float:
    """``value`` with the digits its dtype has: 0.18521348, not 0.18521347641944885."""
    if dtype == "float64":
        return value
    import numpy as np

    return float(str(np.float32(value)))


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    loss = "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.4f}"
    span = ""
    if summary["resumed_from"]:
        span = f" (steps {summary['resumed_from'] + 1} to {summary['steps']})"
    print(
        f"{summary['backend']} on {summary['device']}: {summary['steps_run']} steps{span} in "
        f"{summary['seconds']:.2f} s, final batch loss {loss}"
    )
    print(f"test accuracy: {summary['test_accuracy']:.4f}")


def _plot(history: Any, path: str, summary: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    loss = np.asarray(history.loss)
    steps = np.arange(1, loss.size + 1)
    ax_loss.plot(steps, loss, lw=0.6, alpha=0.5, label="per step")
    window = min(50, loss.size)
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1 :], smooth, lw=1.8, label=f"mean of {window} steps")
    ax_loss.set(xlabel="step", ylabel="cross-entropy (batch)", title="training loss")
    ax_loss.set_ylim(bottom=0)
    ax_loss.legend()
    ax_acc.plot(history.eval_step, history.eval_accuracy, marker="o")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="test accuracy")
    fig.suptitle(
        f"softmax regression, {summary['backend']} on {summary['device']}: "
        f"test accuracy {summary['test_accuracy']:.4f}"
    )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
