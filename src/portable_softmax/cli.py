"""``portable-softmax``: train the MNIST model on any backend, list the backends.

``portable-softmax train`` runs the TensorFlow tutorial's softmax regression
(zeros, lr 0.5, batches of 100, 1000 steps, seed 0) on the embedded MNIST and
prints the test accuracy; ``portable-softmax backends`` lists the array
libraries that import here and their devices.  Every user error -- unknown
backend, missing device, bad number, missing or damaged file -- is one line on
standard error and a non-zero exit status: 2 for bad arguments, 1 for
failures while running, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
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

    train = commands.add_parser(
        "train",
        help="train softmax regression on MNIST and print the test accuracy",
        description="Train softmax regression on MNIST (the TensorFlow tutorial's "
        "settings by default) and print the test accuracy.",
    )
    train.add_argument("--backend", default="numpy", help=f"one of {', '.join(BACKENDS)}")
    train.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the backend's)")
    train.add_argument("--steps", type=_count(0), default=1000, help="SGD steps (1000)")
    train.add_argument("--batch-size", type=_count(1), default=100, help="batch size (100)")
    train.add_argument("--lr", type=_rate, default=0.5, help="learning rate (0.5)")
    train.add_argument("--momentum", type=_rate, default=0.0, help="momentum (0)")
    train.add_argument("--weight-decay", type=_rate, default=0.0, help="L2 penalty (0)")
    train.add_argument("--seed", type=_count(0), default=0, help="shuffling seed (0)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="float32")
    train.add_argument(
        "--data-dir",
        help="directory of the four MNIST-style IDX files (Fashion-MNIST, ...); "
        "default: the MNIST copy embedded in the package",
    )
    train.add_argument("--eval-every", type=_count(1), default=100, help="test every N steps")
    train.add_argument("--plot", metavar="FILE.png", help="draw loss and accuracy (matplotlib)")
    train.add_argument("--checkpoint", metavar="PATH", help="save the training state here")
    train.add_argument("--checkpoint-every", type=_count(1), metavar="N", help="also every N steps")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    train.add_argument("--json", action="store_true", help="print a JSON summary only")
    progress = train.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="progress bar (tqdm) even when standard error is not a terminal",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false")

    backends = commands.add_parser(
        "backends", help="list the array libraries and devices found here"
    )
    backends.add_argument("--json", action="store_true", help="print JSON")
    return parser


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
    except (OSError, ValueError, TypeError, ImportError, RuntimeError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
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


def _backends(args: argparse.Namespace) -> int:
    rows = []
    for name, (module, _) in BACKENDS.items():
        row: dict[str, Any] = {"backend": name, "installed": False, "version": None, "devices": []}
        try:
            lib = importlib.import_module(module)
        except ImportError as exc:
            row["error"] = _one_line(exc)
            rows.append(row)
            continue
        row["installed"] = True
        top = sys.modules[module.split(".")[0]]
        row["version"] = getattr(top, "__version__", None)
        try:
            row["devices"] = [label for label, _ in _devices(_namespace(lib))]
        except Exception as exc:  # noqa: BLE001 - a broken driver is a row, not a crash
            row["error"] = _one_line(exc)
        rows.append(row)
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
    return 0


def _train(args: argparse.Namespace) -> int:
    _check_train_args(args)
    backend = args.backend.replace("-", "_")
    xp = _namespace(_import_backend(args.backend))
    device = None if args.device is None else _find_device(xp, backend, args.device)
    dtype = getattr(xp, args.dtype)
    train_data, test_data = _load_data(args, xp, device, dtype)
    start = time.perf_counter()
    model, optimizer, history = _fit(args, train_data, test_data, xp, device, dtype)
    seconds = time.perf_counter() - start
    summary = _summary(args, backend, model, optimizer, history, seconds, test_data)
    if args.plot:
        _plot(history, args.plot, summary)
        summary["plot"] = args.plot
    _report(summary, args.json)
    return 0


def _check_train_args(args: argparse.Namespace) -> None:
    """The options that depend on each other, and --plot's matplotlib."""
    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint PATH")
    if args.checkpoint_every and not args.checkpoint:
        raise UsageError("--checkpoint-every needs --checkpoint PATH")
    if args.plot:
        try:
            import matplotlib
        except ImportError:
            raise UsageError(
                "--plot needs matplotlib: pip install 'portable_softmax[plot]'"
            ) from None
        matplotlib.use("Agg")


def _namespace(lib: ModuleType) -> ModuleType:
    from portable_softmax._compat import xp_namespace

    return xp_namespace(lib)


def _load_data(
    args: argparse.Namespace, xp: ModuleType, device: Any, dtype: Any
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The training and test splits, as arrays of the chosen library."""
    from portable_softmax.datasets import load_mnist

    where = {"xp": xp, "device": device, "dtype": dtype, "data_dir": args.data_dir}
    return load_mnist("train", **where), load_mnist("test", **where)


def _fit(
    args: argparse.Namespace,
    train_data: tuple[Any, Any],
    test_data: tuple[Any, Any],
    xp: ModuleType,
    device: Any,
    dtype: Any,
) -> tuple[Any, Any, Any]:
    """Build the model and optimizer from the options and train them."""
    import portable_softmax as ps
    from portable_softmax import training

    X, y = train_data
    n_classes = int(max(_max(y), _max(test_data[1]))) + 1
    model = ps.SoftmaxRegression(X.shape[1], n_classes, xp=xp, device=device, dtype=dtype)
    optimizer = ps.SGD(args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    history = training.train(
        model,
        X,
        y,
        optimizer=optimizer,
        batch_size=args.batch_size,
        steps=args.steps,
        seed=args.seed,
        eval_data=test_data,
        eval_every=args.eval_every,
        progress=args.progress,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    return model, optimizer, history


def _summary(
    args: argparse.Namespace,
    backend: str,
    model: Any,
    optimizer: Any,
    history: Any,
    seconds: float,
    test_data: tuple[Any, Any],
) -> dict[str, Any]:
    """What the run did, as --json prints it."""
    summary = {
        "backend": backend,
        "device": _device_label(model.device) or str(model.device),
        "dtype": args.dtype,
        "data": args.data_dir or "embedded MNIST",
        "steps": history.steps,
        "batch_size": args.batch_size,
        "lr": optimizer.lr,
        "momentum": optimizer.momentum,
        "weight_decay": optimizer.weight_decay,
        "seed": args.seed,
        "seconds": round(seconds, 3),
        "final_loss": history.loss[-1] if history.loss else None,
        "test_accuracy": float(model.accuracy(*test_data)),
    }
    if args.checkpoint:
        summary["checkpoint"] = args.checkpoint
    return summary


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    loss = "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.4f}"
    print(
        f"{summary['backend']} on {summary['device']}: {summary['steps']} steps in "
        f"{summary['seconds']:.2f} s, final batch loss {loss}"
    )
    print(f"test accuracy: {summary['test_accuracy']:.4f}")


def _max(a: Any) -> int:
    from portable_softmax._compat import to_numpy

    return int(to_numpy(a).max()) if a.shape[0] else 0


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
