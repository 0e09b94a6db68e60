"""JAX's linear cross-entropy: the blocks in ``lax.scan`` loops, compiled, with a ``custom_vjp``.

The math is the generic module's (``_generic/linear.py``); here the loop over
the blocks of classes (and, in the one-pass computation, of samples) is a
``lax.scan`` over ``lax.dynamic_slice`` windows of the layer, with the last,
shorter block outside the scan, so the compiled program holds one block of
logits at a time however many there are.  Each configuration is compiled
once per shape (``jax.jit`` with the options static).

``jax.grad`` of the loss goes through a ``custom_vjp``.  Its forward rule
runs only under differentiation, so for the reduced losses (``"mean"``,
``"sum"``, whose cotangent is one number) it computes the gradients right
away, in the one pass where that applies, and the backward rule scales
them; for ``"none"`` it keeps each sample's ``logsumexp`` and the backward
rule computes the blocks again with the per-sample cotangents.  Neither
keeps a block of logits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

from portable_softmax._generic import linear as generic
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._native._base import LinearLossAndGrads

__all__ = ["linear_cross_entropy"]

Grads = tuple[Any, Any, Any]
# The arrays of a problem besides the layer: indices, counted, invalid, class weights.
Data = tuple[Any, Any, Any, Any]


def _rebuild(skeleton: LinearProblem, x: Any, w: Any, b: Any, data: Data) -> LinearProblem:
    return skeleton.with_arrays(x, w, b, *data)


def _scan(body: Any, carry: Any, total: int, step: int) -> tuple[Any, Any]:
    """``body(carry, start, width) -> (carry, out)`` over ``[0, total)`` in blocks of ``step``.

    The full blocks run in a ``lax.scan``, the last, shorter one after it;
    the outputs (arrays or tuples of them, or None) are concatenated along
    their first axis.
    """
    import jax
    import jax.numpy as jnp

    n_full, rest = divmod(total, step)
    parts = []
    if n_full:
        carry, ys = jax.lax.scan(lambda c, s: body(c, s, step), carry, jnp.arange(n_full) * step)
        parts.append(jax.tree.map(lambda a: a.reshape(n_full * step, *a.shape[2:]), ys))
    if rest:
        carry, y = body(carry, n_full * step, rest)
        parts.append(y)
    if not parts or parts[0] is None:
        return carry, None
    return carry, jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *parts)


def _window(a: Any, start: Any, width: int) -> Any:
    import jax

    return jax.lax.dynamic_slice_in_dim(a, start, width, axis=0)


def _block(p: LinearProblem, x_r: Any, c0: Any, width: int) -> tuple[Any, Any, Any]:
    """The logits of classes ``[c0, c0 + width)``, the layer's rows and the class weights."""
    import jax.numpy as jnp

    w = p.compute(_window(p.linear_weight, c0, width))
    z = jnp.matmul(x_r, w.T)
    if p.linear_bias is not None:
        z = z + p.compute(_window(p.linear_bias, c0, width))
    if p.softcap is not None:
        z = p.softcap * jnp.tanh(z / p.softcap)
    return z, w, None if p.weight is None else _window(p.weight, c0, width)


def _rows(p: LinearProblem, r0: Any, height: int) -> LinearProblem:
    """The problem of samples ``[r0, r0 + height)`` (its per-sample arrays windowed)."""
    return dataclasses.replace(
        p, x=_window(p.x, r0, height), indices=_window(p.indices, r0, height),
        counted=_window(p.counted, r0, height), invalid=_window(p.invalid, r0, height),
    )  # fmt: skip


def _stats(p: LinearProblem, x_r: Any) -> generic.RowStats:
    """The statistics of ``p``'s samples over every block of classes (a scan)."""
    import jax.numpy as jnp

    n = x_r.shape[0]
    zeros = jnp.zeros((n,), dtype=p.compute_dtype)
    init = generic.RowStats(zeros - math.inf, zeros, zeros, zeros if p.smoothing > 0 else None)

    def body(stats: generic.RowStats, c0: Any, width: int) -> tuple[generic.RowStats, None]:
        z, _, w_c = _block(p, x_r, c0, width)
        return generic.merge(stats, generic.block_stats(p, z, p.indices, c0, w_c), jnp), None

    stats, _ = _scan(body, init, p.n_classes, p.blocks.classes)
    return stats


def _gradient_pass(p: LinearProblem, x_r: Any, lse: Any, f: Any) -> Grads:
    """The gradients of ``p``'s samples (a scan over the blocks of classes, logits again)."""
    import jax.numpy as jnp

    coef = generic.coefficients(p, lse, f, 0, p.n_samples)

    def body(dx: Any, c0: Any, width: int) -> tuple[Any, Any]:
        z, w, w_c = _block(p, x_r, c0, width)
        g = generic.block_gradient(p, z, lse, coef, p.indices, c0, w_c)
        db = None if p.linear_bias is None else jnp.sum(g, axis=0)
        return dx + g @ w, (g.T @ x_r, db)

    dx0 = jnp.zeros(x_r.shape, dtype=p.compute_dtype)
    dx, (dw, db) = _scan(body, dx0, p.n_classes, p.blocks.classes)
    return dx, dw, db


def _two_pass(p: LinearProblem, *, grad: bool, f: Any) -> tuple[Any, Any, Grads | None]:
    """Losses, logsumexp and (with ``grad``) gradients over ``p.blocks``."""
    import jax.numpy as jnp

    losses, lses, grads = [], [], []
    for r0, r1 in p.blocks.row_ranges(p.n_samples):
        p_r = _rows(p, r0, r1 - r0)
        x_r = p.compute(p_r.x)
        stats = _stats(p_r, x_r)
        lse = stats.lse(jnp)
        if grad:
            f_r = f if jnp.ndim(f) == 0 else f[r0:r1]
            grads.append(_gradient_pass(p_r, x_r, lse, f_r))
        losses.append(generic.per_sample_losses(p_r, stats, 0, r1 - r0))
        lses.append(lse)
    if not losses:
        empty = jnp.zeros((0,), dtype=p.compute_dtype)
        return empty, empty, generic.zero_gradients(p) if grad else None
    return jnp.concatenate(losses), jnp.concatenate(lses), _sum_grads(grads) if grad else None


def _sum_grads(parts: list[Grads]) -> Grads:
    """The gradients of the blocks of samples together: ``d_input`` stacked, the layer's summed."""
    import jax.numpy as jnp

    dx = jnp.concatenate([g[0] for g in parts], axis=0)
    dw = functools.reduce(lambda a, b: a + b, [g[1] for g in parts])
    db = (
        None if parts[0][2] is None else functools.reduce(lambda a, b: a + b, [g[2] for g in parts])
    )
    return dx, dw, db


def _one_pass(p: LinearProblem, f: Any) -> tuple[Any, Any, Grads]:
    """Losses, logsumexp and gradients over blocks of every class: each block computed once."""
    import jax.numpy as jnp

    db0 = None if p.linear_bias is None else jnp.zeros((p.n_classes,), dtype=p.compute_dtype)
    carry = (jnp.zeros(p.linear_weight.shape, dtype=p.compute_dtype), db0)

    def body(carry: Any, r0: Any, height: int) -> tuple[Any, Any]:
        p_r = _rows(p, r0, height)
        x_r = p.compute(p_r.x)
        z, w, _ = _block(p_r, x_r, 0, p.n_classes)
        stats = generic.block_stats(p_r, z, p_r.indices, 0, p.weight)
        lse = stats.lse(jnp)
        coef = generic.coefficients(p_r, lse, f, 0, height)
        g = generic.block_gradient(p_r, z, lse, coef, p_r.indices, 0, p.weight)
        dw, db = carry
        db = None if db is None else db + jnp.sum(g, axis=0)
        losses = generic.per_sample_losses(p_r, stats, 0, height)
        return (dw + g.T @ x_r, db), (losses, lse, g @ w)

    (dw, db), (losses, lse, dx) = _scan(body, carry, p.n_samples, p.one_pass.rows)
    return losses, lse, (dx, dw, db)


def _forward(p: LinearProblem, *, grad: bool) -> tuple[Any, Any, Grads | None]:
    f = generic.multiplier(p)
    if grad and p.one_pass is not None and p.n_samples:
        return _one_pass(p, f)
    return _two_pass(p, grad=grad, f=f)


def _cast(grads: Grads, x: Any, w: Any, b: Any) -> Grads:
    dx, dw, db = grads
    return dx.astype(x.dtype), dw.astype(w.dtype), None if b is None else db.astype(b.dtype)


@functools.cache
def _compiled() -> tuple[Any, Any]:
    """The loss (with its ``custom_vjp``) and the loss with its gradients, jitted."""
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def loss(skeleton: LinearProblem, x: Any, w: Any, b: Any, data: Data) -> Any:
        p = _rebuild(skeleton, x, w, b, data)
        losses, _, _ = _forward(p, grad=False)
        return generic.reduce(p, losses)

    def loss_fwd(skeleton: LinearProblem, x: Any, w: Any, b: Any, data: Data) -> Any:
        p = _rebuild(skeleton, x, w, b, data)
        if p.reduction == "none":
            losses, lse, _ = _forward(p, grad=False)
            return generic.reduce(p, losses), (x, w, b, data, lse, None)
        losses, _, grads = _forward(p, grad=True)
        return generic.reduce(p, losses), (x, w, b, None, None, grads)

    def loss_bwd(skeleton: LinearProblem, residuals: Any, g: Any) -> Any:
        x, w, b, data, lse, grads = residuals
        if grads is None:
            p = _rebuild(skeleton, x, w, b, data)
            f = generic.multiplier(p, g.astype(p.compute_dtype))
            grads = _two_pass_gradients(p, lse, f)
        else:
            grads = tuple(None if a is None else a * g.astype(a.dtype) for a in grads)
        return (*_cast(grads, x, w, b), None)

    loss.defvjp(loss_fwd, loss_bwd)

    def with_grad(skeleton: LinearProblem, x: Any, w: Any, b: Any, data: Data) -> Any:
        p = _rebuild(skeleton, x, w, b, data)
        losses, _, grads = _forward(p, grad=True)
        return generic.reduce(p, losses), grads

    return jax.jit(loss, static_argnums=0), jax.jit(with_grad, static_argnums=0)


def _two_pass_gradients(p: LinearProblem, lse: Any, f: Any) -> Grads:
    """The backward pass of ``"none"``: per-sample cotangents ``f``, the blocks again."""
    parts = []
    for r0, r1 in p.blocks.row_ranges(p.n_samples):
        p_r = _rows(p, r0, r1 - r0)
        parts.append(_gradient_pass(p_r, p.compute(p_r.x), lse[r0:r1], f[r0:r1]))
    return _sum_grads(parts) if parts else generic.zero_gradients(p)


def linear_cross_entropy(p: LinearProblem, *, grad: bool) -> LinearLossAndGrads | None:
    """The loss (differentiable by ``jax.grad``), or the loss with its gradients."""
    loss_fn, with_grad = _compiled()
    data = (p.indices, p.counted, p.invalid, p.weight)
    args = (p.skeleton(), p.x, p.linear_weight, p.linear_bias, data)
    if grad:
        return with_grad(*args)
    return loss_fn(*args), None
