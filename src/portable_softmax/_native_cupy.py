"""CuPy fast paths: the fused kernels of ``_cupy``, fed with rows.

The kernels make one read pass for the maximum and the sum together (the
online-softmax recurrence) and one pass to write.  They compute SPEC §3's
special rows themselves, so there is no fallback to the generic path.
"""

from __future__ import annotations

from typing import Any

from portable_softmax._native import from_rows, to_rows


def call(name: str, x: Any, axes: tuple[int, ...], *, reduce: bool = False) -> Any:
    """``_cupy.<name>`` over ``x`` with ``axes`` moved last and flattened, shape restored."""
    import cupy

    from portable_softmax import _cupy

    rows, moved = to_rows(x, axes, cupy)
    out = getattr(_cupy, name)(rows)
    return from_rows(out, axes, moved, cupy, reduce=reduce)


def cross_entropy(p: Any, *, loss: bool, grad: bool) -> tuple[Any, Any]:
    """Class-index cross-entropy (reduced) and/or its gradient for the problem ``p``."""
    import cupy

    from portable_softmax import _cupy

    rows, moved = to_rows(p.logits, (p.axis,), cupy)
    w_y, w_sum = p.target_weights
    factor: Any = 1.0
    if p.reduction == "mean":
        # A device scalar, read by the kernel: no synchronisation.
        factor = cupy.where(w_sum == 0, 0.0, 1.0 / w_sum).astype(rows.dtype)
    per_sample, g = _cupy.cross_entropy_rows(
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
