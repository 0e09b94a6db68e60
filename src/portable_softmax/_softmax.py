"""softmax, log_softmax and logsumexp, written once against the Array API."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from portable_softmax._compat import (
    Array,
    xp_as_compute,
    xp_check_floating,
    xp_check_where,
    xp_full_like_reduced,
    xp_inputs,
    xp_is_empty,
    xp_nan_where,
    xp_normalize_axes,
    xp_quiet,
)
from portable_softmax._generic import softmax as generic
from portable_softmax._native import fast_or_generic

__all__ = ["log_softmax", "logsumexp", "softmax"]

Axis = int | Sequence[int] | None


def _prepare(
    x: Array, axis: Axis, where: Array | None, xp: ModuleType
) -> tuple[Array, tuple[int, ...], Array | None]:
    """Validate ``x``, ``axis`` and ``where``; return the compute-dtype input.

    With ``axis=None`` (all axes) a 0-d ``x`` is a group of one, computed as
    shape ``(1,)``: the caller reshapes the result back to ``()``.
    """
    xp_check_floating(x, xp)
    if axis is None and x.ndim == 0:
        x = xp.reshape(x, (1,))
        if where is not None:
            where = xp.reshape(where, (1,))
    axes = tuple(range(x.ndim)) if axis is None else xp_normalize_axes(axis, x.ndim)
    if where is not None:
        where = xp_check_where(where, x.shape, xp)
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
    out_dtype, shape = x.dtype, x.shape
    x, axes, where = _prepare(x, axis, where, xp)
    if xp_is_empty(x):
        return xp.astype(x, out_dtype)
    out = kernel(x, axes, where, xp)
    if out.ndim != len(shape):  # a 0-d input with axis=None (not a NaN size: unknown chunks)
        out = xp.reshape(out, shape)
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
    axis : int, tuple of ints or None, optional
        Axis or axes to normalise over; None for all of them (a 0-d ``x`` is
        then a group of one). Default: the last axis.
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
    axis : int, tuple of ints or None, optional
        Axis or axes to normalise over; None for all of them (a 0-d ``x`` is
        then a group of one). Default: the last axis.
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
    axis : int, tuple of ints or None, optional
        Axis or axes to reduce; None for all of them (a 0-d ``x`` is then a
        group of one). Default: the last axis.
    keepdims : bool, optional
        Keep the reduced axes with length 1.
    where : array of bool, optional
        Broadcastable to ``x``; entries where it is False are left out.
    b : array_like, optional
        Scale factors, possibly negative; ``x`` and ``b`` broadcast against
        each other and the broadcast shape is reduced, as in SciPy.  An entry
        with ``b == 0`` is left out even where ``x`` is ``inf`` or NaN;
        ``+inf`` entries whose weights have both signs give NaN.
    return_sign : bool, optional
        Return ``(value, sign)`` with ``value = log|sum|`` and ``sign`` in
        ``{-1, 0, +1}`` (NaN for a NaN sum).  Without it a negative sum gives
        NaN, as in SciPy.

    Returns
    -------
    array or (array, array)
        Same library, device and dtype as ``x`` (promoted with ``b`` when
        ``b`` is floating: an integer ``b`` keeps float32 ``x`` float32, where
        SciPy gives float64), shaped like ``x`` (broadcast with ``b``) reduced
        over ``axis``; a 0-d array, not a scalar, when every axis is reduced.
        An empty reduction gives ``-inf`` (sign 0).

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
        x, b = _broadcast_weights(x, b, xp)
    out_dtype, shape = x.dtype, x.shape
    x, axes, where = _prepare(x, axis, where, xp)
    if where is not None:
        x = xp.where(where, x, -math.inf)
    if b is not None:
        b = xp.astype(xp.reshape(b, x.shape), x.dtype, copy=False)
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
        value, sign = _weighted_logsumexp(x, b, axes, xp, return_sign=return_sign)
    reduced = () if not shape else None  # a 0-d input with axis=None
    value = xp.astype(_reduced(value, axes, keepdims, reduced, xp), out_dtype, copy=False)
    if not return_sign:
        return value
    if sign is None:
        sign = xp.where(value == -math.inf, 0.0, xp.where(xp.isnan(value), value, 1.0))
    else:
        sign = _reduced(sign, axes, keepdims, reduced, xp)
    return value, xp.astype(sign, out_dtype, copy=False)


def _broadcast_weights(x: Array, b: Array, xp: ModuleType) -> tuple[Array, Array]:
    """``x`` and ``b`` broadcast against each other, ``x`` promoted with a floating ``b``."""
    if xp.isdtype(b.dtype, "complex floating"):
        xp_check_floating(b, xp, "b")
    if xp.isdtype(b.dtype, "real floating"):
        x = xp.astype(x, xp.result_type(x.dtype, b.dtype), copy=False)
    if tuple(b.shape) == tuple(x.shape):
        return x, b
    try:
        x, b = xp.broadcast_arrays(x, b)
    except (ValueError, RuntimeError) as exc:
        msg = f"b of shape {tuple(b.shape)} does not broadcast against x of shape {tuple(x.shape)}"
        raise ValueError(msg) from exc
    return x, b


def _weighted_logsumexp(
    x: Array, b: Array, axes: tuple[int, ...], xp: ModuleType, *, return_sign: bool
) -> tuple[Array, Array]:
    """``log|sum(b * exp(x))|`` and the sign of the sum (keepdims), as SciPy defines them."""
    shifted, m, _ = generic.shift(x, axes, xp)
    total = xp.sum(b * xp.exp(shifted), axis=axes, keepdims=True)
    # +inf entries whose weights have both signs: inf - inf, undefined.
    at_inf = x == math.inf
    up = xp.any(at_inf & (b > 0), axis=axes, keepdims=True)
    down = xp.any(at_inf & (b < 0), axis=axes, keepdims=True)
    total = xp_nan_where(up & down, total, xp)
    sign = xp.where(xp.isnan(total), total, xp.sign(total))
    value = m + xp.log(xp.abs(total))
    if not return_sign:
        # A negative sum has no real logarithm.
        value = xp_nan_where(total < 0, value, xp)
    return value, sign


def _reduced(
    a: Array, axes: tuple[int, ...], keepdims: bool, shape: tuple[int, ...] | None, xp: ModuleType
) -> Array:
    """A keepdims result without the reduced axes unless ``keepdims``; ``shape`` overrides."""
    if shape is not None:
        return xp.reshape(a, shape)
    return a if keepdims else xp.squeeze(a, axis=axes)
