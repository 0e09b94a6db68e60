"""Minibatch SGD for :class:`~portable_softmax.SoftmaxRegression`, with checkpoints.

The same loop runs on every backend: batches are drawn on the host with
``numpy.random.default_rng(seed)`` (so every backend sees the same batches),
their indices moved to the data's device, and the parameters updated with the
closed-form gradients of :meth:`SoftmaxRegression.gradients` -- no autograd.

This module is ``portable_softmax.training``, not ``portable_softmax.train``:
``ps.train`` is the function, and a submodule of the same name would shadow it
after ``import portable_softmax.train``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from portable_softmax._compat import (
    Array,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_dask_namespace,
    is_torch_namespace,
    xp_device,
    xp_inputs,
)
from portable_softmax.model import SoftmaxRegression

__all__ = [
    "SGD",
    "History",
    "Step",
    "load_checkpoint",
    "save_checkpoint",
    "to_numpy",
    "train",
]

# Losses stay on the device and are copied to the host in blocks of this many
# steps: a float() per step would wait for the GPU at every step.
_SYNC_EVERY = 100


class SGD:
    """Stochastic gradient descent with the update rule of ``torch.optim.SGD``.

    For each parameter ``p`` with gradient ``g`` (dampening 0, no Nesterov)::

        g = g + weight_decay * p
        v = g                      on the first step
        v = momentum * v + g       afterwards
        p = p - lr * v             (v = g when momentum is 0)

    Parameters
    ----------
    lr : float
        Learning rate; 0.5 is the TensorFlow tutorial's.
    momentum : float
        Momentum factor, at least 0.
    weight_decay : float
        L2 penalty factor, at least 0.

    Examples
    --------
    >>> import numpy as np
    >>> import portable_softmax as ps
    >>> opt = ps.SGD(lr=0.1, momentum=0.9)
    >>> p = [np.asarray([1.0])]
    >>> p = opt.step(p, [np.asarray([1.0])]); p       # v = 1
    [array([0.9])]
    >>> p = opt.step(p, [np.asarray([1.0])]); p       # v = 0.9 * 1 + 1
    [array([0.71])]
    """

    def __init__(self, lr: float = 0.5, *, momentum: float = 0.0, weight_decay: float = 0.0):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.velocity: list[Array] | None = None

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"

    def step(self, params: list[Array], grads: list[Array]) -> list[Array]:
        """Return the updated parameters (new arrays: JAX arrays are immutable)."""
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} parameters but {len(grads)} gradients")
        velocity = []
        updated = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                if self.velocity is not None:
                    g = self.momentum * self.velocity[i] + g
                velocity.append(g)
            updated.append(p - self.lr * g)
        if self.momentum:
            self.velocity = velocity
        return updated

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters and momentum buffers (``None`` before the first step)."""
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "velocity": None if self.velocity is None else list(self.velocity),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; hyperparameters included, as in PyTorch."""
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.weight_decay = float(state["weight_decay"])
        velocity = state.get("velocity")
        self.velocity = None if velocity is None else list(velocity)


@dataclass
class History:
    """What :func:`train` records.

    Attributes
    ----------
    loss : list of float
        The minibatch loss of every step, in order (steps restored from a
        checkpoint included).
    eval_step, eval_accuracy : list
        Step numbers and accuracies on the evaluation data, when given.
    seconds : float
        Wall-clock time of this call's loop.
    stopped_early : bool
        True when a callback stopped the run before ``steps``.
    """

    loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def steps(self) -> int:
        """Number of steps done."""
        return len(self.loss)

    def as_dict(self) -> dict[str, Any]:
        """Plain Python types, ready for ``json.dumps``."""
        return {
            "loss": list(self.loss),
            "eval_step": list(self.eval_step),
            "eval_accuracy": list(self.eval_accuracy),
            "seconds": self.seconds,
            "stopped_early": self.stopped_early,
        }


@dataclass
class Step:
    """What a callback of :func:`train` receives after each step.

    ``loss`` is this step's loss as a 0-d array on the device: ``float(loss)``
    reads it (and, on a GPU, waits for it).  ``history.loss`` may lag by up to
    100 steps, for the same reason.
    """

    step: int
    loss: Array
    model: SoftmaxRegression
    optimizer: SGD
    history: History


class _Batches:
    """Index batches: a fresh permutation per epoch, drawn from one generator.

    An epoch ends when fewer than ``batch_size`` unseen indices remain (the
    remainder is skipped, as a ``drop_last`` loader does).  The state is the
    generator's state before the current epoch's draw and the position in it,
    which is all a checkpoint needs to continue with the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng(seed)
        self.epoch_state: dict[str, Any] | None = None
        self.perm: np.ndarray | None = None
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.epoch_state = self.rng.bit_generator.state
            self.perm = self.rng.permutation(self.n)
            self.pos = 0
        batch = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state(self) -> dict[str, Any]:
        return {"epoch_state": self.epoch_state, "pos": self.pos}

    def restore(self, state: dict[str, Any]) -> None:
        if state["epoch_state"] is None:
            return
        self.rng.bit_generator.state = state["epoch_state"]
        self.epoch_state = self.rng.bit_generator.state
        self.perm = self.rng.permutation(self.n)
        self.pos = int(state["pos"])


def to_numpy(a: Array) -> np.ndarray:
    """A NumPy copy of an array of any backend (from the GPU, computing Dask)."""
    xp = xp_inputs(a)[0]
    if is_cupy_namespace(xp):
        return a.get()
    if is_torch_namespace(xp):
        return a.detach().cpu().numpy()
    if is_array_api_strict_namespace(xp):
        # Its devices other than the CPU are pretend ones that refuse NumPy.
        a = a.to_device(xp.Device("CPU_DEVICE"))
    return np.asarray(a)


def train(
    model: SoftmaxRegression,
    X: Array,
    y: Array,
    *,
    optimizer: SGD | None = None,
    batch_size: int = 100,
    steps: int = 1000,
    seed: int = 0,
    eval_data: tuple[Array, Array] | None = None,
    eval_every: int = 100,
    callbacks: Iterable[Callable[[Step], Any]] = (),
    progress: bool | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> History:
    """Train ``model`` with minibatch SGD on ``(X, y)``; update it in place.

    Each step draws a batch, computes the loss and gradients of
    :meth:`SoftmaxRegression.gradients` (one softmax, closed form) and applies
    ``optimizer``.  The defaults are the TensorFlow tutorial's: batches of
    100, 1000 steps, ``SGD(lr=0.5)``, seed 0.

    Parameters
    ----------
    model : SoftmaxRegression
        Updated in place (``model.W``, ``model.b`` are replaced).
    X, y : arrays
        Features ``(N, n_features)`` and integer labels ``(N,)`` of the
        model's library, on one device.  Dask arrays are persisted, and so
        are the parameters after every step; expect Dask's scheduling
        overhead (a fraction of a second) per step.
    optimizer : SGD, optional
        Default ``SGD(lr=0.5)``.
    batch_size, steps, seed : int
        Batches of ``batch_size`` rows from a per-epoch shuffle drawn with
        ``numpy.random.default_rng(seed)``: the same on every backend.
        ``steps`` counts from the start of training, also when resuming.
    eval_data : (X_test, y_test), optional
        Accuracy on these every ``eval_every`` steps and after step ``steps``
        (not when a callback stops the run: a resumed run's history then
        equals an uninterrupted one's).
    callbacks : iterable of callables
        Called with a :class:`Step` after every step; a true return value
        stops training (after writing the checkpoint, if any).
    progress : bool, optional
        A tqdm progress bar (if tqdm is installed); default: when standard
        error is a terminal.
    checkpoint : path, optional
        A ``.npz`` file written atomically every ``checkpoint_every`` steps
        (if given), when training ends or stops, and on ``KeyboardInterrupt``.
    resume : bool
        Continue from ``checkpoint``: weights, optimizer, step, batch order
        and history.  The result equals an uninterrupted run's.

    Returns
    -------
    History

    Raises
    ------
    ValueError
        For bad sizes or counts, or a checkpoint from a different run.
    TypeError
        If the data's library is not the model's.
    FileNotFoundError
        For ``resume=True`` without an existing checkpoint.

    Examples
    --------
    >>> import numpy as np
    >>> import portable_softmax as ps
    >>> X = np.asarray([[0.0, 1.0], [1.0, 0.0]] * 4, dtype=np.float32)
    >>> y = np.asarray([1, 0] * 4)
    >>> model = ps.SoftmaxRegression(2, 2)
    >>> history = ps.train(model, X, y, batch_size=4, steps=20)
    >>> len(history.loss), history.loss[-1] < history.loss[0] < 0.7
    (20, True)
    >>> model.predict(X[:2])
    array([1, 0])
    """
    optimizer = SGD() if optimizer is None else optimizer
    xp = _check_data(model, X, y, batch_size, steps, eval_every, checkpoint_every)
    n = X.shape[0]
    sampler = _Batches(n, batch_size, seed)
    history = History()
    callbacks = list(callbacks)
    config = {"seed": int(seed), "batch_size": int(batch_size), "n_samples": int(n)}
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint path")
        state = load_checkpoint(checkpoint, model, optimizer)
        theirs = {k: state.get(k) for k in config}
        if theirs != config:
            raise ValueError(
                f"checkpoint {checkpoint} is from a run with {theirs}, "
                f"this run has {config}: its batches would differ"
            )
        sampler.restore(state["sampler"])
        saved = state["history"]
        history = History(saved["loss"], saved["eval_step"], saved["eval_accuracy"])

    def save() -> None:
        flush()
        state = dict(config, step=len(history.loss), sampler=sampler.state())
        state["history"] = history.as_dict()
        save_checkpoint(checkpoint, model, optimizer, state=state)

    pending: list[Array] = []

    def flush() -> None:
        if pending:
            history.loss.extend(float(v) for v in to_numpy(xp.stack(pending)))
            pending.clear()
            if bar is not None:
                bar.set_postfix(loss=f"{history.loss[-1]:.4f}")

    def evaluate(step: int) -> None:
        X_test, y_test = eval_data
        history.eval_step.append(step)
        history.eval_accuracy.append(float(model.accuracy(X_test, y_test)))

    done = len(history.loss)
    bar = _progress_bar(progress, steps, done)
    dev = xp_device(X)
    # Dask would otherwise recompute the data and grow one graph through all the steps.
    persist = is_dask_namespace(xp)
    if persist:
        X, y = X.persist(), y.persist()
    start = time.perf_counter()
    try:
        for step in range(done + 1, steps + 1):
            batch = sampler.next()
            idx = batch if persist else xp.asarray(batch, device=dev)
            Xb = xp.take(X, idx, axis=0)
            yb = xp.take(y, idx, axis=0)
            loss, grads = model.gradients(Xb, yb)
            params = optimizer.step(model.parameters, grads)
            model.parameters = [p.persist() for p in params] if persist else params
            pending.append(loss)
            if len(pending) >= _SYNC_EVERY:
                flush()
            if bar is not None:
                bar.update(1)
            if eval_data is not None and (step % eval_every == 0 or step == steps):
                evaluate(step)
            stop = False
            for callback in callbacks:
                stop = bool(callback(Step(step, loss, model, optimizer, history))) or stop
            if stop and step < steps:
                history.stopped_early = True
                break
            if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                save()
        flush()
        if checkpoint is not None:
            save()
    except KeyboardInterrupt:
        if checkpoint is not None:
            save()
        raise
    finally:
        history.seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
    return history


def _check_data(
    model: SoftmaxRegression,
    X: Array,
    y: Array,
    batch_size: int,
    steps: int,
    eval_every: int,
    checkpoint_every: int | None,
) -> Any:
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("steps", steps, 0),
        ("eval_every", eval_every, 1),
        ("checkpoint_every", 1 if checkpoint_every is None else checkpoint_every, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    xp, X, (y,) = xp_inputs(X, y)
    if xp is not model.xp:
        raise TypeError(
            f"the data are arrays of {xp.__name__}, the model's parameters of "
            f"{model.xp.__name__}; create the model with xp={xp.__name__}"
        )
    n_features = model.W.shape[0]
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"X must have shape (N, {n_features}), got {tuple(X.shape)}")
    if tuple(y.shape) != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
    if batch_size > X.shape[0]:
        raise ValueError(f"batch_size {batch_size} exceeds the {X.shape[0]} training samples")
    return xp


def _progress_bar(progress: bool | None, total: int, initial: int) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", desc="train", leave=False)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: SoftmaxRegression,
    optimizer: SGD | None = None,
    *,
    state: dict[str, Any] | None = None,
) -> None:
    """Write the model, the optimizer and a JSON-able ``state`` to an ``.npz`` file.

    The file is written to a temporary name in the same directory and renamed
    over ``path``, so a crash leaves either the previous checkpoint or the
    new one, never half of one.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import portable_softmax as ps
    >>> from portable_softmax.training import load_checkpoint, save_checkpoint
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.npz"
    >>> model = ps.SoftmaxRegression(3, 2)
    >>> model.b = model.b + 1
    >>> save_checkpoint(path, model, state={"step": 7})
    >>> fresh = ps.SoftmaxRegression(3, 2)
    >>> load_checkpoint(path, fresh)["step"], fresh.b
    (7, array([1., 1.], dtype=float32))
    """
    arrays = {"W": to_numpy(model.W), "b": to_numpy(model.b)}
    meta: dict[str, Any] = dict(state or {})
    if optimizer is not None:
        opt = optimizer.state_dict()
        velocity = opt.pop("velocity")
        opt["has_velocity"] = velocity is not None
        for i, v in enumerate(velocity or ()):
            arrays[f"velocity_{i}"] = to_numpy(v)
        meta["optimizer"] = opt
    arrays["meta"] = np.asarray(json.dumps(meta))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_checkpoint(
    path: str | os.PathLike[str],
    model: SoftmaxRegression,
    optimizer: SGD | None = None,
) -> dict[str, Any]:
    """Restore :func:`save_checkpoint`'s file into ``model`` (and ``optimizer``).

    Arrays are moved to the model's library, device and dtype.  Returns the
    saved ``state`` dictionary.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a checkpoint, is damaged, or holds parameters of other
        shapes than the model's; the message names the file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a portable_softmax checkpoint or damaged ({exc})") from None
    xp, dev, dtype = model.xp, model.device, model.dtype

    def restore(name: str, like: Array) -> Array:
        if name not in arrays:
            raise ValueError(f"{path}: not a portable_softmax checkpoint (no {name!r})")
        value = arrays[name]
        if value.shape != tuple(like.shape):
            raise ValueError(
                f"{path}: {name} has shape {value.shape}, the model's is {tuple(like.shape)}"
            )
        return xp.astype(xp.asarray(value, device=dev), dtype)

    params = [restore("W", model.W), restore("b", model.b)]
    opt = meta.pop("optimizer", None)
    if optimizer is not None and opt is not None:
        has_velocity = opt.pop("has_velocity")
        opt["velocity"] = (
            [restore(f"velocity_{i}", p) for i, p in enumerate(params)] if has_velocity else None
        )
        optimizer.load_state_dict(opt)
    model.parameters = params
    return meta
