"""Cross-entropy's per-sample loss, its reductions and its gradient, in the Array API only.

Every function takes a validated problem (``_problem``) and, where the math
needs them, the log-probabilities or probabilities of its logits, which the
caller computes (by a backend's fast path or the generic softmax).
"""

from __future__ import annotations

import math

from portable_softmax._compat import Array, xp_device, xp_eager, xp_nan_where
from portable_softmax._problem import CrossEntropyProblem, IndexTargets, ProbabilityTargets

__all__ = [
    "gradient",
    "gradient_scales",
    "mean_factor",
    "per_sample_losses",
    "reduce",
    "zero_losses",
]


def _gather(p: IndexTargets, a: Array) -> Array:
    """``a[..., indices, ...]`` along the class axis, without a one-hot array."""
    xp = p.xp
    if hasattr(xp, "take_along_axis"):
        picked = xp.take_along_axis(a, p.expand(p.indices), axis=p.axis)
        return xp.squeeze(picked, axis=p.axis)
    # Dask has no take_along_axis: select with a comparison, reduced at once.
    return xp.sum(xp.where(_hits(p), a, 0.0), axis=p.axis)


def _hits(p: IndexTargets) -> Array:
    """Boolean ``class == index`` along the class axis (broadcast, lazily fused)."""
    xp = p.xp
    classes = xp.arange(p.n_classes, dtype=p.indices.dtype, device=xp_device(p.indices))
    return p.expand(p.indices) == p.class_vector(classes)


def _per_class_weights(p: CrossEntropyProblem) -> Array | float:
    return 1.0 if p.weight is None else p.class_vector(p.weight)


def _mean_divisor(p: CrossEntropyProblem) -> Array | float:
    if isinstance(p, ProbabilityTargets):
        return float(math.prod(p.probs.shape) // p.n_classes) if p.n_classes else 0.0
    return p.target_weights[1]


def _live_classes(p: CrossEntropyProblem) -> Array | float:
    """How many classes take part per sample (class axis kept): C, or those ``where`` keeps."""
    if p.where is None:
        return float(p.n_classes)
    xp = p.xp
    count = xp.sum(xp.astype(p.where, p.logits.dtype, copy=False), axis=p.axis, keepdims=True)
    return xp.where(count == 0, 1.0, count)


def _uniform(p: CrossEntropyProblem) -> Array | float:
    """The smoothing distribution: 1/C on every class, or on the classes ``where`` keeps."""
    live = _live_classes(p)
    if p.where is None:
        return 1.0 / live
    return p.xp.where(p.where, 1.0 / live, 0.0)


def _smoothed_probs(p: ProbabilityTargets) -> Array:
    eps = p.smoothing
    q = p.probs if eps == 0 else p.probs * (1 - eps) + eps * _uniform(p)
    return q * _per_class_weights(p)


def reduce(p: CrossEntropyProblem, losses: Array) -> Array:
    """Apply the reduction to the per-sample losses."""
    xp = p.xp
    if p.reduction == "none":
        return losses
    total = xp.sum(losses)
    if p.reduction == "sum":
        return total
    divisor = _mean_divisor(p)
    if isinstance(divisor, float):
        return total / divisor if divisor else total * 0.0
    # Nothing counted (all ignored, empty, zero weights): the mean is 0, not NaN,
    # but a NaN from an out-of-range index on a lazy backend still shows.
    empty = divisor == 0
    zero = xp.where(xp.isnan(total), total, 0.0)
    return xp.where(empty, zero, total / xp.where(empty, 1.0, divisor))


def _nan_if_invalid(p: CrossEntropyProblem, values: Array, per_sample: bool) -> Array:
    """NaN for samples whose target is invalid (lazy backends cannot raise)."""
    if p.invalid is None or xp_eager(values):
        return values
    bad = p.invalid if per_sample else p.expand(p.invalid)
    return xp_nan_where(bad, values, p.xp)


def zero_losses(p: CrossEntropyProblem) -> Array:
    """Per-sample losses of an empty problem: zeros of the sample shape.

    Computed from the logits, so that autodiff sees a zero gradient rather
    than a constant cut off from the inputs.
    """
    return p.xp.sum(p.logits * 0.0, axis=p.axis)


def per_sample_losses(
    p: CrossEntropyProblem, logp: Array, target_logp: Array | None = None
) -> Array:
    """Per-sample loss (shape of the logits without the class axis) from ``log_softmax``.

    ``target_logp``, the log-probabilities of the class-index targets, may
    come from a backend's own gather; by default they are gathered here.
    """
    xp = p.xp
    if isinstance(p, ProbabilityTargets):
        q = _smoothed_probs(p)
        # 0 * log 0 = 0 where the log-probability is -inf and the target 0:
        # masking logp (not the product) keeps d loss / d target = -logp.
        hide = (q == 0) & (logp == -math.inf)
        loss = -xp.sum(q * xp.where(hide, 0.0, logp), axis=p.axis)
        return _nan_if_invalid(p, loss, per_sample=True)
    eps = p.smoothing
    w_y, _ = p.target_weights
    # A zero weight hides a -inf log-probability: mask logp, not the product,
    # so that no 0 * inf is formed (a NaN for autodiff and jax.debug_nans).
    picked = _gather(p, logp) if target_logp is None else target_logp
    loss = -w_y * xp.where(w_y == 0, 0.0, picked)
    if eps > 0:
        # A zero weight, or a class masked by where, hides its -inf logit.
        w = _per_class_weights(p) * _uniform(p)
        terms = w * logp if isinstance(w, float) else w * xp.where(w == 0, 0.0, logp)
        smooth = -xp.sum(terms, axis=p.axis)
        loss = (1 - eps) * loss + eps * xp.where(p.counted, smooth, 0.0)
    return _nan_if_invalid(p, loss, per_sample=True)


def mean_factor(p: CrossEntropyProblem) -> Array | float:
    """What the gradient of the summed loss is multiplied by for the reduction."""
    if p.reduction != "mean":
        return 1.0
    divisor = _mean_divisor(p)
    if isinstance(divisor, float):
        return 1.0 / divisor if divisor else 0.0
    # Nothing counted: the mean is 0, so is its gradient.
    empty = divisor == 0
    return p.xp.where(empty, 0.0, 1.0 / p.xp.where(empty, 1.0, divisor))


def gradient_scales(p: IndexTargets) -> tuple[Array, Array, Array | float]:
    """``(scale, target_part, smooth_part)`` of the class-index gradient.

    The gradient is ``s * scale - onehot(y) * target_part - counted * smooth_part``
    (per sample, broadcast along the class axis): with
    ``q = (1 - eps) w_y onehot(y) + (eps / n) w`` it is ``s * sum(q) - q``.
    """
    xp = p.xp
    eps = p.smoothing
    factor = mean_factor(p)
    w_y, _ = p.target_weights
    counted = xp.astype(p.counted, p.logits.dtype, copy=False)
    smooth_part = (eps * factor) * (_per_class_weights(p) * _uniform(p))
    if p.where is None:
        w_sum = 1.0 if p.weight is None else xp.sum(p.weight) / p.n_classes
    else:
        w_sum = xp.sum(_per_class_weights(p) * _uniform(p), axis=p.axis)
    scale = ((1 - eps) * w_y + eps * w_sum * counted) * factor
    target_part = (1 - eps) * w_y * factor
    return scale, target_part, smooth_part


def gradient(p: CrossEntropyProblem, s: Array) -> Array:
    """Gradient of the reduced loss with respect to the logits, from ``softmax``."""
    xp = p.xp
    if isinstance(p, ProbabilityTargets):
        q = _smoothed_probs(p)
        grad = (s * xp.sum(q, axis=p.axis, keepdims=True) - q) * mean_factor(p)
        return _nan_if_invalid(p, grad, per_sample=False)
    scale, target_part, smooth_part = gradient_scales(p)
    grad = s * p.expand(scale) - xp.where(_hits(p), p.expand(target_part), 0.0)
    if p.smoothing > 0:
        counted = xp.astype(p.counted, s.dtype, copy=False)
        grad = grad - p.expand(counted) * smooth_part
    return _nan_if_invalid(p, grad, per_sample=False)
