"""Minibatch SGD for :class:`~portable_softmax.SoftmaxRegression`, with checkpoints.

The same loop runs on every backend: batches are drawn on the host with
``numpy.random.default_rng(seed)`` (so every backend sees the same batches),
their indices moved to the data's device, and the parameters updated with the
closed-form gradients of :meth:`SoftmaxRegression.gradients` -- no autograd.

Each step is computed into new values and committed with one assignment of a
:class:`_State` (step count, parameters, momentum, batch order), so a
``KeyboardInterrupt`` that lands anywhere leaves one consistent state to
checkpoint: the last committed step, its history included.

This module is ``portable_softmax.training``, not ``portable_softmax.train``:
``ps.train`` is the function, and a submodule of the same name would shadow it
after ``import portable_softmax.train``.  ``SGD`` lives in
:mod:`portable_softmax.optim` and the checkpoint files in
:mod:`portable_softmax.checkpoint`; both are importable from here too.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

import portable_softmax.streaming as streaming
from portable_softmax._batches import Batches as _Batches
from portable_softmax._compat import Array, is_dask_namespace, to_numpy, xp_device, xp_inputs
from portable_softmax._steps import RunFunction, StepFunction, make_run, make_step
from portable_softmax.checkpoint import (
    check_output_path,
    dtype_name,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from portable_softmax.model import SoftmaxRegression
from portable_softmax.optim import SGD

__all__ = [
    "SGD",
    "History",
    "Step",
    "TrainingDiverged",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]

# Losses stay on the device and are copied to the host in blocks of this many
# steps: a float() per step would wait for the GPU at every step.
_SYNC_EVERY = 100
# The lengths of the runs of steps compiled as one computation (JAX).
_RUN_LENGTHS = (100, 10, 1)
# Rows of X that go into a checkpoint's fingerprint of the training data.
_FINGERPRINT_ROWS = 256


class TrainingDiverged(FloatingPointError):
    """Training reached a non-finite loss (or non-finite weights).

    ``step`` is the first step whose loss was not finite, ``loss`` that loss
    (None when the weights were found non-finite at a checkpoint), and
    ``history`` the run's history up to the step before.  A checkpoint, if
    any, is left as last written: from finite weights.
    """

    def __init__(self, step: int, loss: float | None, history: History) -> None:
        what = "non-finite weights" if loss is None else f"loss {loss}"
        super().__init__(f"training diverged at step {step} ({what}); lower the learning rate")
        self.step, self.loss, self.history = step, loss, history


@dataclass
class History:
    """What :func:`train` records.

    Attributes
    ----------
    loss : list of float
        The minibatch loss of every step, in order (steps restored from a
        checkpoint included).
    eval_step, eval_accuracy : list
        Step numbers and accuracies (exact fractions of correct rows) on the
        evaluation data, when given.
    seconds : float
        Wall-clock time of this call's loop.
    stopped_early : bool
        True when a callback stopped the run before ``steps``.
    resumed_from : int
        The step the run was resumed from (0 for a fresh run).
    """

    loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    resumed_from: int = 0

    @property
    def steps(self) -> int:
        """Number of steps done, those before a resume included."""
        return len(self.loss)

    @property
    def steps_run(self) -> int:
        """Number of steps this call ran (``seconds`` is their time)."""
        return self.steps - self.resumed_from

    def as_dict(self) -> dict[str, Any]:
        """Plain Python types, ready for ``json.dumps``."""
        return {
            "loss": list(self.loss),
            "eval_step": list(self.eval_step),
            "eval_accuracy": list(self.eval_accuracy),
            "seconds": self.seconds,
            "stopped_early": self.stopped_early,
            "resumed_from": self.resumed_from,
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


class _State(NamedTuple):
    """Everything a step changes, committed by one assignment (see the module notes)."""

    step: int
    params: list[Array]
    velocity: list[Array] | None
    sampler: _Batches


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
        Features ``(N, n_features)`` and integer labels ``(N,)`` in
        ``[0, n_classes)``, of the model's library, on one device.  ``X`` is
        cast to the model's dtype (a copy) when its dtype differs: the model
        keeps its dtype on every backend.  Dask arrays are persisted, and so
        are the parameters after every step; expect Dask's scheduling
        overhead (a fraction of a second) per step.  Dask ``X``, ``y`` with
        a NumPy, PyTorch or CuPy model are *streamed* instead, never held
        whole: Dask computes row blocks, a thread moves them to the model's
        library and device ahead of use, and the batches come from a seeded
        shuffle of the blocks and of the rows within each (not from the
        shuffle of all rows); see :mod:`portable_softmax.streaming`.
    optimizer : SGD, optional
        Default ``SGD(lr=0.5)``; when resuming, the checkpoint's.
    batch_size, steps, seed : int
        Batches of ``batch_size`` rows from a per-epoch shuffle drawn with
        ``numpy.random.default_rng(seed)``: the same on every backend.
        ``steps`` counts from the start of training, also when resuming.
    eval_data : (X_test, y_test), optional
        Accuracy on these every ``eval_every`` steps and after step ``steps``
        (not when a callback stops the run: a resumed run's history then
        equals an uninterrupted one's).  Checked and cast as ``X``, ``y``.
    callbacks : iterable of callables
        Called with a :class:`Step` after every step; a true return value
        stops training (after writing the checkpoint, if any).
    progress : bool, optional
        A tqdm progress bar (if tqdm is installed); default: when standard
        error is a terminal.
    checkpoint : path, optional
        A ``.npz`` file written atomically every ``checkpoint_every`` steps
        (if given), when training ends or stops, and on ``KeyboardInterrupt``
        (then with the last completed step).  Its directory is checked before
        the first step.
    resume : bool
        Continue from ``checkpoint``: weights, optimizer, step, batch order
        and history.  The result equals an uninterrupted run's, bit for bit
        on the same backend.  What you pass must match what the checkpoint
        was written with -- ``seed``, ``batch_size``, the training data, the
        model's dtype and, if given, the optimizer's settings -- or a
        ``ValueError`` names each difference; leave ``optimizer`` out to take
        the checkpoint's.

    Returns
    -------
    History

    Raises
    ------
    ValueError
        For bad sizes or counts, labels outside ``[0, n_classes)``, an
        output path that cannot be written, a damaged checkpoint or one from
        a different run, or ``steps`` below a resumed checkpoint's step.
    TypeError
        If the data's library is not the model's, ``X`` is complex or ``y``
        not integer.
    FileNotFoundError
        For ``resume=True`` without an existing checkpoint, or a checkpoint
        in a directory that does not exist.
    TrainingDiverged
        At the first non-finite loss (found when the losses are read, at
        most 100 steps later, at a checkpoint or at the end); the checkpoint
        keeps the last finite state.

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
    _check_counts(
        batch_size=batch_size, steps=steps, eval_every=eval_every, checkpoint_every=checkpoint_every
    )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path")
    xp, data, sampler = _training_data(model, X, y, batch_size, seed)
    evaluation = None
    if eval_data is not None:
        evaluation = _Evaluation(_eval_data(model, eval_data), eval_every)
    saver = None
    if checkpoint is not None:
        run = {"seed": int(seed), "batch_size": int(batch_size), "n_samples": int(X.shape[0])}
        run["data"] = data.fingerprint()
        saver = _Checkpointer(check_output_path(checkpoint, "checkpoint"), checkpoint_every, run)
    if resume:
        optimizer, state, history = _resume(saver, model, optimizer, sampler, steps)
    else:
        optimizer = SGD() if optimizer is None else optimizer
        history = History()
        state = _State(0, model.parameters, optimizer.velocity, sampler)
    log = _LossLog(xp, history, _progress_bar(progress, steps, history.steps))
    stepper = make_step(model, optimizer, data)
    loop = _Run(
        model, optimizer, data, history, log, saver, evaluation, list(callbacks), state, stepper,
        make_run(model, optimizer, data) if not callbacks else None,
    )  # fmt: skip
    return loop.until(steps)


_EVAL_NAMES = ("eval_data[0]", "eval_data[1]")


def _training_data(model: SoftmaxRegression, X: Array, y: Array, batch_size: int, seed: int) -> Any:
    """``(xp, data, sampler)``: in memory, or streamed by row blocks (Dask data, another model)."""
    if streaming.streams(model, X):
        X, y = streaming.check_streamed(model, X, y, "X", "y")
        sampler = streaming.BlockBatches.start(X.chunks[0], batch_size, seed)
        return model.xp, streaming.StreamedData(model, X, y), sampler
    xp, X, y = _check_data(model, X, y, "X", "y")
    if batch_size > X.shape[0]:
        raise ValueError(f"batch_size {batch_size} exceeds the {X.shape[0]} training samples")
    return xp, _Data(xp, X, y), _Batches.start(X.shape[0], batch_size, seed)


def _eval_data(model: SoftmaxRegression, eval_data: tuple[Array, Array]) -> tuple[Array, Array]:
    if streaming.streams(model, eval_data[0]):
        return streaming.check_streamed(model, *eval_data, *_EVAL_NAMES)
    return _check_data(model, *eval_data, *_EVAL_NAMES)[1:]


def _check_counts(**counts: int | None) -> None:
    """Step counts and sizes: integers, at least 1 (``steps`` at least 0); None passes."""
    for name, value in counts.items():
        low = 0 if name == "steps" else 1
        if value is None and name == "checkpoint_every":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_data(
    model: SoftmaxRegression, X: Array, y: Array, x_name: str, y_name: str
) -> tuple[ModuleType, Array, Array]:
    """The data against the model; ``X`` cast to the model's dtype (one rule everywhere)."""
    xp, X, (y,) = xp_inputs(X, y)
    _check_library(model, xp)
    _check_shapes(model, X, y, x_name, y_name)
    if xp.isdtype(X.dtype, "complex floating"):
        raise TypeError(f"{x_name} is complex ({X.dtype}); the model is real")
    _check_labels(model, xp, y, y_name)
    return xp, (X if X.dtype == model.dtype else xp.astype(X, model.dtype)), y


def _check_library(model: SoftmaxRegression, xp: ModuleType) -> None:
    if xp is not model.xp:
        raise TypeError(
            f"the data are arrays of {xp.__name__}, the model's parameters of "
            f"{model.xp.__name__}; create the model with xp={xp.__name__}"
        )


def _check_shapes(model: SoftmaxRegression, X: Array, y: Array, x_name: str, y_name: str) -> None:
    n_features = model.W.shape[0]
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"{x_name} must have shape (N, {n_features}), got {tuple(X.shape)}")
    if tuple(y.shape) != (X.shape[0],):
        raise ValueError(f"{y_name} must have shape ({X.shape[0]},), got {tuple(y.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{x_name} is empty: no samples")


def _check_labels(model: SoftmaxRegression, xp: ModuleType, y: Array, y_name: str) -> None:
    """Integer labels in ``[0, n_classes)`` (read now: a bad one would stop the run later)."""
    n_classes = model.W.shape[1]
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(
            f"{y_name} must hold integer class labels, got {y.dtype}; "
            f"cast it first, e.g. xp.astype({y_name}, xp.int64)"
        )
    low, high = int(xp.min(y)), int(xp.max(y))
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{y_name} holds label {low if low < 0 else high}, outside the model's "
            f"{n_classes} classes 0..{n_classes - 1}"
        )


def _resume(
    saver: _Checkpointer | None,
    model: SoftmaxRegression,
    optimizer: SGD | None,
    sampler: _Batches,
    steps: int,
) -> tuple[SGD, _State, History]:
    """Check the checkpoint against this run, then load it into the model and optimizer."""
    assert saver is not None  # train checks resume=True has a checkpoint
    path = saver.path
    saved = read_checkpoint_state(path)
    history = _saved_history(saved, path)
    try:
        sampler = sampler.restored(saved["sampler"])
    except ValueError as exc:
        raise ValueError(f"{path}: damaged checkpoint: {exc}") from None
    differences = _differences(saved, saver.run, model, optimizer)
    if differences:
        raise ValueError(
            f"checkpoint {path} was written by another run; these differ: "
            f"{'; '.join(differences)}.  Resume with the checkpoint's settings or start "
            f"a new checkpoint"
        )
    if history.steps > steps:
        raise ValueError(
            f"checkpoint {path} is at step {history.steps}, beyond steps={steps}: "
            f"ask for at least {history.steps} steps"
        )
    optimizer = SGD() if optimizer is None else optimizer
    load_checkpoint(path, model, optimizer)
    return optimizer, _State(history.steps, model.parameters, optimizer.velocity, sampler), history


def _saved_history(saved: dict[str, Any], path: Any) -> History:
    """The history of a checkpoint of :func:`train`, its structure checked."""
    for key in ("step", "seed", "batch_size", "n_samples", "sampler", "history"):
        if key not in saved:
            raise ValueError(f"{path}: not a checkpoint of ps.train (no {key!r} in its state)")
    step, record = saved["step"], saved["history"]
    if not _is_count(step):
        raise ValueError(f"{path}: damaged checkpoint: step is {step!r}")
    if not isinstance(record, dict):
        raise ValueError(f"{path}: damaged checkpoint: history is {record!r}")
    loss = record.get("loss")
    eval_step = record.get("eval_step")
    accuracy = record.get("eval_accuracy")
    if not (isinstance(loss, list) and len(loss) == step and all(map(_is_finite, loss))):
        raise ValueError(f"{path}: damaged checkpoint: history.loss is not {step} finite numbers")
    if not (isinstance(eval_step, list) and all(map(_is_count, eval_step))):
        raise ValueError(f"{path}: damaged checkpoint: history.eval_step is not a list of steps")
    if not (isinstance(accuracy, list) and len(accuracy) == len(eval_step)):
        raise ValueError(f"{path}: damaged checkpoint: history.eval_accuracy does not match")
    if not all(_is_finite(a) and 0 <= a <= 1 for a in accuracy):
        raise ValueError(f"{path}: damaged checkpoint: history.eval_accuracy is not in [0, 1]")
    return History(list(map(float, loss)), eval_step, list(map(float, accuracy)), resumed_from=step)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _differences(
    saved: dict[str, Any], run: dict[str, Any], model: SoftmaxRegression, optimizer: SGD | None
) -> list[str]:
    """Each setting of this run that differs from the checkpoint's, named with both values."""
    ours: dict[str, Any] = dict(run, dtype=dtype_name(model.dtype))
    if optimizer is not None:
        ours.update(optimizer.hyperparameters)
    theirs = {**saved, **saved.get("optimizer", {})}
    found = []
    for name, value in ours.items():
        if name not in theirs or theirs[name] == value:
            continue
        if name == "data":
            found.append("the training data (X and y have another fingerprint)")
        else:
            found.append(f"{name}={value!r} (checkpoint: {theirs[name]!r})")
    return found


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


class _LossLog:
    """Each step's loss: kept on the device, copied into the history in blocks.

    Every entry carries its step, so a copy cut short by an interrupt is
    simply done again: a step whose loss is in the history is skipped.  A
    non-finite loss raises :class:`TrainingDiverged` when it is copied.  The
    progress bar advances every step and shows the last copied loss.
    """

    def __init__(self, xp: ModuleType, history: History, bar: Any) -> None:
        self.xp, self.history, self.bar = xp, history, bar
        self.pending: list[tuple[int, Array]] = []

    def add(self, step: int, loss: Array) -> None:
        self.pending.append((step, loss))
        if len(self.pending) >= _SYNC_EVERY:
            self.flush()
        if self.bar is not None:
            self.bar.update(1)

    def flush(self) -> None:
        done = self.history.steps
        todo = [loss for step, loss in self.pending if step > done]
        if todo:
            values = [float(v) for v in to_numpy(self.xp.stack(todo))]
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            self.history.loss.extend(values if bad is None else values[:bad])
            if bad is not None:
                self.pending = []
                raise TrainingDiverged(done + bad + 1, values[bad], self.history)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.history.loss[-1]:.4f}")
        self.pending = []  # only now: an interrupted copy is done again, not lost

    def settle(self, step: int) -> None:
        """Keep the losses of steps ``1..step`` only (those of a step not committed go)."""
        self.pending = [(s, loss) for s, loss in self.pending if s <= step]
        self.flush()
        del self.history.loss[step:]

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Data:
    """The training arrays, persisted once on Dask (else every step recomputes them)."""

    xp: ModuleType
    X: Array
    y: Array

    def __post_init__(self) -> None:
        self.persist = is_dask_namespace(self.xp)
        if self.persist:
            self.X, self.y = self.X.persist(), self.y.persist()
        self.device = xp_device(self.X)

    def batch(self, rows: np.ndarray) -> tuple[Array, Array]:
        idx = rows if self.persist else self.xp.asarray(rows, device=self.device)
        return self.xp.take(self.X, idx, axis=0), self.xp.take(self.y, idx, axis=0)

    def keep(self, params: list[Array]) -> list[Array]:
        """Parameters to carry into the next step (persisted on Dask: no growing graph)."""
        return [p.persist() for p in params] if self.persist else params

    def close(self) -> None:
        """Nothing to release (streamed data stop their thread here)."""

    def fingerprint(self) -> str:
        """A hash of the labels and of evenly spaced rows of ``X`` (in its dtype)."""
        n = self.X.shape[0]
        rows = np.unique(np.linspace(0, n - 1, num=min(n, _FINGERPRINT_ROWS)).astype(np.int64))
        X_rows, _ = self.batch(rows)
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr(tuple(self.X.shape)).encode())
        digest.update(np.ascontiguousarray(to_numpy(self.y), dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(to_numpy(X_rows), dtype="<f8").tobytes())
        return f"blake2b:{digest.hexdigest()}"


@dataclass
class _Evaluation:
    """Accuracy on held-out data every ``every`` steps and at the last step."""

    data: tuple[Array, Array]
    every: int

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last

    def record(self, model: SoftmaxRegression, history: History, step: int) -> None:
        accuracy = streaming.accuracy(model, *self.data)  # streamed for Dask data
        history.eval_step.append(step)
        history.eval_accuracy.append(accuracy)

    def settle(self, model: SoftmaxRegression, history: History, step: int, last: int) -> None:
        """The evaluations of steps ``1..step``, that of ``step`` too if it is due."""
        n = min(len(history.eval_step), len(history.eval_accuracy))
        while n and history.eval_step[n - 1] > step:
            n -= 1
        del history.eval_step[n:], history.eval_accuracy[n:]
        if (
            step > history.resumed_from
            and self.due(step, last)
            and history.eval_step[-1:] != [step]
        ):
            self.record(model, history, step)


@dataclass
class _Checkpointer:
    """Where and how often the run is saved, and what the file records about it."""

    path: os.PathLike[str]
    every: int | None
    run: dict[str, Any]

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def save(
        self, state: _State, model: SoftmaxRegression, optimizer: SGD, history: History
    ) -> bool:
        """Write the file; False (and nothing written) when the weights are not finite.

        The next step's loss is then not finite either, and the loss log
        reports the divergence at that step.
        """
        xp = model.xp
        if not all(bool(xp.all(xp.isfinite(p))) for p in state.params):
            return False
        meta = dict(self.run, step=state.step, sampler=state.sampler.state())
        meta["history"] = history.as_dict()
        save_checkpoint(self.path, model, optimizer, state=meta)
        return True


@dataclass
class _Run:
    """One call of :func:`train`: the loop and what it works with."""

    model: SoftmaxRegression
    optimizer: SGD
    data: _Data
    history: History
    log: _LossLog
    saver: _Checkpointer | None
    evaluation: _Evaluation | None
    callbacks: list[Callable[[Step], Any]]
    state: _State
    stepper: StepFunction
    # Steps in a row as one call (JAX), where no callback looks at each step.
    runner: RunFunction | None = None

    def until(self, last: int) -> History:
        """Run to step ``last``; save on the way out, on an interrupt the last whole step."""
        start = time.perf_counter()
        try:
            # Divergence is reported by TrainingDiverged, not by NumPy's warnings.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                step = self.state.step + 1
                while step <= last:
                    end = self.run_end(step, last)
                    if end > step:
                        self.run(step, end, last)
                    elif self.step(step, last):
                        self.history.stopped_early = True
                        break
                    step = end + 1
                self.save(last=True)
        except KeyboardInterrupt:
            self.settle(last)
            self.save()
            raise
        finally:
            self.history.seconds = time.perf_counter() - start
            self.log.close()
            self.data.close()
        return self.history

    def step(self, step: int, last: int) -> bool:
        """One SGD step, committed, and what follows it; True when a callback stops the run."""
        rows, sampler = self.state.sampler.draw()
        loss, params, velocity = self.stepper(self.state.params, self.state.velocity, rows)
        self.log.add(step, loss)
        self.commit(_State(step, params, velocity, sampler), last)
        if self.notify(step, loss) and step < last:
            return True
        if self.saver is not None and self.saver.due(step):
            self.save()
        return False

    def run_end(self, step: int, last: int) -> int:
        """The last step of the run of steps that starts at ``step`` (``step``: one alone).

        A run ends where an evaluation or a checkpoint is due, so that
        those see the state of their step, and has one of ``_RUN_LENGTHS``
        steps; it needs a fixed velocity structure (momentum's velocity
        appears after the first step).
        """
        if self.runner is None or (self.optimizer.momentum and self.state.velocity is None):
            return step
        end = min(last, step + _RUN_LENGTHS[0] - 1)
        for s in range(step, end):
            if (self.evaluation is not None and self.evaluation.due(s, last)) or (
                self.saver is not None and self.saver.due(s)
            ):
                end = s
                break
        # Runs of a few lengths only: each length is one compilation.
        return step + next(n for n in _RUN_LENGTHS if n <= end - step + 1) - 1

    def run(self, first: int, end: int, last: int) -> None:
        """Steps ``first..end`` as one call, committed together, then what follows ``end``."""
        sampler, rows = self.state.sampler, []
        for _ in range(first, end + 1):
            r, sampler = sampler.draw()
            rows.append(r)
        losses, params, velocity = self.runner(
            self.state.params, self.state.velocity, np.stack(rows)
        )
        # One copy from the device for the run, not one per step.
        for step, loss in zip(range(first, end + 1), to_numpy(losses), strict=True):
            self.log.add(step, loss)
        self.commit(_State(end, params, velocity, sampler), last)
        if self.saver is not None and self.saver.due(end):
            self.save()

    def commit(self, state: _State, last: int) -> None:
        """Make ``state`` the run's (one assignment), show it, and evaluate where due."""
        self.state = state._replace(params=self.data.keep(state.params))  # the commit
        self.publish()
        if self.evaluation is not None and self.evaluation.due(state.step, last):
            self.evaluation.record(self.model, self.history, state.step)

    def publish(self) -> None:
        """Show the committed state in the model and the optimizer."""
        self.model.parameters = self.state.params
        self.optimizer.velocity = self.state.velocity

    def notify(self, step: int, loss: Array) -> bool:
        """Call every callback (all of them, even after one asks to stop)."""
        stop = False
        for callback in self.callbacks:
            info = Step(step, loss, self.model, self.optimizer, self.history)
            stop = bool(callback(info)) or stop
        return stop

    def settle(self, last: int) -> None:
        """After an interrupt: model, optimizer and history as of the last committed step."""
        self.publish()
        self.log.settle(self.state.step)
        if self.evaluation is not None:
            self.evaluation.settle(self.model, self.history, self.state.step, last)

    def save(self, *, last: bool = False) -> None:
        """Write the checkpoint, if any; the last one must be of finite weights."""
        self.log.flush()
        if self.saver is None:
            return
        saved = self.saver.save(self.state, self.model, self.optimizer, self.history)
        if not saved and last:
            raise TrainingDiverged(self.state.step, None, self.history)
