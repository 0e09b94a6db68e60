"""NumPy fast paths: in-place kernels over blocks of rows, split over the cores."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import portable_softmax._native._numpy_linear as _numpy_linear
from portable_softmax._compat import Array
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._native._base import Backend, LinearLossAndGrads, LossAndGrad
from portable_softmax._native._rows import from_rows, to_rows
from portable_softmax._problem import CrossEntropyProblem, IndexTargets

__all__ = ["NumpyBackend"]

# SciPy's softmax makes three full temporaries; here the output is the only
# one, and rows are processed in cache-sized blocks, split over the cores
# (NumPy's ufuncs release the GIL).

_BLOCK_BYTES = 1 << 19
_PARALLEL_MIN_ELEMENTS = 1 << 18
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one pool per process, made on first use
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    return _pool


class NumpyBackend(Backend):
    """``numpy.ndarray`` (not its subclasses) of float32 or float64."""

    name = "numpy"

    def softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return blocked(x, axes, softmax_rows) if _takes(x, where) else None

    def log_softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return blocked(x, axes, log_softmax_rows) if _takes(x, where) else None

    def logsumexp(self, x: Array, axes: tuple[int, ...]) -> Array | None:
        return blocked(x, axes, logsumexp_rows, reduce=True) if _takes(x, None) else None

    def cross_entropy(
        self, p: CrossEntropyProblem, *, loss: bool, grad: bool
    ) -> LossAndGrad | None:
        if not isinstance(p, IndexTargets) or p.where is not None or not p.logits.size:
            return None
        return cross_entropy(p, loss=loss, grad=grad)

    def mean_cross_entropy_with_grad(
        self, logits: Array, target: Array
    ) -> tuple[Array, Array] | None:
        return mean_cross_entropy(logits, target)

    def linear_cross_entropy(self, p: LinearProblem, *, grad: bool) -> LinearLossAndGrads | None:
        return _numpy_linear.linear_cross_entropy(p, grad=grad, pool=_executor())


def _takes(x: np.ndarray, where: Array | None) -> bool:
    return where is None and x.dtype in (np.float32, np.float64)


def _add_at(a: np.ndarray, index: np.ndarray, values: np.ndarray, axis: int) -> None:
    """``a[..., index, ...] += values`` along ``axis``, in place."""
    picked = np.take_along_axis(a, index, axis=axis)
    np.put_along_axis(a, index, picked + values, axis=axis)


def blocked(
    x: np.ndarray,
    axes: tuple[int, ...],
    kernel: Callable[[np.ndarray, np.ndarray], bool],
    *,
    reduce: bool = False,
) -> np.ndarray | None:
    """Run ``kernel(rows_in, rows_out)`` over blocks of a 2-D view of ``x``.

    The view puts the reduced axes last; ``kernel`` returns False when a
    block has an infinite maximum (then ``None`` asks for the generic path).
    With ``reduce`` the kernel writes one value per row and the result keeps
    the reduced axes with length 1.
    """
    if x.ndim == 2 and axes == (1,) and x.size < _PARALLEL_MIN_ELEMENTS and not reduce:
        # The common small case, without the reshaping below (half its cost).
        out = np.empty_like(x)
        return out if kernel(x, out) else None
    rows, moved = to_rows(x, axes, np)
    out = np.empty((rows.shape[0], 1 if reduce else rows.shape[1]), dtype=rows.dtype)

    def run(block: slice) -> bool:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return kernel(rows[block], out[block])

    if rows.size < _PARALLEL_MIN_ELEMENTS:
        ok = kernel(rows, out)
    else:
        step = max(1, _BLOCK_BYTES // max(1, rows.shape[1] * rows.itemsize))
        blocks = [slice(i, i + step) for i in range(0, rows.shape[0], step)]
        ok = all(_executor().map(run, blocks))
    return from_rows(out, axes, moved, np, reduce=reduce) if ok else None


def softmax_rows(x: np.ndarray, out: np.ndarray) -> bool:
    m = x.max(axis=1, keepdims=True)
    np.subtract(x, m, out=out)
    np.exp(out, out=out)
    z = out.sum(axis=1, keepdims=True)
    out /= z
    # An infinite maximum leaves NaN in its row sum (so does a NaN input,
    # which the generic path treats the same): hand those back.
    return not math.isnan(z.sum())


def _log_normalizer_rows(x: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """``log(sum(exp(shifted)))`` per row via log1p, taking the maximum's 1 out.

    As in the generic path (and SciPy): full relative accuracy where one entry
    dominates and the result is tiny.  Ties keep their exact 1s in the sum.
    """
    e = np.exp(shifted)
    e[np.arange(e.shape[0]), x.argmax(axis=1)] = 0.0
    return np.log1p(e.sum(axis=1, keepdims=True))


def log_softmax_rows(x: np.ndarray, out: np.ndarray) -> bool:
    m = x.max(axis=1, keepdims=True)
    np.subtract(x, m, out=out)
    log_z = _log_normalizer_rows(x, out)
    out -= log_z
    return not np.isinf(m).any()


def logsumexp_rows(x: np.ndarray, out: np.ndarray) -> bool:
    m = x.max(axis=1, keepdims=True)
    log_z = _log_normalizer_rows(x, x - m)
    np.add(m, log_z, out=out)
    return not np.isinf(m).any()


class _ClassAxis:
    """Picking, broadcasting and updating along the class axis of ``p``'s logits.

    The common case, 2-D logits with classes last, indexes rows directly
    (a third of the cost of ``take_along_axis`` at batch size 100).
    """

    def __init__(self, p: IndexTargets) -> None:
        self.axis, y = p.axis, p.indices
        self.shape = y.shape
        if p.logits.ndim == 2 and p.axis == 1:
            self.index: Any = (np.arange(p.logits.shape[0]), y)
        else:
            self.index = None
            self.expanded = np.expand_dims(y, p.axis)

    def pick(self, a: np.ndarray) -> np.ndarray:
        if self.index is not None:
            return a[self.index]
        return np.take_along_axis(a, self.expanded, axis=self.axis).reshape(self.shape)

    def column(self, v: Any) -> Any:
        return v[:, None] if self.index is not None else np.expand_dims(v, self.axis)

    def subtract_at(self, a: np.ndarray, v: np.ndarray) -> None:
        if self.index is not None:
            a[self.index] -= v
        else:
            _add_at(a, self.expanded, -self.column(v), self.axis)


def _weighted_sum(p: IndexTargets, g: np.ndarray) -> np.ndarray:
    """``sum_c w_c * g_c`` along the class axis, with no second logits-sized buffer."""
    if p.weight is None:
        return g.sum(axis=p.axis)
    # A zero weight hides its class, a -inf logit included (0 * -inf is NaN).
    live = np.flatnonzero(p.weight)
    g_live = g if live.size == p.n_classes else g.take(live, axis=p.axis)
    return np.tensordot(g_live, p.weight[live], axes=([p.axis], [0]))


def cross_entropy(p: IndexTargets, *, loss: bool, grad: bool) -> LossAndGrad | None:
    """Class-index cross-entropy and/or its gradient, or None for an infinite maximum.

    One logits-sized buffer holds ``x - max``, then ``exp``, then the
    probabilities, then the gradient; everything else is per sample.  The
    math is that of the generic path (torch's semantics), written for few
    calls into NumPy: at batch size 100 the call overhead is the cost.
    """
    x, ax, n, eps = p.logits, p.axis, p.n_classes, p.smoothing
    classes = _ClassAxis(p)
    # The caller (a public function) has NumPy's warnings off.
    m = x.max(axis=ax, keepdims=True)
    if np.isinf(m).any():
        return None
    g = np.subtract(x, m)
    counted = p.counted.astype(x.dtype)
    w_y = counted if p.weight is None else p.weight[p.indices] * counted
    w_all = x.dtype.type(n) if p.weight is None else p.weight.sum()
    factor = 1.0
    if p.reduction == "mean":
        divisor = w_y.sum()
        factor = 1.0 / divisor if divisor else 0.0
    if loss:
        shifted_y = classes.pick(g)
        weighted_shift = _weighted_sum(p, g) if eps > 0 else None
    np.exp(g, out=g)
    z = g.sum(axis=ax, keepdims=True)
    value = None
    if loss:
        log_z = np.log(z).reshape(p.indices.shape)
        # A zero weight hides a -inf log-probability (0 * inf would be NaN).
        per_sample = np.where(w_y == 0, 0.0, w_y * (log_z - shifted_y))
        if eps > 0:
            smooth = np.where(p.counted, w_all * log_z - weighted_shift, 0.0)
            per_sample = (1 - eps) * per_sample + (eps / n) * smooth
        per_sample = per_sample.astype(x.dtype, copy=False)
        value = per_sample if p.reduction == "none" else per_sample.sum() * factor
    if not grad:
        return value, None
    g /= z
    g *= classes.column(((1 - eps) * w_y + (eps / n) * w_all * counted) * factor)
    classes.subtract_at(g, ((1 - eps) * factor * w_y).astype(x.dtype, copy=False))
    if eps > 0:
        w_b = 1.0 if p.weight is None else p.class_vector(p.weight)
        g -= (eps / n) * factor * w_b
        g *= classes.column(counted)
    return value, g


def mean_cross_entropy(x: np.ndarray, y: np.ndarray) -> tuple[Any, Any] | None:
    if x.ndim != 2 or x.dtype.kind != "f" or x.itemsize < 4 or y.dtype.kind not in "iu":
        return None
    n, c = x.shape
    if y.shape != (n,) or n == 0 or c == 0 or y.min() < 0 or y.max() >= c:
        return None
    rows = np.arange(n)
    g = np.subtract(x, x.max(axis=1, keepdims=True))
    shifted_y = g[rows, y]
    np.exp(g, out=g)
    z = g.sum(axis=1, keepdims=True)
    loss = (np.log(z).ravel() - shifted_y).sum() / n
    # An infinite or NaN logit makes the loss non-finite: the general path
    # knows what such rows mean.
    if not math.isfinite(loss):
        return None
    z *= n
    g /= z
    g[rows, y] -= x.dtype.type(1.0 / n)
    return np.asarray(loss, dtype=x.dtype), g
