"""Fused CuPy kernels: softmax, log_softmax, logsumexp and cross-entropy over rows.

Every function takes a C-contiguous 2-D CuPy array ``x`` of shape ``(R, n)``,
float32 or float64, classes along the last axis, and returns new arrays; the
caller moves axes, computes half precision in float32 and checks dtypes.
CuPy is imported on first use only: it is an optional dependency.

The algorithm
-------------
A row is handled by a warp (``n <= 1024``, four rows to a block of 128
threads) or by a block of 256 threads.  Each thread reads its entries
``j = lane, lane + G, lane + 2G, ...`` (``G`` threads to the row) once and
keeps the state ``(m, T)`` of the online softmax: ``m`` the largest entry
seen and ``T`` the sum of ``exp(x_j - m)`` over the entries seen *except one
maximal entry*.  Pushing an entry ``x``::

    x > m:  T = (T + 1) * exp(m - x);  m = x
    else:   T = T + exp(x - m)            (exp(0) = 1 exactly on a tie)

and merging two states, the larger ``m`` first::

    m1 > m2:   T = T1 + (T2 + 1) * exp(m2 - m1)
    m1 == m2:  T = (T1 + T2) + 1

The merge is exactly commutative, so the warp's butterfly of shuffles
(offsets 16, 8, 4, 2, 1) leaves the same state in every lane; a block then
merges its warps' states, through shared memory, in warp order.  With
``log Z = log1p(T)`` (the maximum's 1 taken out, as in SciPy), one more pass
writes ``exp(x_j - m) / (1 + T)`` or ``x_j - m - log1p(T)``: log-probabilities
near 0 keep their relative accuracy where one entry dominates: the row
``[0, -30]`` gives ``-9.3576e-14``, where ``log(sum)`` gives ``-9.3481e-14``
in float64 (relative error 1e-3) and ``0`` in float32.

Special values (the table in docs/math.md, "Special values") come out of
the same arithmetic, with no second path: a difference ``x - m`` is taken as
0 on a tie, so ``inf - inf`` is never formed; a NaN entry makes ``T`` NaN,
and NaN stays in ``T`` through every push
and merge (``m`` itself never becomes NaN), so its whole row comes out NaN;
``k`` entries ``+inf`` leave ``m = +inf`` and ``T = k - 1``, hence ``1/k`` on
them and exactly 0 elsewhere.  A row of ``-inf`` only ends with ``m = -inf``
(its ``T`` then counts ties and means nothing): it is normalised with
``m = +inf, T = 0``, which turns every ``x_j - m`` into ``-inf``, so
probabilities 0 and log-probabilities ``-inf`` without a branch per entry.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from typing import Any

import numpy as np

__all__ = ["cross_entropy_rows", "log_softmax_rows", "logsumexp_rows", "softmax_rows"]

# Threads per row: a warp for rows up to _WARP_ROW_MAX entries (32 per lane at
# most), else a block.  Four warp-rows share a block of 128 threads, enough
# warps per block for the scheduler without idling lanes on short rows.
_WARP = 32
_BLOCK = 256
_WARP_ROW_MAX = 1024
_WARP_ROWS_PER_BLOCK = 4
_CTYPES = {"float32": "float", "float64": "double"}

# The CUDA C++ source of every kernel (``kernels.cu`` beside this module).
CUDA_SOURCE = importlib.resources.files(__package__).joinpath("kernels.cu").read_text("utf-8")


def _names() -> list[str]:
    names = []
    for ctype in _CTYPES.values():
        for group in (_WARP, _BLOCK):
            names += [
                f"ps_normalize_rows<{ctype}, {group}, false>",
                f"ps_normalize_rows<{ctype}, {group}, true>",
                f"ps_logsumexp_rows<{ctype}, {group}>",
                f"ps_cross_entropy_rows<{ctype}, {group}>",
            ]
    return names


# Every instantiation of the templates, as NVRTC name expressions.
KERNEL_NAMES = _names()
NVRTC_OPTIONS = ("--std=c++17",)


@functools.cache
def _module() -> Any:
    import cupy

    return cupy.RawModule(code=CUDA_SOURCE, options=NVRTC_OPTIONS, name_expressions=KERNEL_NAMES)


def launch_geometry(rows: int, n: int) -> tuple[int, int, int]:
    """``(G, blocks, threads per block)`` for ``rows`` rows of ``n`` entries.

    ``G`` threads share a row: a warp for short rows (several rows to a
    block), a whole block for long ones.
    """
    group = _WARP if n <= _WARP_ROW_MAX else _BLOCK
    per_block = _WARP_ROWS_PER_BLOCK if group == _WARP else 1
    return group, -(-rows // per_block), group * per_block


def _launch(kind: str, x: Any, args: tuple[Any, ...], *extra: str) -> None:
    """Launch ``kind<T, G, extra...>`` on the rows of ``x``."""
    group, blocks, threads = launch_geometry(*x.shape)
    name = ", ".join((_CTYPES[x.dtype.name], str(group), *extra))
    _module().get_function(f"{kind}<{name}>")((blocks,), (threads,), args)


def _check(x: Any) -> None:
    if x.ndim != 2 or x.dtype.name not in _CTYPES or not x.flags.c_contiguous:
        msg = f"expected a C-contiguous 2-D float32/float64 array, got {x.dtype} {x.shape}"
        raise ValueError(msg)


def _normalize(x: Any, log: bool) -> Any:
    _check(x)
    import cupy

    out = cupy.empty_like(x)
    if x.size:
        rows, n = x.shape
        _launch("ps_normalize_rows", x, (x, out, np.int64(rows), np.int64(n)), str(log).lower())
    return out


def softmax_rows(x: Any) -> Any:
    """Softmax of each row of ``x``.

    Parameters
    ----------
    x : cupy.ndarray
        Shape ``(R, n)``, float32 or float64, C-contiguous.

    Returns
    -------
    cupy.ndarray
        Shape and dtype of ``x``: ``exp(x - max) / sum(exp(x - max))`` per row,
        with the special rows of the special-values table (a NaN makes its row NaN; ``k``
        entries ``+inf`` get ``1/k``; a row of ``-inf`` gives zeros).

    Examples
    --------
    >>> import cupy  # doctest: +SKIP
    >>> softmax_rows(cupy.asarray([[1.0, 2.0, 3.0]]))  # doctest: +SKIP
    array([[0.09003057, 0.24472847, 0.66524096]])
    """
    return _normalize(x, log=False)


def log_softmax_rows(x: Any) -> Any:
    """Log-softmax of each row of ``x``: ``x - max - log1p(T)``.

    ``T`` is the row's sum of ``exp(x - max)`` without one maximal entry, so
    values near 0 keep their relative accuracy where one entry dominates.
    Same arguments and special rows as :func:`softmax_rows` (``-inf`` where
    the probability is 0, ``log(1/k)`` on ``k`` entries ``+inf``).

    Examples
    --------
    >>> import cupy  # doctest: +SKIP
    >>> log_softmax_rows(cupy.asarray([[0.0, -30.0]]))  # doctest: +SKIP
    array([[-9.35762297e-14, -3.00000000e+01]])
    """
    return _normalize(x, log=True)


def logsumexp_rows(x: Any) -> Any:
    """``log(sum(exp(x)))`` of each row of ``x``, as ``max + log1p(T)``; shape ``(R,)``.

    A NaN gives NaN, an entry ``+inf`` gives ``+inf``, a row of ``-inf`` (or
    an empty row) gives ``-inf``.

    Examples
    --------
    >>> import cupy  # doctest: +SKIP
    >>> logsumexp_rows(cupy.asarray([[0.0, 0.0]]))  # doctest: +SKIP
    array([0.69314718])
    """
    _check(x)
    import cupy

    rows, n = x.shape
    out = cupy.empty(rows, dtype=x.dtype)
    if n == 0:
        out.fill(-math.inf)
    elif rows:
        _launch("ps_logsumexp_rows", x, (x, out, np.int64(rows), np.int64(n)))
    return out


# A NULL pointer argument: eight zero bytes, packed alike by every CuPy version
# (older CuPy versions passed None as a NULL argument *address*, not a NULL value).
_NULL = np.uint64(0)


def cross_entropy_rows(
    x: Any,
    y: Any,
    *,
    w_y: Any = None,
    counted: Any = None,
    weight: Any = None,
    factor: Any = 1.0,
    smoothing: float = 0.0,
    loss: bool = True,
    grad: bool = True,
) -> tuple[Any, Any]:
    """Per-sample cross-entropy and/or its gradient, class-index targets, torch semantics.

    With ``C = n`` classes, ``eps = smoothing``, ``w_all = sum(weight)``
    (``C`` without weights), ``shifted = x - max`` and ``log Z = log1p(T)``
    per row, the kernel computes what ``cross_entropy`` in ``_native_numpy``
    computes::

        loss_i = (1 - eps) * (w_y == 0 ? 0 : w_y * (log Z - shifted_y))
                 + (eps / C) * (counted ? w_all * log Z - sum_j w_j shifted_j : 0)
        grad_ij = softmax_ij * ((1 - eps) * w_y + (eps / C) * w_all * counted) * factor
                  - [j == y] * (1 - eps) * factor * w_y
                  - (eps / C) * factor * w_j * counted

    where terms with ``w_j == 0`` are left out of the sum and, with
    ``eps > 0``, an uncounted row of the gradient is multiplied by 0 (so a
    NaN row stays NaN, as in torch).  The loss is not scaled by ``factor``:
    the reduction is ``sum(loss) * factor`` (``"mean"``, ``"sum"``) or
    ``loss`` itself (``"none"``), by the caller.  Special rows (docs/math.md, "Special values")
    follow from the log-probabilities: a NaN row gives NaN (the loss of an
    ignored sample stays 0, as in torch); ``+inf`` and ``-inf`` entries give
    an infinite loss where their log-probability is ``-inf`` and a finite
    gradient.

    Parameters
    ----------
    x : cupy.ndarray
        Logits, shape ``(R, C)``, float32 or float64, C-contiguous.
    y : cupy.ndarray
        Class indices, int64, shape ``(R,)``, all in ``[0, C)`` (ignored
        samples clipped into range: their weight says they are ignored).
    w_y : cupy.ndarray, optional
        Weight of each sample's target class, 0 where ignored, dtype of
        ``x``, shape ``(R,)``.  Default: ``weight[y]`` (or 1) where
        ``counted``, else 0, computed in the kernel.
    counted : cupy.ndarray, optional
        bool, shape ``(R,)``: the sample is not ignored.  Default: all counted.
    weight : cupy.ndarray, optional
        Per-class weights, dtype of ``x``, shape ``(C,)``.  Default: all 1.
    factor : float or cupy.ndarray, optional
        The reduction's scale of the gradient, a Python float, a 0-d array
        or one value per row (shape ``(R,)``), dtype of ``x``; e.g.
        ``1 / sum(w_y)`` (0 where that sum is 0) for ``"mean"``.  A device
        array is read by the kernel: no host synchronisation.
    smoothing : float, optional
        Label smoothing ``eps`` in ``[0, 1]``.
    loss, grad : bool, optional
        Which results to compute.  The gradient pass reads the logits a
        second time; the loss alone reads them once (twice with smoothing).

    Returns
    -------
    (cupy.ndarray or None, cupy.ndarray or None)
        The per-sample loss, shape ``(R,)``, and the gradient, shape
        ``(R, C)``, both of the dtype of ``x``; None for the ones not asked.

    Examples
    --------
    >>> import cupy  # doctest: +SKIP
    >>> x = cupy.asarray([[2.0, 3.0, 4.0]])  # doctest: +SKIP
    >>> cross_entropy_rows(x, cupy.asarray([1]))  # doctest: +SKIP
    (array([1.40760596]), array([[ 0.09003057, -0.75527153,  0.66524096]]))
    """
    _check(x)
    import cupy

    rows, n = x.shape
    if not x.size:
        # No rows, or no classes (then no sample can have a target).
        return (
            cupy.zeros(rows, dtype=x.dtype) if loss else None,
            cupy.zeros_like(x) if grad else None,
        )
    out_loss = cupy.empty(rows, dtype=x.dtype) if loss else None
    out_grad = cupy.empty_like(x) if grad else None
    # The kernel reads raw memory: the element types it was compiled for.
    y = cupy.ascontiguousarray(y, dtype=cupy.int64)
    if w_y is not None:
        w_y = cupy.ascontiguousarray(w_y, dtype=x.dtype)
    if counted is not None:
        counted = cupy.ascontiguousarray(counted, dtype=cupy.bool_)
    if weight is not None:
        weight = cupy.ascontiguousarray(weight, dtype=x.dtype)
    dtype = x.dtype.type
    if isinstance(factor, cupy.ndarray):
        if factor.size not in (1, rows):
            msg = f"factor must hold 1 or {rows} values, got shape {factor.shape}"
            raise ValueError(msg)
        factor = cupy.ascontiguousarray(factor.reshape(-1), dtype=x.dtype)
        factor_ptr, stride, factor_value = factor, np.int64(factor.size > 1), dtype(0)
    else:
        factor_ptr, stride, factor_value = _NULL, np.int64(0), dtype(factor)
    w_all = _NULL if weight is None else weight.sum(keepdims=True)
    args = (
        x, y,
        _NULL if w_y is None else w_y,
        _NULL if counted is None else counted,
        _NULL if weight is None else weight,
        w_all, factor_value, factor_ptr, stride,
        np.int32(smoothing > 0), dtype(1 - smoothing), dtype(smoothing / n),
        np.int64(rows), np.int64(n),
        _NULL if out_loss is None else out_loss,
        _NULL if out_grad is None else out_grad,
    )  # fmt: skip
    _launch("ps_cross_entropy_rows", x, args)
    return out_loss, out_grad
