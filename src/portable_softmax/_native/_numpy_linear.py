"""NumPy's linear cross-entropy: the in-place blocks with ``matmul(out=)`` and fancy indexing."""

from __future__ import annotations

from typing import Any

import numpy as np

from portable_softmax._generic import linear as generic
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._native._base import LinearLossAndGrads
from portable_softmax._native._inplace_linear import Grads, InPlaceKernel

__all__ = ["NumpyKernel", "linear_cross_entropy"]


class NumpyKernel(InPlaceKernel):
    """The in-place primitives in NumPy (float32 and float64 compute dtypes)."""

    lib = np

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
        rows = np.arange(z.shape[0])
        width = z.shape[1]
        top = z.argmax(axis=1)
        m = z[rows, top]
        local = y_r - c0
        inside = (local >= 0) & (local < width)
        zy = np.where(inside, z[rows, np.clip(local, 0, width - 1)], 0.0)
        zw = None
        if p.smoothing > 0:
            zw = z.sum(axis=1) if p.weight is None else z @ p.weight[c0 : c0 + width]
        np.subtract(z, m[:, None], out=e)
        np.exp(e, out=e)
        e[rows, top] = 0.0
        return generic.RowStats(m, e.sum(axis=1), zy, zw), top

    def exp_times(self, z: Any, shift: Any, scale: Any, out: Any) -> Any:
        np.subtract(z, shift[:, None], out=out)
        np.exp(out, out=out)
        out *= scale[:, None]
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
            dx += g @ w
        if r0 == 0:
            np.matmul(g.T, x_r, out=dw)
        else:
            dw += g.T @ x_r
        if db is not None:
            if r0 == 0:
                np.sum(g, axis=0, out=db[c0:c1])
            else:
                db[c0:c1] += g.sum(axis=0)


_KERNEL = NumpyKernel()


def linear_cross_entropy(p: LinearProblem, *, grad: bool) -> LinearLossAndGrads | None:
    """The loss, or the loss and its closed-form gradients (float16 blocks cast to float32)."""
    losses, _, grads = _KERNEL.forward(p, grad=grad)
    return generic.reduce(p, losses), grads
