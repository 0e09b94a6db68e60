"""softmax, log_softmax and logsumexp, written once against the Array API."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from portable_softmax import _native
from portable_softmax._compat import (
    Array,
    xp_as_compute,
    xp_check_floating,
    xp_full_like_reduced,
    xp_inputs,
    xp_normalize_axes,
    xp_quiet,
)

__all__ = ["log_softmax", "logsumexp", "softmax"]

Axis = int | Sequence[int]
Kernel = Callable[[Array, tuple[int, ...], Array | None, ModuleType], Array | None]


def _prepare(
    x: Array, axis: Axis, where: Array | None, xp: ModuleType
) -> tuple[Array, tuple[int, ...], Array | None]:
    """Validate ``x``, ``axis`` and ``where``; return the compute-dtype input."""
    xp_check_floating(x, xp)
    axes = xp_normalize_axes(axis, x.ndim)
    if where is not None:
        if not xp.isdtype(where.dtype, "bool"):
            msg = f"where must be a boolean array, got dtype {where.dtype}"
            raise TypeError(msg)
        where = _broadcast_to(where, x, "where", xp)
    return xp_as_compute(x, xp), axes, where


def _broadcast_to(a: Array, x: Array, name: str, xp: ModuleType) -> Array:
    try:
        return xp.broadcast_to(a, x.shape)
    except (ValueError, RuntimeError) as exc:
        msg = (
            f"{name} of shape {tuple(a.shape)} does not broadcast to "
            f"the shape {tuple(x.shape)} of x"
        )
        raise ValueError(msg) from exc


def _is_empty(x: Array) -> bool:
    # Any zero-length axis: there is nothing to compute, and a maximum over
    # nothing is an error in NumPy and Dask, even along a non-empty axis.
    return any(n == 0 for n in x.shape)


def xp_shift(x: Array, axes: tuple[int, ...], xp: ModuleType) -> tuple[Array, Array, Array]:
    """Return ``(x - max, max, m0)`` with the special values of SPEC §3 built in.

    ``m0`` is the row maximum (keepdims), except that a row of ``-inf`` is shifted by 0
    (so it stays ``-inf`` rather than becoming ``-inf - -inf = NaN``).  In a
    row whose maximum is ``+inf`` the ``+inf`` entries become 0 and every
    other entry ``-inf``, so the mass is shared among the infinities.  A NaN
    maximum propagates NaN to the whole row.
    """
    m = xp.max(x, axis=axes, keepdims=True)
    m0 = xp.where(m == -math.inf, 0.0, m)
    # Only +inf entries need the where: elsewhere x - m0 is already right, and
    # keeping it on that branch lets autodiff see x - max.
    shifted = xp.where(x == math.inf, 0.0, x - m0)
    return shifted, m, m0


def xp_log_normalizer(
    x: Array, shifted: Array, m: Array, m0: Array, axes: tuple[int, ...], xp: ModuleType
) -> Array:
    """``log(sum(exp(shifted)))`` along ``axes`` (keepdims), accurate near 0.

    The maxima contribute exactly 1 each, so the sum is ``n_top + rest`` and
    its log is ``log1p(rest + n_top - 1)``: this keeps full relative accuracy
    when one entry dominates and the result is tiny (SciPy does the same).
    A row of ``-inf`` (maximum ``m`` is ``-inf``) gets 0, so that
    ``shifted - log_z`` stays ``-inf`` there; a row with a NaN gets NaN.
    """
    is_top = x == m0
    n_top = xp.sum(xp.astype(is_top, shifted.dtype, copy=False), axis=axes, keepdims=True)
    rest = xp.sum(xp.where(is_top, 0.0, xp.exp(shifted)), axis=axes, keepdims=True)
    return xp.log1p(xp.where(m == -math.inf, 0.0, rest + (n_top - 1)))


def _softmax(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array:
    if where is not None:
        x = xp.where(where, x, -math.inf)
    shifted, _, _ = xp_shift(x, axes, xp)
    e = xp.exp(shifted)
    z = xp.sum(e, axis=axes, keepdims=True)
    # z == 0 only for rows of -inf (or fully masked): 0 / 1 gives their zeros.
    s = e / xp.where(z == 0, 1.0, z)
    return s if where is None else xp.where(where, s, 0.0)


def _log_softmax(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array:
    if where is not None:
        x = xp.where(where, x, -math.inf)
    shifted, m, m0 = xp_shift(x, axes, xp)
    # (x - max) - log(sum) stays accurate at |x| ~ 1e4, x - logsumexp(x) does not.
    out = shifted - xp_log_normalizer(x, shifted, m, m0, axes, xp)
    return out if where is None else xp.where(where, out, -math.inf)


def _logsumexp(x: Array, axes: tuple[int, ...], where: None, xp: ModuleType) -> Array:
    # keepdims; `where` and `b` have been folded into x by the caller.
    shifted, m, m0 = xp_shift(x, axes, xp)
    return m + xp_log_normalizer(x, shifted, m, m0, axes, xp)


def _normalised(x: Any, axis: Axis, where: Any, native: Kernel, generic: Kernel) -> Array:
    """The body of softmax and log_softmax: validate, then the fast path or the generic one."""
    xp, x, (where,) = xp_inputs(x, where)
    out_dtype = x.dtype
    x, axes, where = _prepare(x, axis, where, xp)
    if _is_empty(x):
        return xp.astype(x, out_dtype)
    out = native(x, axes, where, xp)
    if out is None:
        out = generic(x, axes, where, xp)
    return out if out.dtype == out_dtype else xp.astype(out, out_dtype, copy=False)


@xp_quiet
def softmax(x: Array, /, axis: Axis = -1, *, where: Array | None = None) -> Array:
    """Softmax along ``axis``: ``exp(x_i) / sum_j exp(x_j)``.

    Parameters
    ----------
    x : array_like
        Real floating input of any Array API library (NumPy, PyTorch, CuPy,
        JAX, Dask, array_api_strict).  Lists and scalars are converted with
        NumPy to float64.
    axis : int or tuple of ints, optional
        Axis or axes to normalise over. Default: the last axis.
    where : array of bool, optional
        Broadcastable to ``x``; entries where it is False take no part and get
        probability 0.

    Returns
    -------
    array
        Same library, device, shape and dtype as ``x``.  float16 and bfloat16
        are computed in float32.

    Notes
    -----
    The maximum is subtracted first, so no finite input overflows.  A row
    containing NaN is all NaN; ``k`` entries of ``+inf`` share the mass
    ``1/k``; a row of ``-inf`` (or fully masked) is all 0.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.softmax([1000.0, 2000.0, 3000.0, 4000.0, 5000.0])
    array([0., 0., 0., 0., 1.])
    >>> ps.softmax([[1.0, 1.0], [0.0, 2.0]]).round(4)
    array([[0.5   , 0.5   ],
           [0.1192, 0.8808]])
    """
    return _normalised(x, axis, where, _native.softmax, _softmax)


@xp_quiet
def log_softmax(x: Array, /, axis: Axis = -1, *, where: Array | None = None) -> Array:
    """Logarithm of the softmax along ``axis``: ``x_i - logsumexp(x)``.

    Computed as ``(x - max) - log(sum(exp(x - max)))``, which keeps its
    accuracy for large ``|x|`` where ``x - logsumexp(x)`` cancels.

    Parameters
    ----------
    x : array_like
        Real floating input of any Array API library.
    axis : int or tuple of ints, optional
        Axis or axes to normalise over. Default: the last axis.
    where : array of bool, optional
        Broadcastable to ``x``; entries where it is False get ``-inf``.

    Returns
    -------
    array
        Same library, device, shape and dtype as ``x``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.log_softmax([0.0, 0.0]).round(6)
    array([-0.693147, -0.693147])
    >>> ps.log_softmax([1.0, float("-inf")])
    array([  0., -inf])
    """
    return _normalised(x, axis, where, _native.log_softmax, _log_softmax)


@xp_quiet
def logsumexp(
    x: Array,
    /,
    axis: Axis = -1,
    *,
    keepdims: bool = False,
    where: Array | None = None,
    b: Array | None = None,
    return_sign: bool = False,
) -> Array | tuple[Array, Array]:
    """``log(sum(b * exp(x)))`` along ``axis``, as ``scipy.special.logsumexp``.

    Parameters
    ----------
    x : array_like
        Real floating input of any Array API library.
    axis : int or tuple of ints, optional
        Axis or axes to reduce. Default: the last axis.
    keepdims : bool, optional
        Keep the reduced axes with length 1.
    where : array of bool, optional
        Broadcastable to ``x``; entries where it is False are left out.
    b : array_like, optional
        Scale factors broadcastable to ``x``, possibly negative.  An entry with
        ``b == 0`` is left out even where ``x`` is ``inf`` or NaN.
    return_sign : bool, optional
        Return ``(value, sign)`` with ``value = log|sum|`` and ``sign`` in
        ``{-1, 0, +1}`` (NaN for a NaN sum).  Without it a negative sum gives
        NaN, as in SciPy.

    Returns
    -------
    array or (array, array)
        Same library, device and dtype as ``x`` (promoted with ``b`` when
        ``b`` is floating), shaped like ``x`` reduced over ``axis``.  An empty
        reduction gives ``-inf`` (sign 0).

    Examples
    --------
    >>> import portable_softmax as ps
    >>> float(ps.logsumexp([0.0, 0.0]))  # log 2
    0.6931471805599453
    >>> value, sign = ps.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    >>> round(float(value), 4), float(sign)
    (1.5413, -1.0)
    """
    xp, x, (where, b) = xp_inputs(x, where, b)
    xp_check_floating(x, xp)
    if b is not None:
        if xp.isdtype(b.dtype, "complex floating"):
            xp_check_floating(b, xp, "b")
        if xp.isdtype(b.dtype, "real floating"):
            x = xp.astype(x, xp.result_type(x.dtype, b.dtype), copy=False)
    out_dtype = x.dtype
    x, axes, where = _prepare(x, axis, where, xp)
    if where is not None:
        x = xp.where(where, x, -math.inf)
    if b is not None:
        b = xp.astype(_broadcast_to(b, x, "b", xp), x.dtype, copy=False)
        # A zero weight hides its entry, whatever x holds there (inf, NaN).
        x = xp.where(b == 0, -math.inf, x)

    sign = None
    if _is_empty(x):
        value = xp_full_like_reduced(x, axes, -math.inf, xp, keepdims=True)
    elif b is None:
        # x is already masked, so the fast path needs no `where`.
        if (value := _native.logsumexp(x, axes, None, xp)) is None:
            value = _logsumexp(x, axes, None, xp)
    else:
        shifted, m, _ = xp_shift(x, axes, xp)
        total = xp.sum(b * xp.exp(shifted), axis=axes, keepdims=True)
        sign = xp.sign(total)
        value = m + xp.log(xp.abs(total))
        if not return_sign:
            value = xp.where(total < 0, math.nan, value)
    if not keepdims:
        value = xp.squeeze(value, axis=axes)
    value = xp.astype(value, out_dtype, copy=False)
    if not return_sign:
        return value
    if sign is None:
        sign = xp.where(value == -math.inf, 0.0, xp.where(xp.isnan(value), value, 1.0))
    elif not keepdims:
        sign = xp.squeeze(sign, axis=axes)
    return value, xp.astype(sign, out_dtype, copy=False)
