"""softmax, log_softmax and logsumexp over validated axes, in the Array API only.

The special values of the special-values table (``docs/math.md``) are built
into the arithmetic: a row of ``-inf`` is shifted by 0, ``+inf`` entries
share the mass, NaN propagates.
"""

from __future__ import annotations

import math
from types import ModuleType

from portable_softmax._compat import Array

__all__ = ["log_normalizer", "log_softmax", "logsumexp", "shift", "softmax"]


def shift(x: Array, axes: tuple[int, ...], xp: ModuleType) -> tuple[Array, Array, Array]:
    """Return ``(x - max, max, m0)`` with the special values built in.

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


def log_normalizer(
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


def softmax(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array:
    """Softmax over ``axes``; entries where ``where`` is False get 0."""
    if where is not None:
        x = xp.where(where, x, -math.inf)
    shifted, _, _ = shift(x, axes, xp)
    e = xp.exp(shifted)
    z = xp.sum(e, axis=axes, keepdims=True)
    # z == 0 only for rows of -inf (or fully masked): 0 / 1 gives their zeros.
    s = e / xp.where(z == 0, 1.0, z)
    return s if where is None else xp.where(where, s, 0.0)


def log_softmax(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array:
    """Log-softmax over ``axes``; entries where ``where`` is False get ``-inf``."""
    if where is not None:
        x = xp.where(where, x, -math.inf)
    shifted, m, m0 = shift(x, axes, xp)
    # (x - max) - log(sum) stays accurate at |x| ~ 1e4, x - logsumexp(x) does not.
    out = shifted - log_normalizer(x, shifted, m, m0, axes, xp)
    return out if where is None else xp.where(where, out, -math.inf)


def logsumexp(x: Array, axes: tuple[int, ...], xp: ModuleType) -> Array:
    """Log-sum-exp over ``axes``, keepdims; ``where`` and ``b`` are folded into ``x``."""
    shifted, m, m0 = shift(x, axes, xp)
    return m + log_normalizer(x, shifted, m, m0, axes, xp)
