"""Measured fast paths for backends that have fused kernels or in-place arithmetic.

This module holds the switch and the dispatch; the paths themselves live in
``_native_numpy``, ``_native_torch``, ``_native_jax`` and ``_native_cupy``.
Each dispatch function returns ``None`` when there is no fast path for its
arguments; the caller then runs the generic Array API code, which stays
complete.  ``native_kernels(False)`` (or ``PORTABLE_SOFTMAX_NATIVE=0`` in the
environment) turns every fast path off, so the tests can prove that both
paths agree.

Special values stay those of SPEC §3: where a backend's kernel gives NaN
for a row whose maximum is infinite, the fast path checks for that and
hands the input back to the generic code.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from portable_softmax._compat import (
    Array,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = ["native_kernels"]

_ENABLED = contextvars.ContextVar(
    "portable_softmax_native",
    default=os.environ.get("PORTABLE_SOFTMAX_NATIVE", "1").strip() not in ("0", "false", "no"),
)


@contextlib.contextmanager
def native_kernels(enabled: bool = True) -> Iterator[None]:
    """Turn the backend-specific fast paths on or off within a ``with`` block.

    The fast paths (PyTorch's fused kernels, ``jax.nn`` under a guard,
    CuPy's fused kernels, NumPy's in-place blocked kernels) are on by
    default; ``PORTABLE_SOFTMAX_NATIVE=0`` in the environment turns them off
    for the whole process.  Off, every call runs the generic Array API
    implementation.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> with ps.native_kernels(False):
    ...     ps.softmax([0.0, 0.0])
    array([0.5, 0.5])
    """
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _active(where: Array | None) -> bool:
    return where is None and _ENABLED.get()


# A log-probability above this at a row's maximum marks a dominant entry,
# whose log-probability is near 0: ``log(sum)`` loses its relative accuracy
# there (PyTorch, JAX), the log1p form keeps it.
DOMINANT_LOG_PROB = -0.5


def _numpy_ok(x: Array, xp: ModuleType, where: Array | None) -> bool:
    return (
        _active(where)
        and is_numpy_namespace(xp)
        and isinstance(x, np.ndarray)
        and x.dtype in (np.float32, np.float64)
    )


def _torch_ok(xp: ModuleType, axes: tuple[int, ...], where: Array | None) -> bool:
    return _active(where) and is_torch_namespace(xp) and len(axes) == 1


def _cupy_ok(x: Any, xp: ModuleType, where: Array | None) -> bool:
    return _active(where) and is_cupy_namespace(xp) and x.dtype.name in ("float32", "float64")


def _jax_ok(xp: ModuleType, where: Array | None) -> bool:
    return _active(where) and is_jax_namespace(xp)


# --------------------------------------------------------------------- rows


def to_rows(x: Any, axes: tuple[int, ...], lib: ModuleType) -> tuple[Any, tuple[int, ...]]:
    """A C-contiguous 2-D view (or copy) of ``x`` with the ``axes`` last and flattened.

    Returns the rows and the shape of ``x`` with those axes moved last, which
    :func:`from_rows` needs.  ``lib`` is NumPy or CuPy (the same calls).
    """
    last = tuple(range(x.ndim - len(axes), x.ndim))
    if axes != last:
        x = lib.moveaxis(x, axes, last)
    n = math.prod(x.shape[x.ndim - len(axes) :])
    return lib.ascontiguousarray(x).reshape(-1, n), x.shape


def from_rows(
    out: Any, axes: tuple[int, ...], moved: tuple[int, ...], lib: ModuleType, *, reduce: bool
) -> Any:
    """Undo :func:`to_rows`; with ``reduce`` the reduced axes come back with length 1."""
    ndim, k = len(moved), len(axes)
    out = out.reshape(*moved[: ndim - k], *((1,) * k if reduce else moved[ndim - k :]))
    last = tuple(range(ndim - k, ndim))
    return out if axes == last else lib.moveaxis(out, last, axes)


# --------------------------------------------------------------------- in place


def writable(a: Array) -> bool:
    """True for an array this process may update in place with :func:`add_at`."""
    if isinstance(a, np.ndarray):
        return a.flags.writeable
    return type(a).__module__.startswith("torch") and not a.requires_grad


def add_at(a: Array, index: Array, values: Array, axis: int) -> None:
    """``a[..., index, ...] += values`` along ``axis``, in place (NumPy, PyTorch)."""
    if isinstance(a, np.ndarray):
        picked = np.take_along_axis(a, index, axis=axis)
        np.put_along_axis(a, index, picked + values, axis=axis)
    else:
        a.scatter_add_(axis, index, values)


# --------------------------------------------------------------------- dispatch
# The backend modules are imported on first use: each imports what it shares
# from here, and none is needed by a process that never hands us its arrays.


def _rows_kernel(
    name: str, x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType, *,
    reduce: bool = False,
) -> Array | None:  # fmt: skip
    """``name`` (softmax, log_softmax, logsumexp) by the fast path of ``x``'s backend, or None."""
    if _numpy_ok(x, xp, where):
        from portable_softmax import _native_numpy

        kernel = getattr(_native_numpy, f"{name}_rows")
        return _native_numpy.blocked(x, axes, kernel, reduce=reduce)
    if _cupy_ok(x, xp, where):
        from portable_softmax import _native_cupy

        return _native_cupy.call(f"{name}_rows", x, axes, reduce=reduce)
    if _torch_ok(xp, axes, where):
        from portable_softmax import _native_torch

        return getattr(_native_torch, name)(x, axes[0])
    if _jax_ok(xp, where):
        from portable_softmax import _native_jax

        return _native_jax.kernels()[name](x, axes)
    return None


def softmax(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array | None:
    """Fast softmax, or None where only the generic path applies."""
    return _rows_kernel("softmax", x, axes, where, xp)


def log_softmax(
    x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType
) -> Array | None:
    """Fast log_softmax, or None where only the generic path applies."""
    return _rows_kernel("log_softmax", x, axes, where, xp)


def logsumexp(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array | None:
    """Fast logsumexp (keepdims), or None where only the generic path applies."""
    return _rows_kernel("logsumexp", x, axes, where, xp, reduce=True)


def cross_entropy(p: Any) -> Array | None:
    """Class-index cross-entropy through ``F.cross_entropy`` on PyTorch, or None.

    ``p`` is the validated problem of ``_losses``.
    """
    if not (_ENABLED.get() and is_torch_namespace(p.xp) and p.indices is not None):
        return None
    from portable_softmax import _native_torch

    return _native_torch.cross_entropy(p)


def fused_cross_entropy(p: Any, *, loss: bool, grad: bool) -> tuple[Any, Any] | None:
    """Class-index cross-entropy and/or its gradient in one fused pass, or None.

    ``p`` is the validated problem of ``_losses``; NumPy and CuPy have such a
    path.  Returns ``(loss or None, gradient or None)``.
    """
    if not (_ENABLED.get() and p.indices is not None and math.prod(p.logits.shape)):
        return None
    if isinstance(p.logits, np.ndarray):
        from portable_softmax import _native_numpy

        return _native_numpy.cross_entropy(p, loss=loss, grad=grad)
    if is_cupy_namespace(p.xp):
        from portable_softmax import _native_cupy

        return _native_cupy.cross_entropy(p, loss=loss, grad=grad)
    return None


def mean_cross_entropy_with_grad(logits: Any, target: Any, axis: int) -> tuple[Any, Any] | None:
    """The training step's loss and gradient: 2-D logits, class indices, mean.

    With none of the options, on NumPy and PyTorch, in as few calls as the
    arithmetic needs (at batch size 100 calls are the cost): the gradient
    ``(softmax - onehot) / N`` is written into the softmax's buffer.  Anything
    unusual -- other shapes or dtypes, an index out of range, an infinite
    maximum -- returns None, and the general path answers (or raises).
    """
    if not _ENABLED.get() or axis not in (-1, 1):
        return None
    if type(logits) is np.ndarray and type(target) is np.ndarray:
        from portable_softmax import _native_numpy

        return _native_numpy.mean_cross_entropy(logits, target)
    if _is_torch_tensor(logits) and _is_torch_tensor(target):
        from portable_softmax import _native_torch

        return _native_torch.mean_cross_entropy(logits, target)
    return None


def _is_torch_tensor(a: Any) -> bool:
    return type(a).__module__ == "torch" and type(a).__name__ == "Tensor"
