"""CuPy backend: the adapter that feeds rows to the fused kernels of ``_kernels``.

The kernels (``kernels.cu``, launched by ``_kernels``) make one read pass
for the maximum and the sum together (the online-softmax recurrence) and one
pass to write.  They compute the special rows of the special-values table
themselves, so these fast paths never hand back to the generic code for
values, only for what they do not take: a ``where`` mask, half precision
(computed in float32 by the caller), probability targets.
"""

from __future__ import annotations

from typing import Any

from portable_softmax._compat import Array
from portable_softmax._native._base import Backend, LossAndGrad
from portable_softmax._native._cupy import _kernels
from portable_softmax._native._rows import from_rows, to_rows
from portable_softmax._problem import CrossEntropyProblem, IndexTargets

__all__ = ["CupyBackend"]


class CupyBackend(Backend):
    """``cupy.ndarray`` of float32 or float64."""

    name = "cupy"

    def softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return _rows(_kernels.softmax_rows, x, axes) if _takes(x, where) else None

    def log_softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return _rows(_kernels.log_softmax_rows, x, axes) if _takes(x, where) else None

    def logsumexp(self, x: Array, axes: tuple[int, ...]) -> Array | None:
        if not _takes(x, None):
            return None
        return _rows(_kernels.logsumexp_rows, x, axes, reduce=True)

    def cross_entropy(
        self, p: CrossEntropyProblem, *, loss: bool, grad: bool
    ) -> LossAndGrad | None:
        if not isinstance(p, IndexTargets) or not p.logits.size or not _takes(p.logits, p.where):
            return None
        return cross_entropy(p, loss=loss, grad=grad)


def _takes(x: Any, where: Array | None) -> bool:
    return where is None and x.dtype.name in ("float32", "float64")


def _rows(kernel: Any, x: Any, axes: tuple[int, ...], *, reduce: bool = False) -> Any:
    """``kernel`` over ``x`` with ``axes`` moved last and flattened, the shape restored."""
    import cupy

    rows, moved = to_rows(x, axes, cupy)
    return from_rows(kernel(rows), axes, moved, cupy, reduce=reduce)


def cross_entropy(p: IndexTargets, *, loss: bool, grad: bool) -> LossAndGrad:
    """Class-index cross-entropy (reduced) and/or its gradient for the problem ``p``."""
    import cupy

    rows, moved = to_rows(p.logits, (p.axis,), cupy)
    w_y, w_sum = p.target_weights
    factor: Any = 1.0
    if p.reduction == "mean":
        # A device scalar, read by the kernel: no synchronisation.
        factor = cupy.where(w_sum == 0, 0.0, 1.0 / w_sum).astype(rows.dtype)
    per_sample, g = _kernels.cross_entropy_rows(
        rows,
        p.indices.reshape(-1),
        w_y=w_y.reshape(-1),
        counted=p.counted.reshape(-1),
        weight=p.weight,
        factor=factor,
        smoothing=p.smoothing,
        loss=loss,
        grad=grad,
    )
    value = None
    if loss:
        value = (
            per_sample.reshape(p.indices.shape)
            if p.reduction == "none"
            else per_sample.sum() * factor
        )
    if grad:
        g = from_rows(g, (p.axis,), moved, cupy, reduce=False)
    return value, g
