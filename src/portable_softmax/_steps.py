"""One SGD step as a function of the committed state: eager, or compiled once on JAX.

``make_step(model, optimizer, data)`` returns ``step(params, velocity, rows)
-> (loss, params, velocity)``, a pure function of the state the training
loop commits (it changes neither the model nor the optimizer), so an
interrupted step leaves nothing half done.  On JAX the whole step -- the
gather of the batch, the forward pass, the closed-form gradients and the
update -- is one ``jax.jit`` computation, compiled on the first step (and
once more on the second with momentum, when the velocity appears) and kept
for later runs with the same optimizer settings; the optimizer's
hyperparameters are read when it compiles.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from portable_softmax._compat import Array, is_jax_namespace
from portable_softmax.model import SoftmaxRegression
from portable_softmax.optim import SGD

__all__ = ["RunFunction", "StepFunction", "make_run", "make_step"]

StepFunction = Callable[[list[Array], list[Array] | None, np.ndarray], tuple[Array, list, Any]]
RunFunction = StepFunction  # the same signature: rows (steps, batch) in, losses (steps,) out


class _Batches(Protocol):
    xp: Any
    X: Array
    y: Array

    def batch(self, rows: np.ndarray) -> tuple[Array, Array]: ...


def make_step(model: SoftmaxRegression, optimizer: SGD, data: _Batches) -> StepFunction:
    """The step function for ``model``'s library (see the module docstring)."""
    if is_jax_namespace(data.xp):
        return _jax_step(model, optimizer, data)

    def step(params: list[Array], velocity: list[Array] | None, rows: np.ndarray) -> Any:
        Xb, yb = data.batch(rows)
        loss, grads = _gradients(model, params, Xb, yb)
        new_params, new_velocity = optimizer.update(params, grads, velocity)
        return loss, new_params, new_velocity

    return step


def _gradients(model: SoftmaxRegression, params: list[Array], X: Array, y: Array) -> Any:
    """``model.gradients`` at ``params``, leaving ``model`` as it is."""
    twin = copy.copy(model)
    twin.parameters = params
    return twin.gradients(X, y)


# The compiled steps and runs of steps, per model class and optimizer
# setting: a second run (a notebook, a sweep over seeds) reuses the
# compilation; jax.jit compiles again by itself for other shapes or dtypes.
_JAX_STEPS: dict[tuple[Any, ...], Any] = {}


def _jax_pure_step(model: SoftmaxRegression, optimizer: SGD) -> Callable[..., Any]:
    import jax.numpy as jnp

    # Copies: the step reads the model's class and the optimizer's
    # hyperparameters only, and must not keep the caller's objects.
    model, optimizer = copy.copy(model), SGD(**optimizer.hyperparameters)

    def pure(params: list[Array], velocity: Any, X: Array, y: Array, rows: Array) -> Any:
        Xb, yb = jnp.take(X, rows, axis=0), jnp.take(y, rows, axis=0)
        loss, grads = _gradients(model, params, Xb, yb)
        new_params, new_velocity = optimizer.update(params, grads, velocity)
        return loss, new_params, new_velocity

    return pure


def _jax_compiled(model: SoftmaxRegression, optimizer: SGD, kind: str) -> Any:
    """The jitted step (``kind="step"``) or run of steps (``"run"``, a ``lax.scan``)."""
    import jax

    key = (kind, type(model), tuple(sorted(optimizer.hyperparameters.items())))
    if key not in _JAX_STEPS:
        step = _jax_pure_step(model, optimizer)
        # No donated buffers: the committed parameters are also the model's
        # (and the checkpoint's, on an interrupt), and JAX's CPU backend
        # ignores donation anyway.
        _JAX_STEPS[key] = jax.jit(step if kind == "step" else _scanned(step))
    return _JAX_STEPS[key]


def _scanned(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` over the rows of ``rows`` (one batch per step), as one ``lax.scan``."""
    import jax

    def run(params: list[Array], velocity: Any, X: Array, y: Array, rows: Array) -> Any:
        def body(carry: Any, r: Array) -> Any:
            loss, new_params, new_velocity = step(*carry, X, y, r)
            return (new_params, new_velocity), loss

        (params, velocity), losses = jax.lax.scan(body, (params, velocity), rows)
        return losses, params, velocity

    return run


def _on_data(compiled: Any, data: _Batches) -> StepFunction:
    """``compiled`` with the training arrays put in."""

    def call(params: list[Array], velocity: Any, rows: np.ndarray) -> Any:
        # The batches' row numbers go in as a NumPy array: jit moves it with
        # the call, cheaper than a jnp.asarray of its own.
        return compiled(params, velocity, data.X, data.y, rows)

    return call


def _jax_step(model: SoftmaxRegression, optimizer: SGD, data: _Batches) -> StepFunction:
    return _on_data(_jax_compiled(model, optimizer, "step"), data)


def make_run(model: SoftmaxRegression, optimizer: SGD, data: _Batches) -> RunFunction | None:
    """``run(params, velocity, rows) -> (losses, params, velocity)`` for steps in a row, or None.

    ``rows`` holds one batch's row numbers per step, ``(steps, batch_size)``;
    the steps are those of :func:`make_step`, one after the other.  On JAX
    they are one compiled ``lax.scan``, which saves a dispatch per step;
    elsewhere there is no such function.
    """
    if not is_jax_namespace(data.xp):
        return None
    return _on_data(_jax_compiled(model, optimizer, "run"), data)
