"""JAX fast paths: ``jax.nn`` behind a traced guard.

XLA's CPU backend compiles jax.nn.softmax (and logsumexp) to single fused
kernels; the selects that the generic code needs for the special values break that
pattern (1.2-6x slower).  So jax.nn's computation runs, and a lax.cond --
traced, so it holds under jit and vmap -- sends an input that has a row
jax.nn gets wrong (NaN for an infinite maximum; for logsumexp, a result
near 0 that lost its relative accuracy) to the generic path.  The
derivatives are given in closed form from the final values: differentiating
through the cond would multiply a zero cotangent by jax.nn's NaN on the
rows it got wrong.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import portable_softmax._native._jax_linear as _jax_linear
from portable_softmax._compat import Array
from portable_softmax._generic import softmax as generic
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._native._base import Backend, LinearLossAndGrads
from portable_softmax._native._rows import DOMINANT_LOG_PROB

__all__ = ["JaxBackend"]


class JaxBackend(Backend):
    """``jax.Array`` and its tracers (under ``jit``, ``vmap``, ``grad``)."""

    name = "jax"

    def softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return None if where is not None else _kernels().softmax(x, axes)

    def log_softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return None if where is not None else _kernels().log_softmax(x, axes)

    def logsumexp(self, x: Array, axes: tuple[int, ...]) -> Array | None:
        return _kernels().logsumexp(x, axes)

    def linear_cross_entropy(self, p: LinearProblem, *, grad: bool) -> LinearLossAndGrads | None:
        return _jax_linear.linear_cross_entropy(p, grad=grad)


class _Kernels(NamedTuple):
    softmax: Callable[[Array, tuple[int, ...]], Array]
    log_softmax: Callable[[Array, tuple[int, ...]], Array]
    logsumexp: Callable[[Array, tuple[int, ...]], Array]


@functools.cache
def _kernels() -> _Kernels:
    """softmax, log_softmax and logsumexp of ``(x, axes)``, jitted, built once (keepdims)."""
    import jax
    import jax.numpy as jnp

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def softmax(x: Any, axes: tuple[int, ...]) -> Any:
        s = jax.nn.softmax(x, axis=axes)
        # A finite row gives no NaN; a row with an infinite maximum or a NaN
        # is NaN throughout, so its first entry tells.  s goes into the cond
        # as an operand: read there, it leaves jax.nn's fused kernel whole.
        first = s[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))]
        return jax.lax.cond(
            jnp.any(jnp.isnan(first)), lambda _: generic.softmax(x, axes, None, jnp), lambda s: s, s
        )

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def log_softmax(x: Any, axes: tuple[int, ...]) -> Any:
        # jax.nn.log_softmax's steps, plus the sum without the maximum's 1
        # (a second reduction over the same exps): a row with a dominant
        # entry (a total below exp(0.5), so no ties) takes log1p of it.  A
        # NaN total marks a special row.
        shifted = x - jnp.max(x, axis=axes, keepdims=True)
        e = jnp.exp(shifted)
        total = jnp.sum(e, axis=axes, keepdims=True)
        rest = jnp.sum(jnp.where(shifted == 0, 0.0, e), axis=axes, keepdims=True)

        def fast(shifted: Any, total: Any, rest: Any) -> Any:
            dominant = total < math.exp(-DOMINANT_LOG_PROB)
            return shifted - jnp.where(dominant, jnp.log1p(rest), jnp.log(total))

        return jax.lax.cond(
            jnp.any(jnp.isnan(total)),
            lambda *_: generic.log_softmax(x, axes, None, jnp),
            fast,
            shifted,
            total,
            rest,
        )

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def logsumexp(x: Any, axes: tuple[int, ...]) -> Any:
        value = jax.nn.logsumexp(x, axis=axes, keepdims=True)
        # Results near 0 lose relative accuracy in log(sum).
        return jax.lax.cond(
            jnp.all(jnp.abs(value) >= 1.0),
            lambda v: v,
            lambda _: generic.logsumexp(x, axes, jnp),
            value,
        )

    _define_jvps(softmax, log_softmax, logsumexp)
    # Jitted (the axes static): eagerly, a cond of fresh closures would
    # compile on every call; this way once per shape and dtype.
    return _Kernels(*(jax.jit(f, static_argnums=1) for f in (softmax, log_softmax, logsumexp)))


def _define_jvps(softmax: Any, log_softmax: Any, logsumexp: Any) -> None:
    """Closed-form derivatives from the final values (not through the guard's cond)."""
    import jax.numpy as jnp

    def sum_along(a: Any, axes: tuple[int, ...]) -> Any:
        return jnp.sum(a, axis=axes, keepdims=True)

    @softmax.defjvp
    def _(axes: tuple[int, ...], primals: Any, tangents: Any) -> tuple[Any, Any]:
        (x,), (dx,) = primals, tangents
        s = softmax(x, axes)
        return s, s * (dx - sum_along(s * dx, axes))

    @log_softmax.defjvp
    def _(axes: tuple[int, ...], primals: Any, tangents: Any) -> tuple[Any, Any]:
        (x,), (dx,) = primals, tangents
        return log_softmax(x, axes), dx - sum_along(softmax(x, axes) * dx, axes)

    @logsumexp.defjvp
    def _(axes: tuple[int, ...], primals: Any, tangents: Any) -> tuple[Any, Any]:
        (x,), (dx,) = primals, tangents
        return logsumexp(x, axes), sum_along(softmax(x, axes) * dx, axes)
