"""NumPy's linear cross-entropy: the in-place blocks with ``matmul(out=)`` and fancy indexing."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from portable_softmax._generic import linear as generic
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._native._base import LinearLossAndGrads
from portable_softmax._native._inplace_linear import Grads, InPlaceKernel

__all__ = ["NumpyKernel", "linear_cross_entropy"]

# Fewer rows than this per thread are not worth a thread.
_MIN_ROWS_PER_THREAD = 64
# Elements of the scratch block through which d_x and d_W are accumulated (1 MiB in float32).
_SCRATCH_ELEMENTS = 1 << 18


class NumpyKernel(InPlaceKernel):
    """The in-place primitives in NumPy (float32 and float64 compute dtypes).

    NumPy's element-wise passes run on one core: the rows of each block are
    split over ``pool``'s threads (the ufuncs release the GIL).  There is no
    one-pass schedule: with OpenBLAS the products of a few hundred samples by
    every class (and the sum of ``d_W`` over the blocks of samples, which
    ``matmul`` cannot add into its output) cost more than the second product
    of the two-pass schedule.
    """

    lib = np
    one_pass = False

    def __init__(self, pool: Executor | None) -> None:
        self.pool = pool

    def _parallel(self, work: Callable[[int, int], Any], n_rows: int) -> list[Any]:
        """``work(start, stop)`` over row ranges, on the pool's threads for big blocks."""
        threads = 1 if self.pool is None else os.cpu_count() or 1
        if threads == 1 or n_rows < 2 * _MIN_ROWS_PER_THREAD:
            return [work(0, n_rows)]
        step = max(_MIN_ROWS_PER_THREAD, -(-n_rows // threads))
        starts = range(0, n_rows, step)
        return list(self.pool.map(lambda a: work(a, min(a + step, n_rows)), starts))

    def empty(self, p: LinearProblem, shape: tuple[int, ...]) -> Any:
        return np.empty(shape, dtype=p.compute_dtype)

    def logits(self, p: LinearProblem, x_r: Any, c0: int, c1: int, out: Any) -> Any:
        np.matmul(x_r, p.compute(p.linear_weight[c0:c1]).T, out=out)
        if p.linear_bias is not None:
            out += p.compute(p.linear_bias[c0:c1])
        if p.softcap is not None:
            out /= p.softcap
            np.tanh(out, out=out)
            out *= p.softcap
        return out

    def stats(
        self, p: LinearProblem, z: Any, e: Any, y_r: Any, c0: int
    ) -> tuple[generic.RowStats, Any]:
        w = None if p.weight is None else p.weight[c0 : c0 + z.shape[1]]
        parts = self._parallel(
            lambda a, b: _stats_rows(z[a:b], e[a:b], y_r[a:b] - c0, w, p.smoothing > 0),
            z.shape[0],
        )
        m, t, zy, top = (np.concatenate([q[i] for q in parts]) for i in range(4))
        zw = np.concatenate([q[4] for q in parts]) if p.smoothing > 0 else None
        return generic.RowStats(m, t, zy, zw), top

    def exp_times(self, z: Any, shift: Any, scale: Any, out: Any) -> Any:
        def rows(a: int, b: int) -> None:
            np.subtract(z[a:b], shift[a:b, None], out=out[a:b])
            np.exp(out[a:b], out=out[a:b])
            out[a:b] *= scale[a:b, None]

        self._parallel(rows, z.shape[0])
        return out

    def restore_top(self, e: Any, top: Any) -> None:
        e[np.arange(e.shape[0]), top] = 1.0

    def subtract_target(self, g: Any, beta: Any, y_r: Any, c0: int) -> None:
        local = y_r - c0
        inside = np.flatnonzero((local >= 0) & (local < g.shape[1]))
        g[inside, local[inside]] -= beta[inside]

    def add_products(self, grads: Grads, p: LinearProblem, x_r: Any, g: Any, block: Any) -> None:
        r0, r1, c0, c1 = block
        w = p.compute(p.linear_weight[c0:c1])
        dx, dw, db = grads[0][r0:r1], grads[1][c0:c1], grads[2]
        if c0 == 0:
            np.matmul(g, w, out=dx)
        else:
            _add_product(dx, g, w)
        if r0 == 0:
            np.matmul(g.T, x_r, out=dw)
        else:
            _add_product(dw, g.T, x_r)
        if db is not None:
            if r0 == 0:
                np.sum(g, axis=0, out=db[c0:c1])
            else:
                db[c0:c1] += g.sum(axis=0)


def _add_product(out: Any, a: Any, b: Any) -> None:
    """``out += a @ b`` through a small scratch block, a few rows of ``a`` at a time.

    NumPy's ``matmul`` cannot add into its output, and a temporary of
    ``out``'s size costs its memory (and, for ``d_W``, more time than the
    product itself).
    """
    step = max(1, _SCRATCH_ELEMENTS // max(1, b.shape[1]))
    scratch = np.empty((min(step, a.shape[0]), b.shape[1]), dtype=out.dtype)
    for k in range(0, a.shape[0], step):
        part = scratch[: min(step, a.shape[0] - k)]
        np.matmul(a[k : k + step], b, out=part)
        out[k : k + step] += part


def _stats_rows(z: Any, e: Any, local: Any, w: Any, smoothing: bool) -> tuple[Any, ...]:
    """``(max, t, target logit, argmax[, sum w z])`` of rows ``z``; ``e`` gets the exps."""
    rows = np.arange(z.shape[0])
    width = z.shape[1]
    top = z.argmax(axis=1)
    m = z[rows, top]
    inside = (local >= 0) & (local < width)
    zy = np.where(inside, z[rows, np.clip(local, 0, width - 1)], 0.0)
    zw = (z.sum(axis=1) if w is None else z @ w) if smoothing else None
    np.subtract(z, m[:, None], out=e)
    np.exp(e, out=e)
    e[rows, top] = 0.0
    return m, e.sum(axis=1), zy, top, zw


def linear_cross_entropy(
    p: LinearProblem, *, grad: bool, pool: Executor | None = None
) -> LinearLossAndGrads | None:
    """The loss, or the loss and its closed-form gradients (float16 blocks cast to float32).

    ``pool`` runs the element-wise passes of a block's rows in parallel.
    """
    losses, _, grads = NumpyKernel(pool).forward(p, grad=grad)
    return generic.reduce(p, losses), grads
