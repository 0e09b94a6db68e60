"""The linear layer fused with the cross-entropy, in the Array API only.

The logits ``z = x @ W.T + b`` (softcapped) are computed one block of
``p.rows`` samples by ``p.classes`` classes at a time and never kept.  Per
sample, the blocks leave four statistics, merged exactly from block to block
(the online-softmax recurrence):

- ``m``, the running maximum, and ``t = sum(exp(z - m)) - 1``, the sum
  without the maximum's own 1, so that ``logsumexp = m + log1p(t)`` keeps
  its relative accuracy when one class dominates (the log1p form of the
  special-values notes);
- ``zy``, the target's logit, picked from the block that holds it;
- ``zw = sum_j w_j z_j``, for label smoothing.

From them the loss is
``(1 - eps) w_y (lse - zy) + (eps / V) (sum(w) lse - zw) + z_loss w_y lse**2``
(torch's smoothing, the class weights ``w``, ``w_y`` the target's).  Its
gradient with respect to block's logits is, in closed form,
``G = exp(z - lse) * alpha - [j == y] * beta - w_j * gamma`` with per-sample
``alpha``, ``beta``, ``gamma`` (:func:`coefficients`), times the softcap's
derivative ``1 - (z / cap)**2``; then ``d_input += G @ W_block``,
``d_W_block += G.T @ x``, ``d_b_block += sum(G)``.

When a block holds every class (one block of classes), the loss and the
gradient come from one product per block of samples; otherwise a first pass
over the classes gives the sample's ``logsumexp`` and a second one computes
the blocks again for the gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from portable_softmax._compat import Array, xp_device, xp_nan_where
from portable_softmax._linear_problem import Blocks, LinearProblem

__all__ = [
    "Coefficients",
    "RowStats",
    "block_gradient",
    "block_stats",
    "class_weights",
    "coefficients",
    "gradients",
    "logits",
    "loss_and_grad",
    "merge",
    "multiplier",
    "per_sample_losses",
    "reduce",
    "zero_gradients",
]


class RowStats(NamedTuple):
    """Per-sample statistics of the logits over the classes seen so far."""

    m: Array  # the maximum
    t: Array  # sum of exp(z - m), less the maximum's 1
    zy: Array  # the target's logit (0 until its block is seen)
    zw: Array | None  # sum_j w_j z_j (label smoothing only)

    def lse(self, xp: Any) -> Array:
        return self.m + xp.log1p(self.t)


class Coefficients(NamedTuple):
    """Per-sample factors of the gradient ``exp(z - lse) * alpha - [j == y] beta - w_j gamma``."""

    alpha: Array
    beta: Array
    gamma: Array | None  # label smoothing only

    def rows(self, r0: int, r1: int) -> Coefficients:
        return Coefficients(*(None if a is None else a[r0:r1] for a in self))


def logits(p: LinearProblem, x_r: Array, c0: int, c1: int) -> Array:
    """The (softcapped) logits of samples ``x_r`` (compute dtype) and classes ``[c0, c1)``."""
    xp = p.xp
    z = xp.matmul(x_r, p.compute(p.linear_weight[c0:c1, ...]).T)
    if p.linear_bias is not None:
        z = z + p.compute(p.linear_bias[c0:c1])
    if p.softcap is not None:
        z = p.softcap * xp.tanh(z / p.softcap)
    return z


def _columns(p: LinearProblem, width: int) -> Array:
    return p.xp.arange(width, dtype=p.indices.dtype, device=xp_device(p.indices))


def _pick(p: LinearProblem, z: Array, local: Array) -> Array:
    """``z[i, local[i]]`` for each row."""
    xp = p.xp
    if hasattr(xp, "take_along_axis"):
        return xp.take_along_axis(z, local[:, None], axis=1)[:, 0]
    # Dask has no take_along_axis: select with a comparison, reduced at once.
    return xp.sum(xp.where(_columns(p, z.shape[1]) == local[:, None], z, 0.0), axis=1)


def class_weights(p: LinearProblem, c0: int, c1: int) -> Array | None:
    """The class weights of classes ``[c0, c1)``, or None without weights."""
    return None if p.weight is None else p.weight[c0:c1]


def block_stats(p: LinearProblem, z: Array, y_r: Array, c0: Any, w_c: Array | None) -> RowStats:
    """The statistics of one block of logits ``z`` (classes from ``c0``), targets ``y_r``.

    ``w_c`` holds the block's class weights (None without weights); ``c0``
    may be traced (JAX's loops).
    """
    xp = p.xp
    width = z.shape[1]
    m = xp.max(z, axis=1)
    top = xp.argmax(z, axis=1)
    e = xp.exp(z - m[:, None])
    t = xp.sum(xp.where(_columns(p, width) == top[:, None], 0.0, e), axis=1)
    local = y_r - c0
    inside = (local >= 0) & (local < width)
    zy = xp.where(inside, _pick(p, z, xp.where(inside, local, 0)), 0.0)
    zw = None
    if p.smoothing > 0:
        zw = xp.sum(z, axis=1) if w_c is None else xp.matmul(z, w_c)
    return RowStats(m, t, zy, zw)


def merge(a: RowStats, b: RowStats, xp: Any) -> RowStats:
    """The statistics of two blocks of classes together: exact, in any order."""
    m = xp.maximum(a.m, b.m)
    ea, eb = xp.exp(a.m - m), xp.exp(b.m - m)
    # One of ea, eb is exactly 1 (the overall maximum's block): the other
    # block's maximum term, exp(m_other - m), joins the sum without the 1.
    t = a.t * ea + b.t * eb + xp.where(a.m >= b.m, eb, ea)
    zw = None if a.zw is None else a.zw + b.zw
    return RowStats(m, t, a.zy + b.zy, zw)


def _row_stats(p: LinearProblem, blocks: Blocks, x_r: Array, y_r: Array) -> RowStats:
    stats = None
    for c0, c1 in blocks.class_ranges(p.n_classes):
        block = block_stats(p, logits(p, x_r, c0, c1), y_r, c0, class_weights(p, c0, c1))
        stats = block if stats is None else merge(stats, block, p.xp)
    return stats


def _weight_sum(p: LinearProblem) -> Array | float:
    return float(p.n_classes) if p.weight is None else p.xp.sum(p.weight)


def per_sample_losses(p: LinearProblem, stats: RowStats, r0: int, r1: int) -> Array:
    """The loss of samples ``[r0, r1)`` from their statistics (0 where not counted)."""
    xp = p.xp
    eps, v = p.smoothing, p.n_classes
    w_y = p.target_weights[0][r0:r1]
    lse = stats.lse(xp)
    loss = w_y * (lse - stats.zy)
    if eps > 0:
        loss = (1 - eps) * loss + (eps / v) * (_weight_sum(p) * lse - stats.zw)
    if p.z_loss > 0:
        loss = loss + p.z_loss * w_y * lse * lse
    loss = xp.where(p.counted[r0:r1], loss, 0.0)
    return loss if p.checked else xp_nan_where(p.invalid[r0:r1], loss, xp)


def _mean_factor(p: LinearProblem) -> Array | float:
    if p.reduction != "mean":
        return 1.0
    # Nothing counted: the mean is 0, so is its gradient.
    divisor = p.target_weights[1]
    empty = divisor == 0
    return p.xp.where(empty, 0.0, 1.0 / p.xp.where(empty, 1.0, divisor))


def reduce(p: LinearProblem, losses: Array) -> Array:
    """Apply the reduction to the per-sample losses."""
    xp = p.xp
    if p.reduction == "none":
        return losses
    total = xp.sum(losses)
    if p.reduction == "sum":
        return total
    divisor = p.target_weights[1]
    empty = divisor == 0
    # The mean of nothing is 0, but a NaN from an out-of-range index still shows.
    zero = xp.where(xp.isnan(total), total, 0.0)
    return xp.where(empty, zero, total / xp.where(empty, 1.0, divisor))


def multiplier(p: LinearProblem, cotangent: Array | float = 1.0) -> Array | float:
    """What the gradient of the summed loss is multiplied by: the reduction and ``cotangent``.

    ``cotangent`` is the derivative of the caller's objective with respect to
    the reduced loss: a scalar, or one value per sample for ``"none"``.
    """
    return cotangent * _mean_factor(p)


def coefficients(p: LinearProblem, lse: Array, f: Array | float, r0: int, r1: int) -> Coefficients:
    """``alpha``, ``beta``, ``gamma`` of samples ``[r0, r1)``, their ``logsumexp`` ``lse``.

    ``f`` is :func:`multiplier`'s result for all samples.
    """
    xp = p.xp
    eps, v = p.smoothing, p.n_classes
    f_r = f if isinstance(f, float) or f.ndim == 0 else f[r0:r1]
    w_y = p.target_weights[0][r0:r1] * f_r
    counted = xp.astype(p.counted[r0:r1], p.compute_dtype) * f_r
    alpha = (1 - eps) * w_y
    beta = alpha
    gamma = None
    if eps > 0:
        alpha = alpha + (eps / v) * _weight_sum(p) * counted
        gamma = (eps / v) * counted
    if p.z_loss > 0:
        alpha = alpha + (2 * p.z_loss) * w_y * lse
    if not p.checked:
        alpha = xp_nan_where(p.invalid[r0:r1], alpha, xp)
    return Coefficients(alpha, beta, gamma)


def block_gradient(
    p: LinearProblem,
    z: Array,
    lse_r: Array,
    coef: Coefficients,
    y_r: Array,
    c0: Any,
    w_c: Array | None,
) -> Array:
    """The gradient of the objective with respect to the raw logits of one block.

    Arguments as in :func:`block_stats`, with the samples' ``logsumexp`` and
    :func:`coefficients`.
    """
    xp = p.xp
    hit = _columns(p, z.shape[1]) == (y_r - c0)[:, None]
    g = xp.exp(z - lse_r[:, None]) * coef.alpha[:, None]
    g = g - xp.where(hit, coef.beta[:, None], 0.0)
    if coef.gamma is not None:
        g = g - (coef.gamma[:, None] if w_c is None else coef.gamma[:, None] * w_c)
    if p.softcap is not None:
        g = g * (1.0 - (z / p.softcap) ** 2)
    return g


class _Grads:
    """The gradients, assembled from blocks: ``d_input`` by samples, the layer's by classes."""

    def __init__(self, p: LinearProblem, blocks: Blocks) -> None:
        self.p = p
        n_blocks = len(blocks.class_ranges(p.n_classes))
        self.dx: list[Array] = []
        self.dw: list[Array | None] = [None] * n_blocks
        self.db: list[Array | None] = [None] * n_blocks
        self.dx_r: Array | None = None

    def add(self, k: int, x_r: Array, g: Array, c0: int, c1: int) -> None:
        """Block ``k`` (classes ``[c0, c1)``) of the gradient of samples ``x_r``."""
        xp = self.p.xp
        dx = xp.matmul(g, self.p.compute(self.p.linear_weight[c0:c1, ...]))
        dw = xp.matmul(g.T, x_r)
        self.dx_r = dx if self.dx_r is None else self.dx_r + dx
        self.dw[k] = dw if self.dw[k] is None else self.dw[k] + dw
        if self.p.linear_bias is not None:
            db = xp.sum(g, axis=0)
            self.db[k] = db if self.db[k] is None else self.db[k] + db

    def end_rows(self) -> None:
        self.dx.append(self.dx_r)
        self.dx_r = None

    def finish(self) -> tuple[Array, Array, Array | None]:
        p, xp = self.p, self.p.xp
        if not self.dx:  # no samples
            return zero_gradients(p)
        db = None if p.linear_bias is None else xp.concat(self.db, axis=0)
        return xp.concat(self.dx, axis=0), xp.concat(self.dw, axis=0), db


def zero_gradients(p: LinearProblem) -> tuple[Array, Array, Array | None]:
    """The gradients of an empty batch: zeros."""
    xp, dev, dt = p.xp, xp_device(p.x), p.compute_dtype
    db = None if p.linear_bias is None else xp.zeros((p.n_classes,), dtype=dt, device=dev)
    return (
        xp.zeros(tuple(p.x.shape), dtype=dt, device=dev),
        xp.zeros(tuple(p.linear_weight.shape), dtype=dt, device=dev),
        db,
    )


def _empty_losses(p: LinearProblem) -> Array:
    """Zero losses of an empty batch, connected to the inputs (autodiff gives zeros)."""
    z = logits(p, p.compute(p.x), 0, min(p.blocks.classes, p.n_classes))
    return p.xp.sum(z, axis=1) * 0.0


def loss_and_grad(
    p: LinearProblem, *, grad: bool
) -> tuple[Array, Array, tuple[Array, Array, Array | None] | None]:
    """``(per-sample losses, logsumexp, gradients or None)`` of ``p``, one pass over the samples.

    The gradients are those of the reduced loss.
    """
    xp = p.xp
    blocks = p.one_pass if grad and p.one_pass is not None else p.blocks
    classes = blocks.class_ranges(p.n_classes)
    single = len(classes) == 1
    f = multiplier(p)
    grads = _Grads(p, blocks) if grad else None
    losses, lses = [], []
    for r0, r1 in blocks.row_ranges(p.n_samples):
        x_r, y_r = p.compute(p.x[r0:r1, ...]), p.indices[r0:r1]
        z = logits(p, x_r, 0, p.n_classes) if single else None
        if single:
            stats = block_stats(p, z, y_r, 0, p.weight)
        else:
            stats = _row_stats(p, blocks, x_r, y_r)
        lse_r = stats.lse(xp)
        if grads is not None:
            coef = coefficients(p, lse_r, f, r0, r1)
            for k, (c0, c1) in enumerate(classes):
                z_k = z if single else logits(p, x_r, c0, c1)
                g = block_gradient(p, z_k, lse_r, coef, y_r, c0, class_weights(p, c0, c1))
                grads.add(k, x_r, g, c0, c1)
            grads.end_rows()
        losses.append(per_sample_losses(p, stats, r0, r1))
        lses.append(lse_r)
    if not losses:
        empty = _empty_losses(p)
        return empty, empty, None if grads is None else grads.finish()
    return xp.concat(losses), xp.concat(lses), None if grads is None else grads.finish()


def gradients(p: LinearProblem, lse: Array, f: Array | float) -> tuple[Array, Array, Array | None]:
    """The gradients from each sample's ``logsumexp`` (a backward pass), blocks computed again.

    ``f`` is :func:`multiplier`'s result: the reduction times the cotangent.
    """
    grads = _Grads(p, p.blocks)
    for r0, r1 in p.blocks.row_ranges(p.n_samples):
        x_r, y_r = p.compute(p.x[r0:r1, ...]), p.indices[r0:r1]
        lse_r = lse[r0:r1]
        coef = coefficients(p, lse_r, f, r0, r1)
        for k, (c0, c1) in enumerate(p.blocks.class_ranges(p.n_classes)):
            z = logits(p, x_r, c0, c1)
            g = block_gradient(p, z, lse_r, coef, y_r, c0, class_weights(p, c0, c1))
            grads.add(k, x_r, g, c0, c1)
        grads.end_rows()
    return grads.finish()
