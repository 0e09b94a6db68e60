"""The softmax Jacobian and its product with a vector."""

from __future__ import annotations

from portable_softmax._compat import (
    Array,
    is_array_api_obj,
    xp_as_compute,
    xp_broadcast_to,
    xp_check_floating,
    xp_device,
    xp_inputs,
    xp_is_empty,
    xp_normalize_axes,
    xp_normalize_axis,
    xp_quiet,
)
from portable_softmax._generic import softmax as generic
from portable_softmax._softmax import Axis

__all__ = ["softmax_jacobian", "softmax_jvp"]


@xp_quiet
def softmax_jacobian(x: Array, /, axis: int = -1) -> Array:
    """Jacobian of :func:`softmax` along ``axis``: ``s_i (δ_ij − s_j)``.

    Parameters
    ----------
    x : array_like
        Real floating input of any Array API library.
    axis : int, optional
        The softmax axis. Default: the last axis.

    Returns
    -------
    array
        ``J[..., i, j] = d softmax(x)_i / d x_j``: the leading axes are the
        other axes of ``x`` in order, the last two have the length of
        ``axis``.  Same library, device and dtype as ``x``.

    See Also
    --------
    softmax_jvp : ``J @ v`` in O(n) without forming ``J``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.softmax_jacobian([0.0, 0.0])
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    xp, x, _ = xp_inputs(x)
    xp_check_floating(x, xp)
    ax = xp_normalize_axis(axis, x.ndim)
    out_dtype = x.dtype
    x = xp_as_compute(x, xp)
    s = x if xp_is_empty(x) else generic.softmax(x, (ax,), None, xp)
    s = xp.moveaxis(s, ax, -1)
    n = s.shape[-1]
    # At the result's rank: no implicit rank promotion (JAX's strict mode refuses it).
    eye = xp.reshape(xp.eye(n, dtype=s.dtype, device=xp_device(s)), (1,) * (s.ndim - 1) + (n, n))
    jac = xp.expand_dims(s, axis=-1) * (eye - xp.expand_dims(s, axis=-2))
    return xp.astype(jac, out_dtype, copy=False)


@xp_quiet
def softmax_jvp(x: Array, v: Array, /, axis: Axis = -1) -> Array:
    """Product of the softmax Jacobian with ``v`` along ``axis``, in O(n).

    Computes ``s * (v - sum(s * v))`` with ``s = softmax(x)``, never forming
    the Jacobian.  The Jacobian is symmetric, so this is also the
    vector-Jacobian product (the backward pass of softmax).

    Parameters
    ----------
    x : array_like
        Real floating input of any Array API library.
    v : array_like
        Tangent, broadcastable to ``x``; a list is taken in the dtype of ``x``.
    axis : int or tuple of ints, optional
        The softmax axis or axes. Default: the last axis.

    Returns
    -------
    array
        Shape of ``x``; same library and device, dtype of ``x`` promoted with
        the dtype of ``v``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.softmax_jvp([0.0, 0.0], [1.0, 0.0])
    array([ 0.25, -0.25])
    """
    v_is_array = is_array_api_obj(v)
    xp, x, (v,) = xp_inputs(x, v)
    xp_check_floating(x, xp)
    xp_check_floating(v, xp, "v")
    axes = xp_normalize_axes(axis, x.ndim)
    out_dtype = xp.result_type(x.dtype, v.dtype) if v_is_array else x.dtype
    x = xp_as_compute(xp.astype(x, out_dtype, copy=False), xp)
    v = xp_broadcast_to(xp.astype(v, x.dtype, copy=False), x.shape, "v", xp)
    if xp_is_empty(x):
        return xp.astype(v, out_dtype)
    s = generic.softmax(x, axes, None, xp)
    sv = s * v
    return xp.astype(sv - s * xp.sum(sv, axis=axes, keepdims=True), out_dtype, copy=False)
