"""softmax, log_softmax and logsumexp, written once against the Array API."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from portable_softmax._compat import (
    Array,
    xp_as_compute,
    xp_broadcast_to,
    xp_check_floating,
    xp_full_like_reduced,
    xp_inputs,
    xp_is_empty,
    xp_normalize_axes,
    xp_quiet,
)
from portable_softmax._generic import softmax as generic
from portable_softmax._native import fast_or_generic

__all__ = ["log_softmax", "logsumexp", "softmax"]

Axis = int | Sequence[int]


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
        where = xp_broadcast_to(where, x.shape, "where", xp)
    return xp_as_compute(x, xp), axes, where


def softmax_of(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array:
    """Softmax of validated, non-empty, compute-dtype ``x``: the fast path or the generic one."""
    return fast_or_generic(
        x, lambda b: b.softmax(x, axes, where), lambda: generic.softmax(x, axes, where, xp)
    )


def log_softmax_of(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array:
    """Log-softmax of validated, non-empty, compute-dtype ``x``, as :func:`softmax_of`."""
    return fast_or_generic(
        x, lambda b: b.log_softmax(x, axes, where), lambda: generic.log_softmax(x, axes, where, xp)
    )


def _normalised(x: Any, axis: Axis, where: Any, kernel: Callable[..., Array]) -> Array:
    """The body of softmax and log_softmax: validate, compute, cast back."""
    xp, x, (where,) = xp_inputs(x, where)
    out_dtype = x.dtype
    x, axes, where = _prepare(x, axis, where, xp)
    if xp_is_empty(x):
        return xp.astype(x, out_dtype)
    out = kernel(x, axes, where, xp)
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
    return _normalised(x, axis, where, softmax_of)


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
    return _normalised(x, axis, where, log_softmax_of)


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
        b = xp.astype(xp_broadcast_to(b, x.shape, "b", xp), x.dtype, copy=False)
        # A zero weight hides its entry, whatever x holds there (inf, NaN).
        x = xp.where(b == 0, -math.inf, x)

    sign = None
    if xp_is_empty(x):
        value = xp_full_like_reduced(x, axes, -math.inf, xp, keepdims=True)
    elif b is None:
        value = fast_or_generic(
            x, lambda be: be.logsumexp(x, axes), lambda: generic.logsumexp(x, axes, xp)
        )
    else:
        shifted, m, _ = generic.shift(x, axes, xp)
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
