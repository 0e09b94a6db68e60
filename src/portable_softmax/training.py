"""Minibatch SGD for :class:`~portable_softmax.SoftmaxRegression`, with checkpoints.

The same loop runs on every backend: batches are drawn on the host with
``numpy.random.default_rng(seed)`` (so every backend sees the same batches),
their indices moved to the data's device, and the parameters updated with the
closed-form gradients of :meth:`SoftmaxRegression.gradients` -- no autograd.

This module is ``portable_softmax.training``, not ``portable_softmax.train``:
``ps.train`` is the function, and a submodule of the same name would shadow it
after ``import portable_softmax.train``.  ``SGD`` lives in
:mod:`portable_softmax.optim` and the checkpoint files in
:mod:`portable_softmax.checkpoint`; both are importable from here too.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from portable_softmax._compat import Array, is_dask_namespace, to_numpy, xp_device, xp_inputs
from portable_softmax.checkpoint import load_checkpoint, save_checkpoint
from portable_softmax.model import SoftmaxRegression
from portable_softmax.optim import SGD

__all__ = [
    "SGD",
    "History",
    "Step",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]

# Losses stay on the device and are copied to the host in blocks of this many
# steps: a float() per step would wait for the GPU at every step.
_SYNC_EVERY = 100


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
    _check_counts(
        batch_size=batch_size, steps=steps, eval_every=eval_every, checkpoint_every=checkpoint_every
    )
    xp = _check_data(model, X, y, batch_size)
    config = {"seed": int(seed), "batch_size": int(batch_size), "n_samples": int(X.shape[0])}
    sampler = _Batches(X.shape[0], batch_size, seed)
    history = History()
    if resume:
        history = _resume(checkpoint, model, optimizer, sampler, config)
    saver = None if checkpoint is None else _Checkpointer(checkpoint, checkpoint_every, config)
    run = _Run(
        model=model,
        optimizer=optimizer,
        data=_Data(xp, X, y),
        sampler=sampler,
        history=history,
        log=_LossLog(xp, history, _progress_bar(progress, steps, history.steps)),
        saver=saver,
        evaluation=None if eval_data is None else _Evaluation(eval_data, eval_every),
        callbacks=list(callbacks),
    )
    return run.until(steps)


def _check_counts(**counts: int | None) -> None:
    """Step counts and sizes: integers, at least 1 (``steps`` at least 0); None passes."""
    for name, value in counts.items():
        low = 0 if name == "steps" else 1
        if value is None and name == "checkpoint_every":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_data(model: SoftmaxRegression, X: Array, y: Array, batch_size: int) -> ModuleType:
    """The data's library, shapes and size against the model and the batch size."""
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


def _resume(
    path: str | os.PathLike[str] | None,
    model: SoftmaxRegression,
    optimizer: SGD,
    sampler: _Batches,
    config: dict[str, int],
) -> History:
    """Load ``path`` into the model, optimizer and sampler; return the saved history."""
    if path is None:
        raise ValueError("resume=True needs the checkpoint path")
    state = load_checkpoint(path, model, optimizer)
    theirs = {k: state.get(k) for k in config}
    if theirs != config:
        raise ValueError(
            f"checkpoint {path} is from a run with {theirs}, "
            f"this run has {config}: its batches would differ"
        )
    sampler.restore(state["sampler"])
    saved = state["history"]
    return History(saved["loss"], saved["eval_step"], saved["eval_accuracy"])


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

    The progress bar advances every step and shows the last copied loss.
    """

    def __init__(self, xp: ModuleType, history: History, bar: Any) -> None:
        self.xp, self.history, self.bar = xp, history, bar
        self.pending: list[Array] = []

    def add(self, loss: Array) -> None:
        self.pending.append(loss)
        if len(self.pending) >= _SYNC_EVERY:
            self.flush()
        if self.bar is not None:
            self.bar.update(1)

    def flush(self) -> None:
        if not self.pending:
            return
        self.history.loss.extend(float(v) for v in to_numpy(self.xp.stack(self.pending)))
        self.pending.clear()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.history.loss[-1]:.4f}")

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


@dataclass
class _Evaluation:
    """Accuracy on held-out data every ``every`` steps and at the last step."""

    data: tuple[Array, Array]
    every: int

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last

    def record(self, model: SoftmaxRegression, history: History, step: int) -> None:
        history.eval_step.append(step)
        history.eval_accuracy.append(float(model.accuracy(*self.data)))


@dataclass
class _Checkpointer:
    """Where and how often the run is saved, and what the file records about it."""

    path: str | os.PathLike[str]
    every: int | None
    config: dict[str, int]

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def save(
        self, model: SoftmaxRegression, optimizer: SGD, sampler: _Batches, history: History
    ) -> None:
        state = dict(self.config, step=history.steps, sampler=sampler.state())
        state["history"] = history.as_dict()
        save_checkpoint(self.path, model, optimizer, state=state)


@dataclass
class _Run:
    """One call of :func:`train`: the loop and what it works with."""

    model: SoftmaxRegression
    optimizer: SGD
    data: _Data
    sampler: _Batches
    history: History
    log: _LossLog
    saver: _Checkpointer | None
    evaluation: _Evaluation | None
    callbacks: list[Callable[[Step], Any]]

    def until(self, steps: int) -> History:
        """Run from the history's step count to ``steps``; save on the way out."""
        start = time.perf_counter()
        try:
            for step in range(self.history.steps + 1, steps + 1):
                if self.step(step, steps):
                    self.history.stopped_early = step < steps
                    break
            self.save()
        except KeyboardInterrupt:
            self.save()
            raise
        finally:
            self.history.seconds = time.perf_counter() - start
            self.log.close()
        return self.history

    def step(self, step: int, last: int) -> bool:
        """One SGD step and what follows it; True when a callback asks to stop."""
        Xb, yb = self.data.batch(self.sampler.next())
        loss, grads = self.model.gradients(Xb, yb)
        self.model.parameters = self.data.keep(self.optimizer.step(self.model.parameters, grads))
        self.log.add(loss)
        if self.evaluation is not None and self.evaluation.due(step, last):
            self.evaluation.record(self.model, self.history, step)
        stop = self.notify(step, loss)
        if stop and step < last:
            return True
        if self.saver is not None and self.saver.due(step):
            self.save()
        return False

    def notify(self, step: int, loss: Array) -> bool:
        """Call every callback (all of them, even after one asks to stop)."""
        stop = False
        for callback in self.callbacks:
            info = Step(step, loss, self.model, self.optimizer, self.history)
            stop = bool(callback(info)) or stop
        return stop

    def save(self) -> None:
        self.log.flush()
        if self.saver is not None:
            self.saver.save(self.model, self.optimizer, self.sampler, self.history)
