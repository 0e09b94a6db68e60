"""Cross-entropy, its closed-form gradient, and one-hot encoding."""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from portable_softmax import _native
from portable_softmax._compat import (
    Array,
    is_array_api_obj,
    xp_as_compute,
    xp_check_floating,
    xp_default_dtype,
    xp_device,
    xp_eager,
    xp_inputs,
    xp_normalize_axis,
    xp_quiet,
)
from portable_softmax._softmax import _log_softmax, _softmax

__all__ = ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad", "one_hot"]

_REDUCTIONS = ("none", "mean", "sum")


@dataclass(frozen=True)
class _Problem:
    """Validated arguments of a cross-entropy call, in the compute dtype."""

    xp: ModuleType
    logits: Array  # compute dtype (float32 for half precision)
    out_dtype: Any
    axis: int
    n_classes: int
    reduction: str
    weight: Array | None  # shape (C,), compute dtype
    smoothing: float
    # class-index targets
    indices: Array | None  # clipped into [0, C), default integer dtype
    counted: Array | None  # bool: not ignored
    invalid: Array | None  # bool: out of range (only reachable on lazy backends)
    # probability targets
    probs: Array | None

    def finish(self, a: Array) -> Array:
        """The result in the caller's dtype; NumPy's reductions give scalars, made 0-d arrays."""
        if isinstance(a, np.generic):
            a = np.asarray(a)
        return a if a.dtype == self.out_dtype else self.xp.astype(a, self.out_dtype, copy=False)

    @functools.cached_property
    def target_weights(self) -> tuple[Array, Array]:
        """Per-sample weight of the target class (0 where ignored), and their sum.

        Loss, reduction and gradient all need them: computed once per call.
        """
        xp = self.xp
        if self.weight is None:
            w_y = xp.astype(self.counted, self.logits.dtype, copy=False)
        else:
            picked = xp.take(self.weight, xp.reshape(self.indices, (-1,)), axis=0)
            w_y = xp.where(self.counted, xp.reshape(picked, self.indices.shape), 0.0)
        return w_y, xp.sum(w_y)

    def expand(self, a: Array) -> Array:
        """Insert the class axis into a per-sample array."""
        return self.xp.expand_dims(a, axis=self.axis)

    def class_vector(self, a: Array) -> Array:
        """Reshape a per-class vector to broadcast along the class axis."""
        shape = [1] * self.logits.ndim
        shape[self.axis] = self.n_classes
        return self.xp.reshape(a, tuple(shape))


def _problem(
    logits: Any,
    target: Any,
    axis: int,
    reduction: str,
    weight: Any,
    ignore_index: int | None,
    label_smoothing: float,
) -> _Problem:
    xp, logits, (target, weight) = xp_inputs(logits, target, weight)
    xp_check_floating(logits, xp, "logits")
    if logits.ndim == 0:
        msg = "logits must have at least one axis (the class axis); got a 0-d array"
        raise ValueError(msg)
    ax = xp_normalize_axis(axis, logits.ndim)
    if reduction not in _REDUCTIONS:
        msg = f"reduction must be one of {_REDUCTIONS}, got {reduction!r}"
        raise ValueError(msg)
    smoothing = float(label_smoothing)
    if not 0.0 <= smoothing <= 1.0:
        msg = f"label_smoothing must lie in [0, 1], got {label_smoothing!r}"
        raise ValueError(msg)
    n_classes = logits.shape[ax]
    sample_shape = tuple(logits.shape[:ax]) + tuple(logits.shape[ax + 1 :])
    out_dtype = logits.dtype
    x = xp_as_compute(logits, xp)

    if weight is not None:
        xp_check_floating(weight, xp, "weight")
        if tuple(weight.shape) != (n_classes,):
            msg = (
                f"weight must hold one value per class, shape ({n_classes},), "
                f"got shape {tuple(weight.shape)}"
            )
            raise ValueError(msg)
        weight = xp.astype(weight, x.dtype, copy=False)

    def shape_error() -> ValueError:
        return ValueError(
            f"target of shape {tuple(target.shape)} and dtype {target.dtype} "
            f"matches neither form: class indices are integers of shape "
            f"{sample_shape} (logits {tuple(logits.shape)} without axis {ax}), "
            f"probabilities are floats of shape {tuple(logits.shape)}"
        )

    if xp.isdtype(target.dtype, "integral"):
        if tuple(target.shape) != sample_shape:
            raise shape_error()
        idx_dtype = xp_default_dtype(xp, "integral", xp_device(x))
        y = xp.astype(target, idx_dtype, copy=False)
        in_range = (y >= 0) & (y < n_classes)
        if ignore_index is None:
            counted = xp.ones_like(in_range)
        else:
            counted = y != operator.index(ignore_index)
        invalid = counted & ~in_range
        if xp_eager(y) and bool(xp.any(invalid)):
            n_bad = int(xp.sum(xp.astype(invalid, idx_dtype, copy=False)))
            allowed = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
            msg = (
                f"target class indices must lie in [0, {n_classes}){allowed}; "
                f"got {int(y[invalid][0])} ({n_bad} out of range)"
            )
            raise ValueError(msg)
        indices = xp.where(in_range & counted, y, 0)
        return _Problem(
            xp, x, out_dtype, ax, n_classes, reduction, weight, smoothing,
            indices, counted, invalid, None,
        )  # fmt: skip
    if xp.isdtype(target.dtype, "real floating"):
        if tuple(target.shape) != tuple(logits.shape):
            raise shape_error()
        if ignore_index is not None:
            msg = (
                "ignore_index applies to class-index targets only; "
                "with probability targets give the ignored samples zero probability"
            )
            raise ValueError(msg)
        probs = xp.astype(target, x.dtype, copy=False)
        return _Problem(
            xp, x, out_dtype, ax, n_classes, reduction, weight, smoothing,
            None, None, None, probs,
        )  # fmt: skip
    msg = (
        f"target must hold integer class indices or floating probabilities, "
        f"got dtype {target.dtype}"
    )
    raise TypeError(msg)


def _gather(p: _Problem, a: Array) -> Array:
    """``a[..., indices, ...]`` along the class axis, without a one-hot array."""
    xp = p.xp
    if hasattr(xp, "take_along_axis"):
        picked = xp.take_along_axis(a, p.expand(p.indices), axis=p.axis)
        return xp.squeeze(picked, axis=p.axis)
    # Dask has no take_along_axis: select with a comparison, reduced at once.
    return xp.sum(xp.where(_hits(p), a, 0.0), axis=p.axis)


def _hits(p: _Problem) -> Array:
    """Boolean ``class == index`` along the class axis (broadcast, lazily fused)."""
    xp = p.xp
    classes = xp.arange(p.n_classes, dtype=p.indices.dtype, device=xp_device(p.indices))
    return p.expand(p.indices) == p.class_vector(classes)


def _per_class_weights(p: _Problem) -> Array | float:
    return 1.0 if p.weight is None else p.class_vector(p.weight)


def _mean_divisor(p: _Problem) -> Array | float:
    if p.probs is not None:
        return float(math.prod(p.probs.shape) // p.n_classes) if p.n_classes else 0.0
    return p.target_weights[1]


def _reduce(p: _Problem, losses: Array) -> Array:
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


def _nan_if_invalid(p: _Problem, values: Array, per_sample: bool) -> Array:
    """NaN for samples with an out-of-range index (lazy backends cannot raise)."""
    if p.invalid is None or xp_eager(values):
        return values
    bad = p.invalid if per_sample else p.expand(p.invalid)
    return p.xp.where(bad, math.nan, values)


def _losses(p: _Problem, logp: Array | None = None) -> Array:
    """Per-sample loss (shape of the logits without the class axis)."""
    xp = p.xp
    if not math.prod(p.logits.shape):
        shape = tuple(n for i, n in enumerate(p.logits.shape) if i != p.axis)
        return xp.zeros(shape, dtype=p.logits.dtype, device=xp_device(p.logits))
    if logp is None:
        logp = _log_probs(p)
    eps, n = p.smoothing, p.n_classes
    w = _per_class_weights(p)
    if p.probs is not None:
        q = p.probs if eps == 0 else p.probs * (1 - eps) + eps / n
        q = q * w
        # 0 * log 0 = 0: a zero target weight hides a -inf log-probability.
        return -xp.sum(xp.where(q == 0, 0.0, q * logp), axis=p.axis)
    w_y, _ = p.target_weights
    logp_y = _gather(p, logp)
    loss = xp.where(w_y == 0, 0.0, -w_y * logp_y)
    if eps > 0:
        smooth = -xp.sum(
            xp.where(w == 0, 0.0, w * logp) if p.weight is not None else logp, axis=p.axis
        )
        loss = (1 - eps) * loss + (eps / n) * xp.where(p.counted, smooth, 0.0)
    return _nan_if_invalid(p, loss, per_sample=True)


def _log_probs(p: _Problem) -> Array:
    fast = _native.log_softmax(p.logits, (p.axis,), None, p.xp)
    return _log_softmax(p.logits, (p.axis,), None, p.xp) if fast is None else fast


def _mean_factor(p: _Problem) -> Array | float:
    """What the gradient of the summed loss is multiplied by for the reduction."""
    if p.reduction != "mean":
        return 1.0
    divisor = _mean_divisor(p)
    if isinstance(divisor, float):
        return 1.0 / divisor if divisor else 0.0
    # Nothing counted: the mean is 0, so is its gradient.
    empty = divisor == 0
    return p.xp.where(empty, 0.0, 1.0 / p.xp.where(empty, 1.0, divisor))


def _gradient(p: _Problem, s: Array | None = None) -> Array:
    """Gradient of the reduced loss with respect to the logits (compute dtype)."""
    xp = p.xp
    if s is None:
        s = _native.softmax(p.logits, (p.axis,), None, xp)
    if s is None:
        s = _softmax(p.logits, (p.axis,), None, xp)
    eps, n = p.smoothing, p.n_classes
    w = _per_class_weights(p)
    factor = _mean_factor(p)
    if p.probs is not None:
        q = p.probs if eps == 0 else p.probs * (1 - eps) + eps / n
        q = q * w
        return (s * xp.sum(q, axis=p.axis, keepdims=True) - q) * factor
    # q = (1 - eps) w_y onehot(y) + (eps / n) w, and the gradient is s * sum(q) - q.
    w_y, _ = p.target_weights
    w_sum = float(n) if p.weight is None else xp.sum(p.weight)
    counted = xp.astype(p.counted, s.dtype, copy=False)
    scale = ((1 - eps) * w_y + (eps / n) * w_sum * counted) * factor
    target_part = (1 - eps) * w_y * factor
    if _native.writable(s):
        # The probabilities are ours: turn them into the gradient in place,
        # with no logits-sized temporary.
        s *= p.expand(scale)
        _native.add_at(s, p.expand(p.indices), p.expand(-target_part), p.axis)
        if eps > 0:
            s -= ((eps / n) * factor) * w
            s *= p.expand(counted)
        return s
    grad = s * p.expand(scale) - xp.where(_hits(p), p.expand(target_part), 0.0)
    if eps > 0:
        grad = grad - p.expand(counted) * (((eps / n) * factor) * w)
    return _nan_if_invalid(p, grad, per_sample=False)


@xp_quiet
def cross_entropy(
    logits: Array,
    target: Array,
    /,
    axis: int = -1,
    *,
    reduction: str = "mean",
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> Array:
    """Cross-entropy between ``softmax(logits)`` and a target, as in PyTorch.

    Means exactly what ``torch.nn.functional.cross_entropy`` means, with the
    class axis at ``axis`` instead of 1.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, real floating, classes along ``axis``.
    target : array_like
        Either integer class indices (any integer dtype) shaped like
        ``logits`` without ``axis``, or class probabilities shaped like
        ``logits``.
    axis : int, optional
        The class axis. Default: the last axis.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the summed weights of the counted targets
        (class indices) or by the number of samples (probabilities).
    weight : array, optional
        One rescaling weight per class.
    ignore_index : int, optional
        A class-index value whose samples contribute neither loss nor
        gradient, nor count in the mean.  Class-index targets only.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution over the classes.

    Returns
    -------
    array
        A 0-d array for ``"mean"`` and ``"sum"``; for ``"none"`` one loss per
        sample.  Same library, device and dtype as ``logits``.

    Raises
    ------
    ValueError
        A target of neither form, an unknown reduction, ``label_smoothing``
        outside ``[0, 1]``, ``weight`` not of length C, ``ignore_index`` with
        probability targets, or (NumPy, PyTorch, CuPy, array_api_strict) a
        class index outside ``[0, C)``.  JAX and Dask cannot raise from
        values: there such a sample's loss is NaN.

    Notes
    -----
    Where nothing is counted (an empty batch, every target ignored, or zero
    summed weight), ``"mean"`` gives 0 rather than NaN.  A target probability
    of 0 contributes 0 even where the log-probability is ``-inf``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> round(float(ps.cross_entropy([[2.0, 3.0, 4.0]], [1])), 4)
    1.4076
    """
    p = _problem(logits, target, axis, reduction, weight, ignore_index, label_smoothing)
    if (fast := _native.cross_entropy(p)) is not None:
        return p.finish(fast)
    if (both := _native.fused_cross_entropy(p, loss=True, grad=False)) is not None:
        return p.finish(both[0])
    return p.finish(_reduce(p, _losses(p)))


@xp_quiet
def cross_entropy_grad(
    logits: Array,
    target: Array,
    /,
    axis: int = -1,
    *,
    reduction: str = "mean",
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> Array:
    """Exact gradient of :func:`cross_entropy` with respect to ``logits``.

    With one-hot targets this is ``softmax(logits) - y``, divided by the
    mean's divisor for ``reduction="mean"``.  For ``reduction="none"`` it is
    the gradient of the summed loss.  Class-index targets never build a
    one-hot array.  Arguments as in :func:`cross_entropy`.

    Returns
    -------
    array
        Shape, library, device and dtype of ``logits``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.cross_entropy_grad([[2.0, 3.0, 4.0]], [1]).round(4)
    array([[ 0.09  , -0.7553,  0.6652]])
    """
    p = _problem(logits, target, axis, reduction, weight, ignore_index, label_smoothing)
    if (both := _native.fused_cross_entropy(p, loss=False, grad=True)) is not None:
        return p.finish(both[1])
    grad = _gradient(p) if math.prod(p.logits.shape) else p.xp.zeros_like(p.logits)
    return p.finish(grad)


@xp_quiet
def cross_entropy_with_grad(
    logits: Array,
    target: Array,
    /,
    axis: int = -1,
    *,
    reduction: str = "mean",
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Array, Array]:
    """:func:`cross_entropy` and :func:`cross_entropy_grad` from one softmax.

    What a training step needs: the loss to report and the gradient to
    descend, validated and normalised once.  Arguments as in
    :func:`cross_entropy`.

    Returns
    -------
    (array, array)
        ``(cross_entropy(...), cross_entropy_grad(...))`` with the same
        arguments.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> loss, grad = ps.cross_entropy_with_grad([[2.0, 3.0, 4.0]], [1])
    >>> round(float(loss), 4), grad.round(4)
    (1.4076, array([[ 0.09  , -0.7553,  0.6652]]))
    """
    if weight is None and ignore_index is None and not label_smoothing and reduction == "mean":
        # The training step's call: a lean path with its own light checks.
        if (fast := _native.mean_cross_entropy_with_grad(logits, target, axis)) is not None:
            return fast
    p = _problem(logits, target, axis, reduction, weight, ignore_index, label_smoothing)
    if (both := _native.fused_cross_entropy(p, loss=True, grad=True)) is not None:
        loss, grad = both
    elif not math.prod(p.logits.shape):
        loss = _reduce(p, _losses(p))
        grad = p.xp.zeros_like(p.logits)
    else:
        logp = _log_probs(p)
        loss = _reduce(p, _losses(p, logp))
        grad = _gradient(p, p.xp.exp(logp))
    return p.finish(loss), p.finish(grad)


@xp_quiet
def one_hot(labels: Array, num_classes: int, /, *, dtype: Any = None) -> Array:
    """One-hot encode integer ``labels``.

    Parameters
    ----------
    labels : array_like
        Integer class labels of any Array API library (a list is read with
        NumPy).
    num_classes : int
        Number of classes ``C`` (at least 1).
    dtype : dtype, optional
        Output dtype; default the namespace's default floating dtype.

    Returns
    -------
    array
        Shape ``labels.shape + (num_classes,)``, on the device of ``labels``.

    Raises
    ------
    ValueError
        On eager backends, for a label outside ``[0, num_classes)``.  JAX
        and Dask cannot raise from values: there such a row is all zeros,
        as in ``jax.nn.one_hot``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.one_hot([0, 2], 3)
    array([[1., 0., 0.],
           [0., 0., 1.]])
    """
    if not is_array_api_obj(labels):
        labels = np.asarray(labels)
    xp, labels, _ = xp_inputs(labels)
    if not xp.isdtype(labels.dtype, "integral"):
        msg = f"labels must have an integer dtype, got {labels.dtype}"
        raise TypeError(msg)
    n = operator.index(num_classes)
    if n < 1:
        msg = f"num_classes must be at least 1, got {num_classes}"
        raise ValueError(msg)
    if xp_eager(labels) and bool(xp.any((labels < 0) | (labels >= n))):
        msg = f"labels must lie in [0, {n}) for num_classes={n}"
        raise ValueError(msg)
    dev = xp_device(labels)
    dtype = xp_default_dtype(xp, "real floating", dev) if dtype is None else dtype
    classes = xp.arange(n, dtype=labels.dtype, device=dev)
    return xp.astype(xp.expand_dims(labels, axis=-1) == classes, dtype, copy=False)
